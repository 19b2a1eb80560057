"""Maximum-likelihood machinery shared by the CLV models.

Three pieces, used in this order by every model's ``fit``:

1. :func:`validate_summary` checks the customer summary against the model's invariants and returns
   clean float arrays, so the likelihood kernels can assume valid input.
2. :func:`compress` collapses customers with identical sufficient statistics into one weighted row, so
   the cost of a likelihood evaluation grows with the number of distinct histories, not of customers.
3. :func:`fit_maximum_likelihood` minimises the weighted negative log-likelihood over the logarithms
   of the parameters and returns a :class:`FitResult` with the covariance matrix and standard errors
   from the observed information.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize

from revopt.errors import (
    ConfigError,
    ConvergenceWarning,
    DataQualityWarning,
    FitError,
    InputError,
    NotFittedError,
    check_range,
)

__all__ = [
    "FitResult",
    "MaximumLikelihoodModel",
    "compress",
    "unique_rows",
    "fit_maximum_likelihood",
    "require",
    "validate_summary",
    "weighted_sum",
]

SOLVER = "BFGS"

# Row positions shown in an input error; enough to find the rows, short enough for one line.
_ROWS_SHOWN = 5

# Central differences of an analytic gradient: a relative step of eps**(1/3) balances the truncation
# error O(h**2) against the rounding error O(eps / h).
_HESSIAN_STEP = np.finfo(float).eps ** (1.0 / 3.0)

# BFGS stops when the largest gradient component of the mean negative log-likelihood per customer,
# with respect to the log-parameters, falls below _GTOL. On CDNOW that puts the estimates within
# about 1e-7 (relative) of the optimum. scipy's default, 1e-5, left b 0.2 % short on the CDNOW master
# file and a off by a factor 2 on UCI Online Retail, whose likelihood is flat in a and b.
# A target this tight can lie beyond double precision. The line search then finds no measurable
# decrease, and BFGS reports "precision loss" (status 2). That stop counts as converged when the
# gradient is within _GTOL_PRECISION_LIMITED (scipy's default gtol), because no point the solver
# can tell apart in floating point is better.
# BFGS rather than L-BFGS-B: with four parameters the limited memory saves nothing. On a busy
# two-core machine L-BFGS-B also spent 3 to 5 ms per iteration in its compiled core, which
# OPENBLAS_NUM_THREADS=1 removed, so OpenBLAS threading is the likely cause.
_GTOL = 1e-8
_GTOL_PRECISION_LIMITED = 1e-5
_PRECISION_LOSS = 2  # scipy BFGS status code


LogLikelihood = Callable[[np.ndarray], tuple[float, np.ndarray]]


@dataclass(frozen=True)
class FitResult:
    """The outcome of a maximum-likelihood fit.

    Attributes
    ----------
    params : dict of str to float
        Estimates in the model's natural parametrisation, in the model's parameter order.
    standard_errors : dict of str to float
        Asymptotic standard errors from the inverse observed information; NaN when the Hessian at the
        optimum is not negative definite.
    log_likelihood : float
        Weighted log-likelihood of the sample at the estimates.
    n_customers : float
        Sum of the weights (the number of customers when every weight is 1).
    n_distinct : int
        Rows the likelihood was evaluated on, after compression.
    converged : bool
        Whether the solver met its convergence criterion.
    status : str
        The solver's closing message, plus why it was accepted when the solver stopped on precision
        loss with a gradient already near zero.
    iterations, function_evaluations : int
        Solver iterations and likelihood-and-gradient evaluations.
    solver : str
        The scipy.optimize method used.
    covariance : tuple of tuple of float, or None
        Asymptotic covariance matrix of the estimates in the natural parametrisation, rows and
        columns in the order of ``params``: the inverse of the observed information (minus the
        Hessian of the log-likelihood) at the estimates. ``None`` when that Hessian is not negative
        definite, and in results built without it.
    """

    params: dict[str, float]
    standard_errors: dict[str, float]
    log_likelihood: float
    n_customers: float
    n_distinct: int
    converged: bool
    status: str
    iterations: int
    function_evaluations: int
    solver: str = SOLVER
    covariance: tuple[tuple[float, ...], ...] | None = None

    def to_dict(self) -> dict:
        """Return a JSON-ready dict; NaN standard errors become ``None`` (JSON has no NaN).

        ``covariance`` becomes a list of row lists, or stays ``None``.
        """
        result = asdict(self)
        result["standard_errors"] = {k: (None if np.isnan(v) else v) for k, v in self.standard_errors.items()}
        result["covariance"] = None if self.covariance is None else [list(row) for row in self.covariance]
        return result


# --- input validation ---------------------------------------------------------------------------


def _as_column(name: str, values, length: int | None) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name} must be numbers (missing values as NaN); {error}") from error
    if array.ndim != 1:
        raise InputError(f"{name} must be one-dimensional (one value per customer); got shape {array.shape}")
    if length is not None and array.shape[0] != length:
        raise InputError(f"{name} has {array.shape[0]} values but frequency has {length}; pass one value per customer")
    return array


def require(ok: np.ndarray, rule: str, fix: str) -> None:
    """Raise :class:`InputError` naming how many customers break ``rule`` and a few of their row positions."""
    bad = np.flatnonzero(~ok)
    if bad.size:
        positions = ", ".join(str(i) for i in bad[:_ROWS_SHOWN]) + (", ..." if bad.size > _ROWS_SHOWN else "")
        raise InputError(f"{bad.size} of {ok.size} customers break the rule '{rule}' (row positions {positions}); {fix}")


def validate_summary(
    frequency,
    recency=None,
    T=None,
    *,
    monetary_value=None,
    weights=None,
    repeat_buyers_only: bool = False,
) -> dict[str, np.ndarray]:
    """Check a customer summary against the models' invariants and return clean float arrays.

    Parameters
    ----------
    frequency : array_like, shape (n,)
        Repeat purchases per customer; whole, non-negative numbers.
    recency : array_like, shape (n,), optional
        Time from first to last purchase; 0 when frequency is 0 and at most ``T``.
    T : array_like, shape (n,), optional
        Time from first purchase to the end of the period; required with ``recency``.
    monetary_value : array_like, shape (n,), optional
        Mean spend per repeat purchase; must be finite and positive where frequency > 0 (it is not
        looked at where frequency is 0).
    weights : array_like, shape (n,), optional
        Positive number of customers each row represents. Default: 1 for every row.
    repeat_buyers_only : bool, default False
        Also require ``frequency > 0`` (spend models see only repeat buyers).

    Returns
    -------
    dict of str to numpy.ndarray
        The arrays given, as float64, under the keys ``frequency``, ``recency``, ``T``,
        ``monetary_value`` and ``weights`` (weights filled with ones when not given).

    Raises
    ------
    InputError
        If the columns differ in length, or any customer breaks a rule. The message states how many
        customers break it and shows a few of their row positions.
    """
    x = _as_column("frequency", frequency, None)
    if x.size == 0:
        raise InputError("no customers to fit or score: frequency is empty")
    optional = {"recency": recency, "T": T, "monetary_value": monetary_value, "weights": weights}
    arrays = {"frequency": x} | {k: _as_column(k, v, x.size) for k, v in optional.items() if v is not None}
    buyers = x > 0
    for name, values in arrays.items():
        # Mean spend is defined only for repeat buyers, and summaries often contain 0 or NaN for the others.
        checked = values[buyers] if name == "monetary_value" else values
        require(np.isfinite(checked), f"{name} is finite", "drop or repair missing and infinite values")
    for name in ("frequency", "recency", "T"):
        if name in arrays:
            require(arrays[name] >= 0, f"{name} >= 0", "negative values usually mean swapped or mis-mapped dates")
    require(x == np.floor(x), "frequency is a whole number", "frequency counts repeat purchases")
    if repeat_buyers_only:
        require(x > 0, "frequency > 0", "select repeat buyers (frequency > 0) before fitting a spend model")
    if "recency" in arrays:
        t_x, big_t = arrays["recency"], arrays["T"]
        require(t_x <= big_t, "recency <= T", "recency and T must be measured from the same first purchase")
        require((x > 0) | (t_x == 0), "recency is 0 when frequency is 0", "recency counts from the first to the last repeat purchase")
    if "monetary_value" in arrays:
        spend_ok = ~buyers | (arrays["monetary_value"] > 0)
        require(spend_ok, "monetary_value > 0 where frequency > 0", "drop customers with zero or negative mean spend (returns, free orders)")
    if "weights" in arrays:
        require(arrays["weights"] > 0, "weights > 0", "a weight is the number of customers a row represents")
    else:
        arrays["weights"] = np.ones_like(x)
    return arrays


def weighted_sum(values: np.ndarray, weights: np.ndarray):
    """Return ``values @ weights`` (summing over the last axis) without calling BLAS.

    A BLAS dot product over thousands of rows runs on OpenBLAS worker threads. On a busy two-core
    machine, CDNOW master fits that used ``@`` took 30 to 45 ms, against 13 ms with
    OPENBLAS_NUM_THREADS=1; busy-waiting workers are the likely cause. With multiply-and-sum the fit
    took 13 to 18 ms in both settings.
    """
    return np.sum(values * weights, axis=-1)


# --- compression --------------------------------------------------------------------------------


def unique_rows(*columns) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Return the distinct rows of equal-length columns, sorted by the first column, then the second,
    and so on, and for each input row the position of its distinct row."""
    columns = [np.asarray(column, dtype=float) for column in columns]
    order = np.lexsort(columns[::-1])  # lexsort's last key is the primary one
    ordered = [column[order] for column in columns]
    starts = np.ones(order.size, dtype=bool)
    starts[1:] = np.logical_or.reduce([column[1:] != column[:-1] for column in ordered])
    inverse = np.empty(order.size, dtype=np.intp)
    inverse[order] = np.cumsum(starts) - 1
    return tuple(column[starts] for column in ordered), inverse


