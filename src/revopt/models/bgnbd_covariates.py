"""The BG/NBD model with time-invariant covariates.

Each customer ``i`` carries a row ``z_i`` of ``k`` numeric covariates (no intercept column) that shift
the two mixing distributions of the BG/NBD (:mod:`revopt.models.bgnbd`):

=====================================================  ===========================================
customer-specific parameter                            process
=====================================================  ===========================================
``alpha_i = alpha * exp(-gamma_purchase . z_i)``       purchase rate ``lambda_i ~ Gamma(r, alpha_i)``
``a_i = a * exp(gamma_dropout . z_i)``                 dropout probability
``b_i = b * exp(gamma_dropout . z_i)``                 ``p_i ~ Beta(a_i, b_i)``
=====================================================  ===========================================

This is the parametrisation of CLVTools' static-covariate BG/NBD ([2]_, ``bgnbd_staticcov_LL_ind``
in ``src/bgnbd.cpp``), which cites Fader and Hardie's note on time-invariant covariates ([3]_). So
``r, alpha, a, b`` describe a customer with ``z = 0``. A positive purchase coefficient multiplies
the mean purchase rate ``r / alpha_i`` by ``exp(gamma_purchase . z_i)``. A dropout coefficient scales
``a_i`` and ``b_i`` together: the mean dropout probability ``a / (a + b)`` is the same for every
customer, and a positive coefficient concentrates ``p_i`` around it (its variance falls as
``a_i + b_i`` grows).

Each customer's likelihood is the BG/NBD likelihood of [1]_ (eq. 6) with ``alpha_i, a_i, b_i`` in
place of ``alpha, a, b``. Frequency ``x``, recency ``t_x`` and ``T`` are as in
:mod:`revopt.models.bgnbd`, in one time unit of the caller's choice. ``alpha`` is then in that unit,
and the coefficients are per unit of their covariate.

References
----------
.. [1] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). "Counting your customers" the easy way:
   an alternative to the Pareto/NBD model. Marketing Science 24(2), 275-284.
.. [2] CLVTools, R package, https://github.com/bachmannpatrick/CLVTools, file ``src/bgnbd.cpp`` at
   commit 0ee4ee632a43a0500bd274adbf890e14c5f8a1fc.
.. [3] Fader, P. S. and Hardie, B. G. S. (2007). Incorporating time-invariant covariates into the
   Pareto/NBD and BG/NBD models. http://www.brucehardie.com/notes/019/
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import digamma, gammaln

from revopt.errors import FitError, InputError
from revopt.models._fitting import (
    _GTOL,
    _HESSIAN_STEP,
    SOLVER,
    FitResult,
    MaximumLikelihoodModel,
    _converged,
    _convergence_warning,
    _covariance,
    _standard_errors,
    compress,
    require,
    validate_summary,
    weighted_sum,
)
from revopt.models.bgnbd import _NEAR_SINGULAR, _check_t, _expected_off_pole, _period_terms

__all__ = ["BetaGeoCovariateModel", "design_matrix"]

PARAMS = ("r", "alpha", "a", "b")
PURCHASE_PREFIX = "purchase."
DROPOUT_PREFIX = "dropout."

_MODEL = "BG/NBD with covariates"
_N_BASE = len(PARAMS)
# Dummy columns are named column + separator + level, as pandas.get_dummies names them.
_LEVEL_SEPARATOR = "_"


# --- the design matrix --------------------------------------------------------------------------


def design_matrix(frame: pd.DataFrame, columns) -> tuple[np.ndarray, list[str]]:
    """Build the covariate matrix of the model from columns of a DataFrame.

    Numeric and boolean columns are kept as they are (booleans as 0 and 1). Categorical and text
    columns are dummy-coded: one 0/1 column per level except the first, which is the reference level.
    The levels of a pandas categorical column are its declared categories in their order, so a
    subset of customers gets the same columns as the whole table. The levels of a text column are its
    distinct values in sorted order. No intercept column is added, because ``alpha``, ``a`` and ``b``
    already play that part.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per customer, in the order of the summary passed to the model. It is not modified.
    columns : sequence of str
        The covariates to use, in the order their coefficients should appear.

    Returns
    -------
    matrix : numpy.ndarray, shape (n, k)
        Float covariates, one row per row of ``frame``.
    names : list of str
        One name per column of ``matrix``: the column name for a numeric covariate, and
        ``column_level`` for a dummy (``"Channel_online"``).

    Raises
    ------
    InputError
        If a column is missing, has missing values, is neither numeric, boolean, categorical nor
        text, or has only one level.

    Examples
    --------
    >>> frame = pd.DataFrame({"age": [31, 45, 27], "channel": ["shop", "online", "shop"]})
    >>> matrix, names = design_matrix(frame, ["age", "channel"])
    >>> names
    ['age', 'channel_shop']
    >>> matrix.tolist()
    [[31.0, 1.0], [45.0, 0.0], [27.0, 1.0]]
    """
    columns = list(columns)
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise InputError(f"covariate columns {missing} are not in the table; its columns are {list(frame.columns)}")
    blocks, names = [], []
    for column in columns:
        values = frame[column]
        empty = int(values.isna().sum())
        if empty:
            raise InputError(f"covariate column {column!r} has {empty} missing values; fill or drop them before fitting")
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            blocks.append(values.to_numpy(dtype=float)[:, None])
            names.append(str(column))
            continue
        if not (isinstance(values.dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(values)
                or pd.api.types.is_string_dtype(values)):
            raise InputError(
                f"covariate column {column!r} has dtype {values.dtype}; convert it to a number, a text or a categorical column"
            )
        categorical = values if isinstance(values.dtype, pd.CategoricalDtype) else values.astype("category")
        levels = list(categorical.cat.categories)
        if len(levels) < 2:
            raise InputError(
                f"covariate column {column!r} has the single level {levels!r}; a covariate that never changes "
                "cannot be told apart from alpha, a and b, so drop it"
            )
        codes = categorical.cat.codes.to_numpy()
        blocks.append((codes[:, None] == np.arange(1, len(levels))).astype(float))
        names.extend(f"{column}{_LEVEL_SEPARATOR}{level}" for level in levels[1:])
    return np.hstack(blocks) if blocks else np.empty((len(frame), 0)), names


def _covariate_matrix(covariates, n: int | None, names) -> tuple[np.ndarray, tuple[str, ...]]:
    """Return the covariates as a float array of shape (n, k) and their names, or raise InputError.

    ``n`` is the number of customers, or None to accept any number of rows.
    """
    if names is None and isinstance(covariates, pd.DataFrame):
        names = [str(column) for column in covariates.columns]
    try:
        matrix = np.asarray(covariates, dtype=float)
    except (TypeError, ValueError) as error:
        raise InputError(
            f"covariates must be numbers; dummy-code categorical and text columns first (see design_matrix); {error}"
        ) from error
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    if matrix.ndim != 2 or (n is not None and matrix.shape[0] != n):
        rows = "n" if n is None else n
        raise InputError(f"covariates must have shape ({rows}, k), one row per customer; got shape {matrix.shape}")
    k = matrix.shape[1]
    if k == 0:
        raise InputError("covariates has no columns; without covariates use BetaGeoModel")
    names = tuple(f"z{j}" for j in range(k)) if names is None else tuple(str(name) for name in names)
    if len(names) != k:
        raise InputError(f"covariate_names has {len(names)} names but covariates has {k} columns; give one name per column")
    if len(set(names)) != k:
        raise InputError(f"covariate_names must be distinct; got {list(names)}")
    require(np.all(np.isfinite(matrix), axis=1), "covariates are finite", "drop or repair missing and infinite covariate values")
    return matrix, names


# --- the likelihood -----------------------------------------------------------------------------


def _individual(params: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Return the per-customer parameters ``(r, alpha_i, a_i, b_i)`` as an array of shape (4, n).

    ``params`` is ``(r, alpha, a, b, gamma_purchase (k), gamma_dropout (k))`` and ``z`` has shape (n, k).
    """
    r, alpha, a, b = params[:_N_BASE]
    k = z.shape[1]
    purchase = params[_N_BASE:_N_BASE + k]
    dropout = params[_N_BASE + k:]
    with np.errstate(over="ignore"):  # an overflow during a line search is reported as an infinite likelihood
        purchase_factor = np.exp(-np.sum(z * purchase, axis=1))
        dropout_factor = np.exp(np.sum(z * dropout, axis=1))
    return np.stack([np.full(z.shape[0], r), alpha * purchase_factor, a * dropout_factor, b * dropout_factor])


# Above this shape, ln Gamma(s + x) - ln Gamma(s) is evaluated by Stirling's series rather than as a
# difference of gammaln values. The difference loses about eps * s ln s: 2e-12 at s = 1e3, but 0.3
# at s = 1e14, a shape that fits with dropout coefficients at the edge of the parameter space
# reach. The first series term left out, 1 / (360 s^3), is below 3e-12 from s = 1e3 on.
_STIRLING_FROM = 1e3


def _log_pochhammer(s: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``ln Gamma(s + x) - ln Gamma(s)`` and its derivative in ``s``, accurate for large ``s``.

    For large ``s`` Stirling's series gives
    ``(s - 1/2) ln(1 + x / s) + x ln(s + x) - x - x / (12 s (s + x))``, with derivative
    ``ln(1 + x / s) + x / (2 s (s + x)) + x (2 s + x) / (12 s^2 (s + x)^2)``
    (Abramowitz and Stegun 1964, 6.1.41 and 6.3.18), in which no two large numbers are subtracted.
    """
    large = s > _STIRLING_FROM
    small_s = np.where(large, 1.0, s)  # keeps the unused branch of np.where finite
    large_s = np.where(large, s, _STIRLING_FROM)
    growth = np.log1p(x / large_s)
    series = (large_s - 0.5) * growth + x * np.log(large_s + x) - x - x / (12.0 * large_s * (large_s + x))
    series_slope = (growth + x / (2.0 * large_s * (large_s + x))
                    + x * (2.0 * large_s + x) / (12.0 * large_s**2 * (large_s + x) ** 2))
    value = np.where(large, series, gammaln(small_s + x) - gammaln(small_s))
    slope = np.where(large, series_slope, digamma(small_s + x) - digamma(small_s))
    return value, slope


def _x_terms(individual: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ln A1 + ln A2 of the BG/NBD likelihood and their gradient in ``(r, alpha_i, a_i, b_i)``.

    ``A1 = Gamma(r + x) alpha^r / Gamma(r)`` and ``A2 = Gamma(a + b) Gamma(b + x) / (Gamma(b) Gamma(a + b + x))``
    as in :func:`revopt.models.bgnbd._x_terms`, which forms ``ln A2`` from four gammaln values.
    Dropout coefficients can drive ``a_i + b_i`` of some customers to 1e10 and beyond, where those
    values cancel to noise that the solver would climb. Here ``ln A2`` is
    ``ln (b)_x - ln (a + b)_x`` with log Pochhammer symbols from :func:`_log_pochhammer`.
    """
    r, alpha, a, b = individual

    log_a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    rise_b, slope_b = _log_pochhammer(b, x)
    rise_ab, slope_ab = _log_pochhammer(a + b, x)

    d_r = digamma(r + x) - digamma(r) + np.log(alpha)
    d_alpha = r / alpha
    d_a = -slope_ab
    d_b = slope_b - slope_ab
    return log_a1 + rise_b - rise_ab, np.stack([d_r, d_alpha, d_a, d_b])


def _chain(gradient: np.ndarray, individual: np.ndarray, z: np.ndarray, weights: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Turn per-customer gradients in ``(r, alpha_i, a_i, b_i)`` into the gradient in the model's parameters.

    With ``alpha_i = alpha exp(-gamma_purchase . z_i)``, ``d alpha_i / d alpha = alpha_i / alpha`` and
    ``d alpha_i / d gamma_purchase = -alpha_i z_i``. Likewise ``d a_i / d a = a_i / a``,
    ``d b_i / d b = b_i / b`` and ``d (a_i, b_i) / d gamma_dropout = (a_i, b_i) z_i``.
    """
    _, alpha, a, b = params[:_N_BASE]
    d_r, d_alpha_i, d_a_i, d_b_i = gradient * weights
    _, alpha_i, a_i, b_i = individual

    purchase_term = d_alpha_i * alpha_i
    a_term = d_a_i * a_i
    b_term = d_b_i * b_i
    base = [np.sum(d_r), np.sum(purchase_term) / alpha, np.sum(a_term) / a, np.sum(b_term) / b]
    d_purchase = -np.sum(z * purchase_term[:, None], axis=0)
    d_dropout = np.sum(z * (a_term + b_term)[:, None], axis=0)
    return np.concatenate([base, d_purchase, d_dropout])


class _Likelihood:
    """Weighted log-likelihood of the model on compressed (z, x, t_x, T) rows.

    Rows are sorted by z first and x next, so each distinct (z, x) is one run of rows. The terms of
    the likelihood that depend only on x and the customer's parameters (gammaln, digamma) are
    evaluated once per run.
    """

    def __init__(self, x, t_x, T, z, weights) -> None:
        k = z.shape[1]
        columns, self.w = compress(*z.T, x, t_x, T, weights=weights)
        self.z = np.column_stack(columns[:k])
        self.x, self.t_x, self.T = columns[k:]
        keys = np.column_stack([self.z, self.x])
        starts = np.flatnonzero(np.concatenate([[True], np.any(keys[1:] != keys[:-1], axis=1)]))
        self.run_z = self.z[starts]
        self.run_x = self.x[starts]
        self.w_by_run = np.add.reduceat(self.w, starts)

    def __call__(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        run_individual = _individual(params, self.run_z)
        x_ll, x_grad = _x_terms(run_individual, self.run_x)
        individual = _individual(params, self.z)
        period_ll, period_grad, _ = _period_terms(individual, self.x, self.t_x, self.T)

        value = weighted_sum(x_ll, self.w_by_run) + weighted_sum(period_ll, self.w)
        gradient = (_chain(x_grad, run_individual, self.run_z, self.w_by_run, params)
                    + _chain(period_grad, individual, self.z, self.w, params))
        return float(value), gradient


# --- fitting ------------------------------------------------------------------------------------


class _WorkingParameters:
    """The coordinates the solver works in, and their linear map to the model's parameters.

    The solver works in ``theta = (ln r, ln alpha~, ln a~, ln b~, gamma_purchase~, gamma_dropout~)``: the
    logarithms keep r, alpha, a, b positive without bounds, as in the models without covariates, and
    ``~`` marks the parameters of the same model on covariates centred and scaled to unit standard
    deviation. In those coordinates the scale of a coefficient does not depend on the unit of its
    covariate, and centring decorrelates the coefficients from alpha, a and b, so BFGS's first steps,
    which treat all coordinates alike, suit every direction. Substituting ``z~ = (z - m) / s`` into the model gives back, exactly,
    ``gamma = gamma~ / s``, ``ln alpha = ln alpha~ + gamma_purchase . m`` and
    ``ln a = ln a~ - gamma_dropout . m`` (the same for b).
    """

    def __init__(self, z: np.ndarray, weights: np.ndarray) -> None:
        total = np.sum(weights)
        self.mean = np.sum(z * weights[:, None], axis=0) / total
        self.scale = np.sqrt(np.sum((z - self.mean) ** 2 * weights[:, None], axis=0) / total)
        k = z.shape[1]
        purchase = slice(_N_BASE, _N_BASE + k)
        dropout = slice(_N_BASE + k, _N_BASE + 2 * k)
        # u = (ln r, ln alpha, ln a, ln b, gamma_purchase, gamma_dropout) = transform @ theta
        transform = np.eye(_N_BASE + 2 * k)
        transform[purchase, purchase] = np.diag(1.0 / self.scale)
        transform[dropout, dropout] = np.diag(1.0 / self.scale)
        transform[1, purchase] = self.mean / self.scale
        transform[2, dropout] = -self.mean / self.scale
        transform[3, dropout] = -self.mean / self.scale
        self.transform = transform

    def to_params(self, theta: np.ndarray) -> np.ndarray:
        """Map solver coordinates to the model's parameters ``(r, alpha, a, b, gamma_purchase, gamma_dropout)``."""
        u = self.transform @ theta
        return np.concatenate([np.exp(u[:_N_BASE]), u[_N_BASE:]])

    def from_params(self, params: np.ndarray) -> np.ndarray:
        """Map the model's parameters to solver coordinates."""
        u = np.concatenate([np.log(params[:_N_BASE]), params[_N_BASE:]])
        return np.linalg.solve(self.transform, u)

    def gradient(self, params: np.ndarray, gradient: np.ndarray) -> np.ndarray:
        """Map a gradient in the model's parameters to solver coordinates (chain rule through u)."""
        in_u = np.concatenate([gradient[:_N_BASE] * params[:_N_BASE], gradient[_N_BASE:]])  # d/d ln p = p d/dp
        return self.transform.T @ in_u

    def hessian_steps(self, params: np.ndarray) -> np.ndarray:
        """Central-difference steps in the model's parameters: ``_HESSIAN_STEP`` times r, alpha, a and
        b, and ``_HESSIAN_STEP / s_k`` for the coefficients of covariate k (1 / s_k is their scale)."""
        return _HESSIAN_STEP * np.concatenate([params[:_N_BASE], 1.0 / self.scale, 1.0 / self.scale])


def _hessian(likelihood: _Likelihood, params: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Hessian of the log-likelihood in the model's parameters, by central differences of the gradient."""
    columns = []
    for i, step in enumerate(steps):
        shift = np.zeros_like(params)
        shift[i] = step
        columns.append((likelihood(params + shift)[1] - likelihood(params - shift)[1]) / (2.0 * step))
    hessian = np.column_stack(columns)
    return (hessian + hessian.T) / 2.0


def _maximise(
    likelihood: _Likelihood,
    working: _WorkingParameters,
    start: np.ndarray,
    names: tuple[str, ...],
    *,
    n_customers: float,
    max_iterations: int,
    model: str = _MODEL,
) -> FitResult:
    """Maximise the log-likelihood by BFGS in the working coordinates and return a :class:`FitResult`.

    The same solver, tolerance, convergence rule, warnings and standard errors as
    :func:`revopt.models._fitting.fit_maximum_likelihood`, which works on the logarithms of positive
    parameters only and so cannot hold a coefficient that may be negative. ``likelihood`` and
    ``working`` may belong to any covariate model (the Pareto/NBD one uses this loop too); ``model``
    names it in errors and warnings.
    """

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        params = working.to_params(theta)
        value, gradient = likelihood(params)
        if not (np.isfinite(value) and np.all(np.isfinite(gradient))):
            # An overflow far from the optimum during a line search: report an uphill point so the
            # search backs off instead of stopping on NaN.
            return np.inf, np.zeros_like(theta)
        return -value / n_customers, -working.gradient(params, gradient) / n_customers

    theta0 = working.from_params(start)
    if not np.isfinite(objective(theta0)[0]):
        raise FitError(f"{model}: the log-likelihood is not finite at the starting values "
                       f"{dict(zip(names, start.tolist()))}; check the input for extreme values")
    result = minimize(objective, theta0, jac=True, method=SOLVER, options={"maxiter": max_iterations, "gtol": _GTOL})
    params = working.to_params(result.x)
    value = likelihood(params)[0]
    if not (np.isfinite(value) and np.all(np.isfinite(params))):
        raise FitError(
            f"{model}: solver {SOLVER} ended at a non-finite point after {result.nit} iterations "
            f"(status {result.status}: {result.message}); check the covariates for extreme values or rescale them"
        )
    converged, status = _converged(result)
    if not converged:
        warnings.warn(_convergence_warning(result, dict(zip(names, params)), model, max_iterations), stacklevel=3)
    covariance = _covariance(_hessian(likelihood, params, working.hessian_steps(params)), model)
    return FitResult(
        params=dict(zip(names, params.tolist())),
        standard_errors=_standard_errors(covariance, names),
        log_likelihood=float(value),
        n_customers=float(n_customers),
        n_distinct=int(likelihood.x.size),
        converged=converged,
        status=status,
        iterations=int(result.nit),
        function_evaluations=int(result.nfev),
        covariance=None if covariance is None else tuple(tuple(row) for row in covariance.tolist()),
    )


def _check_identified(z: np.ndarray, names: tuple[str, ...]) -> None:
    """Raise InputError for a constant covariate or linearly dependent covariates.

    Either makes the likelihood flat along some direction of the coefficients, so the estimates
    would not be unique.
    """
    constant = [name for name, spread in zip(names, np.ptp(z, axis=0)) if spread == 0]
    if constant:
        raise InputError(
            f"covariates {constant} are constant (one value for every customer); a constant covariate cannot be "
            "told apart from alpha, a and b, so drop it"
        )
    distinct = np.unique(z, axis=0)
    centred = distinct - distinct.mean(axis=0)
    rank = np.linalg.matrix_rank(centred / np.max(np.abs(centred), axis=0))
    if rank < z.shape[1]:
        raise InputError(
            f"the covariates {list(names)} are linearly dependent (rank {rank} of {z.shape[1]}, after removing "
            "their means); drop one of each dependent set, for example one dummy of every categorical covariate"
        )


def _expected_per_customer(t, r, alpha, a, b):
    """Compute E[X(t)] of eq. 9 of Fader, Hardie and Lee (2005) with per-customer ``alpha, a, b``.

    :func:`revopt.models.bgnbd._expected` steps across the removable singularities at ``a = 1`` and
    ``a + b = 1`` for a single ``a``. Here ``a`` is an array, so the band around ``a = 1`` is
    interpolated customer by customer (:func:`_expected_across_a_one`).

    Dropout coefficients can also drive ``a + b`` of some customers towards 0. There the closed form
    loses about eps / (a + b) (measured: 8e-12 at 1e-5, 5e-5 at 1e-12), and below eps the third
    parameter of its 2F1 rounds to the pole at -1. As ``a + b -> 0`` with ``m = a / (a + b)`` fixed, ``p ~ Beta(a, b)``
    tends to p = 1 with probability m and p = 0 otherwise, so E[X(t)] tends to
    ``(1 - m) r t / alpha + m (1 - (1 + t / alpha)^-r)``. Below ``a + b = _NEAR_SINGULAR`` the value is
    interpolated linearly between that limit and the closed form at the band edge. The error is of
    order ``_NEAR_SINGULAR**2`` (below 1e-11 in the tests' quadrature comparison).
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    shape = a + b
    tiny = shape < _NEAR_SINGULAR
    if not np.any(tiny):
        return _expected_across_a_one(t, r, alpha, a, b)
    share = a / shape
    edge = _expected_across_a_one(
        t, r, alpha, np.where(tiny, share * _NEAR_SINGULAR, a), np.where(tiny, (1.0 - share) * _NEAR_SINGULAR, b)
    )
    limit = (1.0 - share) * r * t / alpha - share * np.expm1(-r * np.log1p(t / alpha))
    return np.where(tiny, limit + shape / _NEAR_SINGULAR * (edge - limit), edge)


def _expected_across_a_one(t, r, alpha, a, b):
    """:func:`revopt.models.bgnbd._expected_off_pole` with the band of half-width ``_NEAR_SINGULAR``
    around ``a = 1`` interpolated linearly, customer by customer."""
    near = np.abs(a - 1.0) < _NEAR_SINGULAR
    if not np.any(near):
        return _expected_off_pole(t, r, alpha, a, b)
    low = _expected_off_pole(t, r, alpha, np.where(near, 1.0 - _NEAR_SINGULAR, a), b)
    high = _expected_off_pole(t, r, alpha, np.where(near, 1.0 + _NEAR_SINGULAR, a), b)
    return np.where(near, low + (a - 1.0 + _NEAR_SINGULAR) / (2.0 * _NEAR_SINGULAR) * (high - low), low)


# --- the estimator ------------------------------------------------------------------------------


class BetaGeoCovariateModel(MaximumLikelihoodModel):
    """BG/NBD model with time-invariant covariates, fitted by maximum likelihood.

    Parameters
    ----------
    max_iterations : int, default 1000
        Iteration limit for the BFGS solver.

    Attributes
    ----------
    params_ : dict of str to float
        ``r``, ``alpha`` (in the time unit of the data), ``a``, ``b`` for a customer whose covariates
        are all 0, then ``purchase.<name>`` for each covariate, then ``dropout.<name>`` for each.
    standard_errors_ : dict of str to float
        Asymptotic standard errors (NaN if the information matrix is singular).
    log_likelihood_ : float
        Sample log-likelihood at the estimates.
    covariate_names_ : tuple of str
        The covariate names, in column order.
    fit_result_ : FitResult
        Everything the solver reported.

    Notes
    -----
    The maximum can lie on the edge of the parameter space, with dropout coefficients that grow
    without bound while the likelihood levels off. That happens when groups of customers want
    dropout distributions of different means, which this parametrisation cannot give them. The fit
    then stops where the likelihood is flat, the Hessian is singular or nearly so, and a
    DataQualityWarning reports NaN standard errors. CLVTools' apparel data with a 40-week calibration
    period is such a case.

    References
    ----------
    .. [1] CLVTools, ``src/bgnbd.cpp``, for the parametrisation;
       Fader, Hardie and Lee (2005), Marketing Science 24(2), for the likelihood.

    Examples
    --------
    >>> model = BetaGeoCovariateModel().fit(
    ...     frequency=[9, 1, 2, 1, 1, 8, 3, 0, 0, 2, 1, 0, 1, 2, 0, 1],
    ...     recency=[36, 17, 13, 1, 8, 27, 34, 0, 0, 29, 3, 0, 23, 24, 0, 3],
    ...     T=[45, 35, 40, 36, 28, 44, 50, 48, 73, 31, 58, 44, 27, 66, 48, 77],
    ...     covariates=[0, 0, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0],
    ...     covariate_names=["member"],
    ... )
    >>> {name: round(value, 2) for name, value in model.params_.items()}
    {'r': 0.76, 'alpha': 9.62, 'a': 0.37, 'b': 0.63, 'purchase.member': 0.53, 'dropout.member': 1.59}

    The same history, without and with membership:

    >>> model.probability_alive([2, 2], [13, 13], [40, 40], [[0], [1]]).round(3)
    array([0.334, 0.16 ])
    """

    name = "bg_nbd_covariates"
    param_names = PARAMS
    _fit_call = "fit(frequency, recency, T, covariates)"

    # --- fitting ------------------------------------------------------------------------------

    def fit(self, frequency, recency, T, covariates, *, weights=None, covariate_names=None) -> BetaGeoCovariateModel:
        """Estimate r, alpha, a, b and the coefficients by maximum likelihood.

        Parameters
        ----------
        frequency : array_like, shape (n,)
            Repeat purchases ``x``.
        recency : array_like, shape (n,)
            ``t_x``, time from first to last purchase.
        T : array_like, shape (n,)
            Time from first purchase to the end of the period, in the unit of ``recency``.
        covariates : array_like or pandas.DataFrame, shape (n, k) or (n,)
            Numeric covariates, one row per customer and no intercept column. Dummy-code categorical
            covariates first, for example with :func:`design_matrix`. A one-dimensional array is one
            covariate.
        weights : array_like, shape (n,), optional
            Number of customers each row represents (for pre-aggregated data). Default: 1 per row.
        covariate_names : sequence of str, length k, optional
            Names used in the parameter names. Default: the DataFrame's column names, else
            ``z0, z1, ...``.

        Returns
        -------
        BetaGeoCovariateModel
            ``self``, fitted.

        Raises
        ------
        InputError
            If a customer breaks an invariant (see :func:`revopt.models._fitting.validate_summary`), the
            covariates do not have one finite row per customer, or a covariate is constant or
            linearly dependent on the others.
        FitError
            If the likelihood cannot be evaluated at the start or end of the search.

        Warns
        -----
        ConvergenceWarning, DataQualityWarning
            As :func:`revopt.models._fitting.fit_maximum_likelihood` warns.
        """
        data = validate_summary(frequency, recency, T, weights=weights)
        z, names = _covariate_matrix(covariates, data["frequency"].size, covariate_names)
        _check_identified(z, names)
        working = _WorkingParameters(z, data["weights"])
        likelihood = _Likelihood(data["frequency"], data["recency"], data["T"], z, data["weights"])

        n_customers = float(data["weights"].sum())
        k = len(names)
        # As in BetaGeoModel, alpha starts at the mean T, so the search path is the same in any time
        # unit. Every coefficient starts at 0, which is the model without covariates.
        start = np.concatenate([[1.0, weighted_sum(data["T"], data["weights"]) / n_customers, 1.0, 1.0], np.zeros(2 * k)])
        param_names = PARAMS + tuple(PURCHASE_PREFIX + name for name in names) + tuple(DROPOUT_PREFIX + name for name in names)
        result = _maximise(likelihood, working, start, param_names, n_customers=n_customers, max_iterations=self.max_iterations)

        self.covariate_names_ = names
        self.param_names = param_names
        self._store(result)
        return self

    def _customers(self, frequency, recency, T, covariates) -> tuple[np.ndarray, ...]:
        """Validate a summary and its covariates against the fitted model; return x, t_x, T and the
        per-customer parameters ``(r, alpha_i, a_i, b_i)``."""
        params = self._params()
        data = validate_summary(frequency, recency, T)
        z = self._covariates(covariates, data["frequency"].size)
        return data["frequency"], data["recency"], data["T"], _individual(params, z)

    def _covariates(self, covariates, n: int | None) -> np.ndarray:
        """Return the covariates as an (n, k) array with the fitted model's columns, or raise InputError.

        ``n`` is the number of customers, or None to accept any number of rows.
        """
        z, names = _covariate_matrix(covariates, n, None)
        expected = self.covariate_names_
        if z.shape[1] != len(expected):
            raise InputError(
                f"covariates has {z.shape[1]} columns but the model was fitted on {len(expected)} "
                f"({', '.join(expected)}); pass the same columns in the same order"
            )
        if isinstance(covariates, pd.DataFrame) and names != expected:
            raise InputError(
                f"covariates has the columns {list(names)} but the model was fitted on {list(expected)}; "
                "pass the same columns in the same order"
            )
        return z

    # --- per-customer quantities ----------------------------------------------------------------

    def log_likelihood(self, frequency, recency, T, covariates) -> np.ndarray:
        """Return the log-likelihood of each customer's history at the fitted parameters.

        Eq. 6 of Fader, Hardie and Lee (2005) with the customer's ``alpha_i, a_i, b_i``.

        Parameters
        ----------
        frequency, recency, T : array_like, shape (n,)
            As in :meth:`fit`.
        covariates : array_like, shape (n, k)
            The covariates of the same customers, columns as in :meth:`fit`.

        Returns
        -------
        numpy.ndarray, shape (n,)
        """
        x, t_x, big_t, individual = self._customers(frequency, recency, T, covariates)
        return _x_terms(individual, x)[0] + _period_terms(individual, x, t_x, big_t)[0]

    def probability_alive(self, frequency, recency, T, covariates) -> np.ndarray:
        """Return the probability that each customer is still active at the end of the period.

        The BG/NBD's P(alive) (Fader, Hardie and Lee 2008, http://brucehardie.com/notes/021/) with the
        customer's ``alpha_i, a_i, b_i``:
        ``1 / (1 + delta(x > 0) a_i / (b_i + x - 1) ((alpha_i + T) / (alpha_i + t_x))^(r + x))``.
        Customers with no repeat purchase are alive with probability 1 under this model.

        Parameters
        ----------
        frequency, recency, T : array_like, shape (n,)
            As in :meth:`fit`.
        covariates : array_like, shape (n, k)
            The covariates of the same customers, columns as in :meth:`fit`.

        Returns
        -------
        numpy.ndarray, shape (n,)
            Values in [0, 1].
        """
        x, t_x, big_t, individual = self._customers(frequency, recency, T, covariates)
        return _period_terms(individual, x, t_x, big_t)[2]

    def expected_purchases(self, t, frequency, recency, T, covariates) -> np.ndarray:
        """Return the expected purchases in (T, T + t] given each customer's history.

        Eq. 10 of Fader, Hardie and Lee (2005) with the customer's ``alpha_i, a_i, b_i``: P(alive)
        times eq. 9 at the posterior parameters ``r + x``, ``alpha_i + T``, ``a_i``, ``b_i + x``.

        Parameters
        ----------
        t : float or array_like
            Length of the forecast period, in the time unit of the data; non-negative. Broadcast
            against the customers, so ``t[:, None]`` gives one row per period length.
        frequency, recency, T : array_like, shape (n,)
            As in :meth:`fit`.
        covariates : array_like, shape (n, k)
            The covariates of the same customers, columns as in :meth:`fit`.

        Returns
        -------
        numpy.ndarray
            Shape of ``t`` broadcast against (n,).
        """
        t = _check_t(t)
        x, t_x, big_t, individual = self._customers(frequency, recency, T, covariates)
        r, alpha_i, a_i, b_i = individual
        alive = _period_terms(individual, x, t_x, big_t)[2]
        return alive * _expected_per_customer(t, r + x, alpha_i + big_t, a_i, b_i + x)

    def expected_purchases_new_customer(self, t, covariates) -> np.ndarray:
        """Return the expected purchases in (0, t] of customers just acquired, E[X(t)].

        Eq. 9 of Fader, Hardie and Lee (2005) with each customer's ``alpha_i, a_i, b_i``.

        Parameters
        ----------
        t : float or array_like
            Length of the period, in the time unit of the data; non-negative. Broadcast against the
            customers, as in :meth:`expected_purchases`.
        covariates : array_like, shape (n, k)
            The covariates of the new customers, columns as in :meth:`fit`.

        Returns
        -------
        numpy.ndarray
            Shape of ``t`` broadcast against (n,).
        """
        t = _check_t(t)
        params = self._params()
        z = self._covariates(covariates, None)
        r, alpha_i, a_i, b_i = _individual(params, z)
        return _expected_per_customer(t, r, alpha_i, a_i, b_i)

    def to_dict(self) -> dict:
        """Return the fitted model as a JSON-ready dict.

        The keys of :meth:`MaximumLikelihoodModel.to_dict`, plus ``covariates``: the covariate names
        in column order.

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        """
        return super().to_dict() | {"covariates": list(self.covariate_names_)}