def compress(*columns, weights=None) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Collapse rows with identical values in every column into one row with a count.

    Parameters
    ----------
    *columns : array_like, each shape (n,)
        Sufficient statistics, for example ``frequency, recency, T``.
    weights : array_like, shape (n,), optional
        Number of customers each input row represents. Default: 1 per row.

    Returns
    -------
    unique_columns : tuple of numpy.ndarray, each shape (m,)
        The distinct rows, sorted by the first column, then the second, and so on.
    counts : numpy.ndarray, shape (m,)
        The summed weights of the input rows that collapsed into each distinct row.

    Examples
    --------
    >>> (x, t), counts = compress([0, 1, 0], [0.0, 2.5, 0.0])
    >>> x.tolist(), t.tolist(), counts.tolist()
    ([0.0, 1.0], [0.0, 2.5], [2.0, 1.0])
    """
    unique, inverse = unique_rows(*columns)
    counts = np.bincount(inverse, weights=weights, minlength=len(unique[0]))
    return unique, counts.astype(float)


# --- the driver ---------------------------------------------------------------------------------


def _objective(log_likelihood: LogLikelihood, n_customers: float):
    """Mean negative log-likelihood and its gradient as functions of the log-parameters."""

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        params = np.exp(theta)
        value, gradient = log_likelihood(params)
        if not np.isfinite(value) or not np.all(np.isfinite(gradient)):
            # An overflow far from the optimum during a line search: report an uphill point so
            # the search backs off instead of stopping on NaN.
            return np.inf, np.zeros_like(theta)
        return -value / n_customers, -gradient * params / n_customers  # chain rule: dLL/dlog(p) = p dLL/dp

    return objective


def _hessian(log_likelihood: LogLikelihood, params: np.ndarray) -> np.ndarray:
    """Hessian of the log-likelihood in the natural parameters, by central differences of the gradient."""
    steps = _HESSIAN_STEP * params
    columns = []
    for i, step in enumerate(steps):
        shift = np.zeros_like(params)
        shift[i] = step
        columns.append((log_likelihood(params + shift)[1] - log_likelihood(params - shift)[1]) / (2.0 * step))
    hessian = np.column_stack(columns)
    return (hessian + hessian.T) / 2.0


def _covariance(hessian: np.ndarray, model: str) -> np.ndarray | None:
    """Return the inverse observed information ``(-hessian)^-1``, or None with a warning when
    ``-hessian`` is not positive definite."""
    try:
        if not np.all(np.isfinite(hessian)):
            raise np.linalg.LinAlgError("non-finite Hessian")
        factor = np.linalg.cholesky(-hessian)
    except np.linalg.LinAlgError:
        warnings.warn(DataQualityWarning(message_id="warnings.singular_hessian", model=model), stacklevel=4)
        return None
    inverse_factor = np.linalg.inv(factor)
    return inverse_factor.T @ inverse_factor  # (L L^T)^-1 = L^-T L^-1


def _standard_errors(covariance: np.ndarray | None, names: Sequence[str]) -> dict[str, float]:
    """Square roots of the diagonal of the covariance matrix, or NaN for every parameter without one."""
    if covariance is None:
        return {name: float("nan") for name in names}
    return {name: float(np.sqrt(v)) for name, v in zip(names, np.diag(covariance))}


def _converged(result) -> tuple[bool, str]:
    """Decide whether the solver's stop counts as convergence, and return that with the status text."""
    if result.success:
        return True, str(result.message)
    largest = float(np.max(np.abs(result.jac)))
    if result.status == _PRECISION_LOSS and largest <= _GTOL_PRECISION_LIMITED:
        return True, f"{result.message} Accepted: largest gradient component {largest:.1e} <= {_GTOL_PRECISION_LIMITED:g}."
    return False, str(result.message)


def _convergence_warning(result, params: dict[str, float], model: str, max_iterations: int) -> ConvergenceWarning:
    """Build the warning that names the solver, how it stopped, its last point, and what to do about it."""
    remedy = "warnings.remedy_iterations" if result.status == 1 else "warnings.remedy_flat"  # 1: BFGS iteration limit
    return ConvergenceWarning(
        message_id="warnings.not_converged", model=model, solver=SOLVER, iterations=result.nit,
        status=f"{result.status}: {result.message}",
        estimates=", ".join(f"{name}={value:.4g}" for name, value in params.items()),
        remedy=ConvergenceWarning(message_id=remedy, max_iterations=max_iterations),
    )


def fit_maximum_likelihood(
    log_likelihood: LogLikelihood,
    start: Sequence[float],
    names: Sequence[str],
    *,
    n_customers: float,
    n_distinct: int,
    model: str,
    max_iterations: int,
) -> FitResult:
    """Maximise a weighted log-likelihood over positive parameters.

    The solver works on ``log(params)`` so that every parameter stays positive without bounds, and on
    the mean per customer so that its tolerances do not depend on the sample size.

    Parameters
    ----------
    log_likelihood : callable
        ``log_likelihood(params) -> (value, gradient)``: the weighted sample log-likelihood and its
        gradient in the natural parameters, ``params`` a positive array of shape (k,).
    start : sequence of float, length k
        Positive starting values.
    names : sequence of str, length k
        Parameter names, in the order of ``params``.
    n_customers : float
        Sum of the weights.
    n_distinct : int
        Rows the likelihood is evaluated on.
    model : str
        Model name used in warnings and errors.
    max_iterations : int
        Iteration limit for the solver.

    Returns
    -------
    FitResult
        With ``covariance`` and ``standard_errors`` from the inverse observed information in the
        natural parameters, by central differences of the analytic gradient.

    Raises
    ------
    FitError
        If the likelihood is not finite at the start or at the solver's last point.

    Warns
    -----
    ConvergenceWarning
        If the solver stops without meeting its criterion; the estimates are returned as they are.
    DataQualityWarning
        If the Hessian at the optimum is not negative definite (standard errors are then NaN and
        ``covariance`` is None).
    """
    objective = _objective(log_likelihood, n_customers)
    theta0 = np.log(np.asarray(start, dtype=float))
    if not np.isfinite(objective(theta0)[0]):
        raise FitError(f"{model}: the log-likelihood is not finite at the starting values {dict(zip(names, start))}; check the input for extreme values")
    result = minimize(
        objective, theta0, jac=True, method=SOLVER, options={"maxiter": max_iterations, "gtol": _GTOL}
    )
    params = np.exp(result.x)
    value = log_likelihood(params)[0]
    if not (np.isfinite(value) and np.all(np.isfinite(params))):
        raise FitError(
            f"{model}: solver {SOLVER} ended at a non-finite point after {result.nit} iterations "
            f"(status {result.status}: {result.message}); check the input for extreme values or rescale the time unit"
        )
    converged, status = _converged(result)
    if not converged:
        warnings.warn(_convergence_warning(result, dict(zip(names, params)), model, max_iterations), stacklevel=3)
    covariance = _covariance(_hessian(log_likelihood, params), model)
    return FitResult(
        params=dict(zip(names, params.tolist())),
        standard_errors=_standard_errors(covariance, names),
        log_likelihood=float(value),
        n_customers=float(n_customers),
        n_distinct=int(n_distinct),
        converged=converged,
        status=status,
        iterations=int(result.nit),
        function_evaluations=int(result.nfev),
        covariance=None if covariance is None else tuple(tuple(row) for row in covariance.tolist()),
    )


# --- the estimator base -------------------------------------------------------------------------


class MaximumLikelihoodModel:
    """Settings, fitted state and serialisation shared by the models; ``fit`` is each model's own.

    Parameters
    ----------
    max_iterations : int, default 1000
        Iteration limit for the BFGS solver.
    """

    name: str
    param_names: tuple[str, ...]
    _fit_call: str

    def __init__(self, *, max_iterations: int = 1000) -> None:
        if int(max_iterations) != max_iterations:
            raise ConfigError(f"max_iterations must be a whole number; got {max_iterations!r}")
        self.max_iterations = int(check_range("max_iterations", max_iterations, low=1))

    def _store(self, result: FitResult) -> None:
        self.fit_result_ = result
        self.params_ = dict(result.params)
        self.standard_errors_ = dict(result.standard_errors)
        self.log_likelihood_ = result.log_likelihood

    def _params(self) -> np.ndarray:
        """Return the fitted parameters as an array in ``param_names`` order, or raise if not fitted."""
        if not hasattr(self, "params_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call {self._fit_call} first")
        return np.array([self.params_[name] for name in self.param_names])

    def to_dict(self) -> dict:
        """Return the fitted model as a JSON-ready dict (its entry in ``model.json``).

        Keys: ``name``, ``params``, ``standard_errors`` (``None`` where undefined), ``log_likelihood``,
        ``n_customers``, ``n_distinct``, ``converged``, ``status``, ``iterations``.

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        """
        self._params()
        fitted = self.fit_result_.to_dict()
        keys = ("params", "standard_errors", "log_likelihood", "n_customers", "n_distinct", "converged", "status", "iterations")
        return {"name": self.name} | {key: fitted[key] for key in keys}
