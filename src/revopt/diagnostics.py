"""Holdout diagnostics, parameter uncertainty and time to the next purchase for fitted CLV models.

A purchase model here is any fitted object with ``expected_purchases(t, frequency, recency, T)``,
``probability_alive(frequency, recency, T)``, ``expected_purchases_new_customer(t)``, ``params_``
and ``fit_result_`` (a :class:`~revopt.models.FitResult`), such as
:class:`~revopt.models.BetaGeoModel`. Functions take numpy arrays (one value per customer) and
return plain dicts and DataFrames.

- Calibration and holdout fit: :func:`conditional_expectations`, :func:`repeat_purchase_histogram`,
  :func:`holdout_errors`, :func:`ranking_quality`.
- Choosing between models: :func:`model_comparison`.
- Parameter uncertainty: :func:`parameter_draws`, :func:`prediction_interval`, :func:`with_params`.
- When a customer buys next: :func:`next_purchase_time`.

References
----------
.. [1] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). "Counting your customers" the easy way:
   an alternative to the Pareto/NBD model. Marketing Science 24(2), 275-284.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.special import ndtri

from revopt.errors import ConfigError, DataQualityWarning, FitError, InputError, NotFittedError, check_range
from revopt.models._fitting import require, unique_rows, validate_summary, weighted_sum
from revopt.models.pareto_nbd import _log_hyp2f1_cf

__all__ = [
    "conditional_expectations",
    "delta_interval",
    "holdout_errors",
    "model_comparison",
    "next_purchase_time",
    "parameter_draws",
    "prediction_interval",
    "ranking_quality",
    "repeat_purchase_histogram",
    "with_params",
]

# Share of customers, ranked by prediction, whose actual value ranking_quality reports as captured.
TOP_SHARE = 0.1

# Models whose customers drop out only right after a purchase, so a customer alive at T buys again
# for certain and next_purchase_time's closed form holds: the BG/NBD, and the MBG/NBD, which adds a
# dropout chance at the first purchase. Pareto/NBD customers can drop out before their next
# purchase, so next_purchase_time handles them separately.
_DROPOUT_AT_PURCHASE = frozenset({"bg_nbd", "mbg_nbd"})
_NEXT_PURCHASE_MODELS = _DROPOUT_AT_PURCHASE | {"pareto_nbd"}

# next_purchase_time inverts the Pareto/NBD purchase probability by bisection on log(t), from a
# bracket [t, 2 t]. After 64 halvings the bracket is narrower than double precision can resolve.
_BISECTION_STEPS = 64
# The bracket's upper end is doubled at most this many times, which reaches any finite double.
_MAX_DOUBLINGS = 1100


# --- input checks -------------------------------------------------------------------------------


def _values(name: str, values, length: int | None = None) -> np.ndarray:
    """Return ``values`` as a finite one-dimensional float array, of ``length`` values when given."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name} must be numbers; {error}") from error
    if array.ndim != 1:
        raise InputError(f"{name} must be one-dimensional (one value per customer); got shape {array.shape}")
    if length is not None and array.size != length:
        raise InputError(f"{name} has {array.size} values but the customers number {length}; pass one value per customer")
    if array.size == 0:
        raise InputError(f"{name} is empty; pass one value per customer")
    require(np.isfinite(array), f"{name} is finite", "drop or repair missing and infinite values")
    return array


def _whole_number(name: str, value, *, low: int) -> int:
    if not float(value).is_integer():
        raise ConfigError(f"{name} must be a whole number; got {value!r}")
    return int(check_range(name, value, low=low))


def _require_method(model, method: str, purpose: str) -> None:
    if not callable(getattr(model, method, None)):
        raise InputError(f"{type(model).__name__} has no {method}() method, so {purpose} is not available for this model")


def _bucket_labels(top: int) -> list[str]:
    """Labels ``0, 1, ..., top - 1, top+`` of counts grouped with everything from ``top`` up in one bucket."""
    return [str(count) for count in range(top)] + [f"{top}+"]


# --- calibration and holdout fit ----------------------------------------------------------------


def conditional_expectations(
    model, frequency, recency, T, holdout_purchases, holdout_length, *, max_frequency: int = 7
) -> pd.DataFrame:
    """Compare mean actual with mean predicted holdout purchases, grouped by calibration frequency.

    This is the conditional-expectations check of Fader, Hardie and Lee ([1]_): customers
    are grouped by their repeat purchases in the calibration period, 0 to ``max_frequency - 1`` and
    ``max_frequency`` or more. Within each group the mean of the purchases they actually made in
    the holdout period is set beside the mean of the model's conditional expectation,
    ``expected_purchases(holdout_length, frequency, recency, T)``.

    Parameters
    ----------
    model : purchase model
        A fitted model with ``expected_purchases(t, frequency, recency, T)``.
    frequency, recency, T : array_like, shape (n,)
        Calibration-period summaries, in the model's time unit.
    holdout_purchases : array_like, shape (n,)
        Purchases each customer made in the holdout period (distinct purchase days, counted the way
        ``frequency`` was counted); finite and non-negative.
    holdout_length : float or array_like, shape (n,)
        Length of the holdout period, in the model's time unit; non-negative. One number when every
        customer was observed over the same holdout period.
    max_frequency : int, default 7
        First frequency pooled into the last group; at least 1.

    Returns
    -------
    pandas.DataFrame
        One row per group, in order, with columns ``frequency`` (labels ``"0"``, ...,
        ``"7+"`` for the default ``max_frequency``), ``customers``, ``actual`` and ``predicted`` (means per customer). The means are
        NaN in a group without customers.

    Raises
    ------
    InputError
        If a customer breaks the summary invariants, or the holdout columns differ in length or
        hold negative or missing values.
    ConfigError
        If ``max_frequency`` is not a whole number >= 1.

    References
    ----------
    .. [1] Fader, Hardie and Lee (2005), Marketing Science 24(2).
    """
    top = _whole_number("max_frequency", max_frequency, low=1)
    data = validate_summary(frequency, recency, T)
    x = data["frequency"]
    actual = _values("holdout_purchases", holdout_purchases, x.size)
    require(actual >= 0, "holdout_purchases >= 0", "holdout purchases are counts")
    lengths = np.asarray(holdout_length, dtype=float)
    if lengths.ndim > 1 or lengths.size not in (1, x.size):
        raise InputError(f"holdout_length has shape {lengths.shape}; pass one number, or one value per customer ({x.size})")
    lengths = np.broadcast_to(lengths, x.shape)
    require(np.isfinite(lengths) & (lengths >= 0), "holdout_length >= 0 and finite", "it is the length of the holdout period in the model's time unit")

    # Predictions depend on (x, t_x, T, length) only: evaluate them once per distinct row.
    rows, inverse = unique_rows(x, data["recency"], data["T"], lengths)
    predicted = np.asarray(model.expected_purchases(rows[3], *rows[:3]), dtype=float)[inverse]

    group = np.minimum(x, top).astype(np.intp)
    customers = np.bincount(group, minlength=top + 1)
    means = {}
    for name, values in (("actual", actual), ("predicted", predicted)):
        sums = np.bincount(group, weights=values, minlength=top + 1)
        means[name] = np.divide(sums, customers, out=np.full(top + 1, np.nan), where=customers > 0)
    return pd.DataFrame({"frequency": _bucket_labels(top), "customers": customers} | means)


def repeat_purchase_histogram(model, frequency, T, *, max_count: int = 7) -> pd.DataFrame:
    """Count customers by calibration repeat purchases, actual against predicted.

    The predicted number of customers with ``n`` repeat purchases is ``sum_i P(X(T_i) = n)``, each
    customer's probability evaluated over their own time since the first purchase ``T_i`` (eq. 8 of
    [1]_ for the BG/NBD). The last group, ``max_count`` or more, is predicted as the number of
    customers minus the other groups.

    Parameters
    ----------
    model : purchase model
        A fitted model with ``probability_of_n_purchases(t, n)``, the distribution of the number of
        repeat purchases of a customer just acquired (for example :class:`~revopt.models.BetaGeoModel`).
    frequency, T : array_like, shape (n,)
        Calibration repeat purchases and time from the first purchase to the end of the calibration
        period, in the model's time unit.
    max_count : int, default 7
        First count pooled into the last group; at least 1.

    Returns
    -------
    pandas.DataFrame
        One row per group, with columns ``repeat_purchases`` (labels ``"0"``, ..., ``"7+"`` for
        the default ``max_count``),
        ``actual`` (customers) and ``predicted`` (expected customers).

    Raises
    ------
    InputError
        If the model has no ``probability_of_n_purchases``, or a customer breaks the summary
        invariants.
    ConfigError
        If ``max_count`` is not a whole number >= 1.

    References
    ----------
    .. [1] Fader, Hardie and Lee (2005), Marketing Science 24(2).
    """
    _require_method(model, "probability_of_n_purchases", "the predicted repeat-purchase histogram")
    top = _whole_number("max_count", max_count, low=1)
    data = validate_summary(frequency, T=T)
    x, big_t = data["frequency"], data["T"]

    (distinct_t,), inverse = unique_rows(big_t)
    customers_per_t = np.bincount(inverse, minlength=distinct_t.size).astype(float)
    counts = np.arange(top, dtype=float)[:, None]
    probabilities = np.asarray(model.probability_of_n_purchases(distinct_t[None, :], counts), dtype=float)
    predicted = weighted_sum(probabilities, customers_per_t)  # shape (top,)
    # The expected counts of the other groups sum to at most the number of customers, so only
    # rounding can make the tail negative.
    tail = max(float(x.size - predicted.sum()), 0.0)

    actual = np.bincount(np.minimum(x, top).astype(np.intp), minlength=top + 1)
    return pd.DataFrame(
        {"repeat_purchases": _bucket_labels(top), "actual": actual, "predicted": np.append(predicted, tail)}
    )


def holdout_errors(predicted, actual) -> dict[str, float]:
    """Return per-customer errors and totals of holdout predictions.

    Parameters
    ----------
    predicted, actual : array_like, shape (n,)
        Predicted and actual holdout values (purchases or spend), one per customer; finite.

    Returns
    -------
    dict
        ``customers`` (n), ``actual_total``, ``predicted_total``, ``mae`` (mean absolute error) and
        ``rmse`` (root mean squared error).

    Raises
    ------
    InputError
        If the arrays are empty, differ in length, or hold missing or infinite values.
    """
    predicted = _values("predicted", predicted)
    actual = _values("actual", actual, predicted.size)
    error = predicted - actual
    return {
        "customers": int(predicted.size),
        "actual_total": float(actual.sum()),
        "predicted_total": float(predicted.sum()),
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
    }


def ranking_quality(predicted_value, actual_value) -> dict[str, float]:
    """Measure how well a prediction ranks customers by the value they actually brought in.

    Customers are ranked by ``predicted_value``, highest first. With ``L(k)`` the share of the total
    actual value earned by the first ``k`` of ``n`` customers in that order:

    - ``gini`` is ``G(prediction) / G(actual)``, where ``G(order) = (1 / n) sum_{k=1..n} (L(k) - k / n)``
      is the mean gap between the cumulative-share curve and the diagonal, and ``G(actual)`` is its
      value when customers are ranked by their actual value. It is 1 for a ranking as good as the
      actual one, 0 in expectation for a random ranking, and -1 for the reverse of the actual one.
    - ``top_decile_capture`` is ``L(TOP_SHARE n)``, the share of the actual value earned by the top
      10 % by prediction. When ``n / 10`` is not whole, the customer on the boundary counts with
      the fraction that falls inside, so the value is ``L`` interpolated linearly.

    Customers with equal predictions form one block and each gets the block's mean actual value.
    The result is then the expectation over all orders within tied blocks, independent of the input
    order: a constant prediction has ``gini`` 0 and captures exactly 10 %.

    Parameters
    ----------
    predicted_value : array_like, shape (n,)
        Any score whose order matters (CLV, expected purchases); finite.
    actual_value : array_like, shape (n,)
        Value earned in the holdout period; finite and non-negative.

    Returns
    -------
    dict
        ``gini``, ``top_decile_capture`` and ``customers``. Both measures are NaN, with a
        :class:`DataQualityWarning`, when the total actual value is 0; ``gini`` is NaN, with the
        warning, when every customer has the same actual value, since no order is then better than
        another.

    Raises
    ------
    InputError
        If the arrays are empty, differ in length, hold missing values, or actual values are negative.

    Examples
    --------
    >>> ranking_quality([3.0, 2.0, 2.0, 1.0], [4.0, 0.0, 2.0, 2.0])
    {'gini': 0.5, 'top_decile_capture': 0.2, 'customers': 4}
    """
    predicted = _values("predicted_value", predicted_value)
    actual = _values("actual_value", actual_value, predicted.size)
    require(actual >= 0, "actual_value >= 0", "the ranking measures need non-negative value; net out returns per customer first")
    n = predicted.size
    total = float(actual.sum())
    if total == 0.0:
        warnings.warn(DataQualityWarning("ranking_quality: the total actual value is 0, so shares of it are undefined; gini and top_decile_capture are NaN"), stacklevel=2)
        return {"gini": float("nan"), "top_decile_capture": float("nan"), "customers": n}

    order = np.argsort(-predicted, kind="stable")
    ranked = _tie_averaged(predicted[order], actual[order])
    cumulative = np.concatenate([[0.0], np.cumsum(ranked)])
    capture = float(np.interp(TOP_SHARE * n, np.arange(n + 1), cumulative)) / total

    if np.ptp(actual) == 0.0:  # tested exactly: the area of equal values is rounding noise around 0
        warnings.warn(DataQualityWarning("ranking_quality: every customer has the same actual value, so no ranking is better than another; gini is NaN"), stacklevel=2)
        return {"gini": float("nan"), "top_decile_capture": capture, "customers": n}
    best = _gini_area(np.sort(actual)[::-1], total)
    return {"gini": _gini_area(ranked, total) / best, "top_decile_capture": capture, "customers": n}


def _tie_averaged(sorted_keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Replace ``values`` by their mean within each run of equal ``sorted_keys``."""
    starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
    sizes = np.diff(np.append(starts, sorted_keys.size))
    return np.repeat(np.add.reduceat(values, starts) / sizes, sizes)


def _gini_area(ranked: np.ndarray, total: float) -> float:
    """Return ``(1 / n) sum_k (L(k) - k / n)`` for values in rank order (see :func:`ranking_quality`)."""
    n = ranked.size
    shares = np.cumsum(ranked) / total
    return float(np.mean(shares - np.arange(1, n + 1) / n))


# --- choosing between models --------------------------------------------------------------------


def model_comparison(models, *, n_customers: float, holdout: Mapping | None = None) -> pd.DataFrame:
    """Tabulate fit statistics of models fitted to the same customers, and their holdout errors.

    ``AIC = 2 k - 2 LL`` and ``BIC = k ln(n_customers) - 2 LL``, with ``k`` the number of
    parameters and ``LL`` the log-likelihood at the estimates; lower is better for both. They
    compare models only when every model was fitted to the same customers in the same time unit,
    since the likelihood of a continuous-time model changes with the unit.

    Parameters
    ----------
    models : mapping of str to model, or sequence of models
        Fitted models with ``fit_result_``. A sequence is labelled by each model's ``name``.
    n_customers : float
        Number of customers the models were fitted to (the sum of the weights); every model's
        ``fit_result_.n_customers`` must equal it.
    holdout : mapping of str to (predicted, actual), optional
        For each model label, its predicted holdout values and the actual ones (pass the same actual
        values to every model). Must cover every model when given.

    Returns
    -------
    pandas.DataFrame
        One row per model, in the given order, with columns ``name``, ``parameters``,
        ``log_likelihood``, ``aic``, ``bic``, and with ``holdout`` also ``holdout_mae`` and
        ``holdout_rmse`` (see :func:`holdout_errors`).

    Raises
    ------
    InputError
        If ``models`` is empty, two models share a label, a model's fit covers a different number
        of customers, or ``holdout`` misses a model.
    NotFittedError
        If a model is not fitted.
    ConfigError
        If ``n_customers`` is not positive.
    """
    check_range("n_customers", n_customers, low=0.0, low_inclusive=False)
    if isinstance(models, Mapping):
        labelled = list(models.items())
    else:
        labelled = [(getattr(model, "name", type(model).__name__), model) for model in models]
    if not labelled:
        raise InputError("models is empty; pass at least one fitted model")
    labels = [label for label, _ in labelled]
    if len(set(labels)) < len(labels):
        raise InputError(f"model labels {labels} are not unique; pass a mapping from distinct labels to models")
    if holdout is not None and set(labels) - set(holdout):
        raise InputError(f"holdout has no predictions for {sorted(set(labels) - set(holdout))}; give (predicted, actual) for every model")

    rows = []
    for label, model in labelled:
        fit = _fit_result(model)
        if not np.isclose(fit.n_customers, n_customers):
            raise InputError(
                f"model {label!r} was fitted to {fit.n_customers:g} customers, not n_customers = {n_customers:g}; "
                "log-likelihoods compare only on the same customers"
            )
        k = len(fit.params)
        row = {
            "name": label,
            "parameters": k,
            "log_likelihood": fit.log_likelihood,
            "aic": 2.0 * k - 2.0 * fit.log_likelihood,
            "bic": k * np.log(n_customers) - 2.0 * fit.log_likelihood,
        }
        if holdout is not None:
            errors = holdout_errors(*holdout[label])
            row |= {"holdout_mae": errors["mae"], "holdout_rmse": errors["rmse"]}
        rows.append(row)
    return pd.DataFrame(rows)


def _fit_result(model):
    if not hasattr(model, "fit_result_"):
        raise NotFittedError(f"{type(model).__name__} is not fitted yet; fit it before asking for its fit statistics")
    return model.fit_result_


# --- parameter uncertainty ----------------------------------------------------------------------


def parameter_draws(model, *, draws: int = 1000, seed) -> dict[str, np.ndarray]:
    """Draw parameters from the asymptotic normal distribution of the log-parameters.

    The maximum-likelihood estimates are asymptotically normal with the covariance ``Sigma`` of
    ``fit_result_.covariance``. The draws are made on the log scale, so that every drawn
    parameter stays positive. By the delta method
    ``Cov(log theta) = D^-1 Sigma D^-1`` with ``D = diag(theta)``, so
    ``log theta ~ N(log theta_hat, D^-1 Sigma D^-1)``.

    Parameters
    ----------
    model : fitted model
        Any model with ``fit_result_`` from maximum likelihood.
    draws : int, default 1000
        Number of draws; at least 2.
    seed : int, numpy.random.Generator or None
        Passed to :func:`numpy.random.default_rng`; keyword-only and required, so results repeat
        unless ``None`` is passed on purpose.

    Returns
    -------
    dict of str to numpy.ndarray
        For each parameter, in the model's order, an array of shape (draws,).

    Raises
    ------
    NotFittedError
        If the model is not fitted.
    FitError
        If the fit has no covariance matrix. That happens when the Hessian of the log-likelihood at
        the estimates is not negative definite (a flat likelihood, or an estimate on the edge of the
        parameter space), and then the estimates have no asymptotic normal distribution to draw from.
    ConfigError
        If ``draws`` is not a whole number >= 2.
    """
    count = _whole_number("draws", draws, low=2)
    fit = _fit_result(model)
    if fit.covariance is None:
        raise FitError(
            f"{type(model).__name__}: the fit has no covariance matrix because the Hessian of the log-likelihood "
            "at the estimates is not negative definite (the likelihood is flat in some direction, or an estimate "
            "lies on the edge of the parameter space); parameter draws need it. Refit on more customers, or on a "
            "longer calibration period"
        )
    names = list(fit.params)
    estimates = np.array([fit.params[name] for name in names])
    log_covariance = np.asarray(fit.covariance) / np.outer(estimates, estimates)  # D^-1 Sigma D^-1
    try:
        factor = np.linalg.cholesky(log_covariance)
    except np.linalg.LinAlgError as error:
        raise FitError(f"{type(model).__name__}: the covariance matrix of the fit is not positive definite; {error}") from error

    normal = np.random.default_rng(seed).standard_normal((count, len(names)))
    log_draws = np.log(estimates) + normal @ factor.T
    return {name: np.exp(log_draws[:, i]) for i, name in enumerate(names)}


def with_params(model, params: Mapping[str, float]):
    """Return a shallow copy of a fitted model that predicts with ``params`` in place of its estimates.

    Only ``params_`` changes. ``fit_result_`` and the standard errors still describe the original fit.

    Parameters
    ----------
    model : fitted model
        A model whose predictions read ``params_``.
    params : mapping of str to float
        A value for every parameter of the model, for example one draw of :func:`parameter_draws`.

    Raises
    ------
    NotFittedError
        If the model is not fitted.
    InputError
        If ``params`` does not name exactly the model's parameters.
    """
    if not hasattr(model, "params_"):
        raise NotFittedError(f"{type(model).__name__} is not fitted yet; fit it before replacing its parameters")
    if set(params) != set(model.params_):
        raise InputError(f"params names {sorted(params)}, but {type(model).__name__} has parameters {sorted(model.params_)}")
    twin = copy.copy(model)
    twin.params_ = {name: float(params[name]) for name in model.params_}
    return twin


def prediction_interval(
    model, function: Callable[[dict[str, float]], np.ndarray], *, level: float = 0.9, draws: int = 1000, seed
) -> dict[str, np.ndarray]:
    """Give each customer an interval for a prediction that reflects the uncertainty in the parameters.

    ``function`` is evaluated at the estimates and at each draw of :func:`parameter_draws`, and the
    interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the draws. It covers
    the sampling error of the estimates only. A customer's own purchases also vary around the
    prediction, and that randomness is not in the interval.

    Parameters
    ----------
    model : fitted model
        Any model with ``fit_result_.covariance``.
    function : callable
        ``function(params) -> array`` with ``params`` a dict of parameter name to float, returning
        one value per row, in the same shape for every draw. Use :func:`with_params` to predict
        from the model at ``params``, for example
        ``lambda p: with_params(model, p).expected_purchases(52, x, t_x, T)``.
    level : float, default 0.9
        Probability inside the interval, in (0, 1).
    draws : int, default 1000
        Number of parameter draws; at least 2.
    seed : int, numpy.random.Generator or None
        See :func:`parameter_draws`.

    Returns
    -------
    dict of str to numpy.ndarray
        ``point`` (``function`` at the estimates in ``fit_result_``), ``lower`` and ``upper``, each
        of the shape that ``function`` returns. An interval is NaN where any draw gives NaN.

    Raises
    ------
    FitError, NotFittedError
        See :func:`parameter_draws`.
    ConfigError
        If ``level`` is outside (0, 1) or ``draws`` is not a whole number >= 2.
    InputError
        If ``function`` returns a different shape for a draw than at the estimates.

    Notes
    -----
    Memory grows as ``draws`` times the number of rows ``function`` returns, so pass it the distinct
    customer histories, not every customer. For example, take ``rows, inverse = np.unique(
    np.column_stack([frequency, recency, T]), axis=0, return_inverse=True)``, predict for the
    columns of ``rows`` in ``function``, and index ``lower``, ``upper`` and ``point`` with
    ``inverse``.
    """
    check_range("level", level, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    samples = parameter_draws(model, draws=draws, seed=seed)
    count = next(iter(samples.values())).size
    point = np.asarray(function(dict(model.fit_result_.params)), dtype=float)

    values = np.empty((count,) + point.shape)
    for i in range(count):
        drawn = np.asarray(function({name: float(column[i]) for name, column in samples.items()}), dtype=float)
        if drawn.shape != point.shape:
            raise InputError(f"function returned shape {drawn.shape} for a parameter draw but {point.shape} at the estimates; return one value per row every time")
        values[i] = drawn

    tail = (1.0 - level) / 2.0
    lower, upper = np.quantile(values, [tail, 1.0 - tail], axis=0)
    return {"point": point, "lower": lower, "upper": upper}


def delta_interval(model, function: Callable[[dict[str, float]], np.ndarray], *, level: float = 0.9,
                   step: float = 1e-4) -> dict[str, np.ndarray]:
    """Give each customer an interval for a positive prediction by the delta method on the log scale.

    The fast counterpart of :func:`prediction_interval`. With ``g`` the gradient of
    ``log function`` with respect to the log-parameters (central differences of relative size
    ``step``) and ``S`` their covariance (see :func:`parameter_draws`), ``log function`` is taken as
    normal with standard deviation ``sqrt(g S g')``, and the interval is
    ``point * exp(-+ z sd)`` with ``z`` the normal quantile of ``level``. It needs ``2k + 1``
    evaluations of ``function`` for ``k`` parameters, against one per draw, and agrees with the
    draws' quantiles to a few per cent where the parameters are well determined.

    Parameters
    ----------
    model : fitted model
        Any model with ``fit_result_.covariance``.
    function : callable
        ``function(params) -> array`` of positive values, as for :func:`prediction_interval`.
    level : float, default 0.9
        Probability inside the interval, in (0, 1).
    step : float, default 1e-4
        Step in each log-parameter for the central differences.

    Returns
    -------
    dict of str to numpy.ndarray
        ``point``, ``lower`` and ``upper``. The bounds are NaN where ``function`` is not positive at
        the estimates or at a step.

    Raises
    ------
    FitError, NotFittedError
        See :func:`parameter_draws`.
    ConfigError
        If ``level`` is outside (0, 1).
    """
    check_range("level", level, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    fit = _fit_result(model)
    if fit.covariance is None:
        raise FitError(f"{type(model).__name__}: the fit has no covariance matrix, so the delta method has no "
                       "variance to carry; refit on more customers, or on a longer calibration period")
    names = list(fit.params)
    estimates = np.array([fit.params[name] for name in names])
    log_covariance = np.asarray(fit.covariance) / np.outer(estimates, estimates)
    point = np.asarray(function(dict(fit.params)), dtype=float)
    gradient = np.empty(point.shape + (len(names),))
    with np.errstate(invalid="ignore", divide="ignore"):
        for i, name in enumerate(names):
            up = {**fit.params, name: float(estimates[i] * np.exp(step))}
            down = {**fit.params, name: float(estimates[i] * np.exp(-step))}
            log_up = np.log(np.asarray(function(up), dtype=float))
            log_down = np.log(np.asarray(function(down), dtype=float))
            gradient[..., i] = (log_up - log_down) / (2.0 * step)
        variance = np.einsum("...i,ij,...j->...", gradient, log_covariance, gradient)
        spread = ndtri(0.5 + level / 2.0) * np.sqrt(np.maximum(variance, 0.0))
        lower = np.where(point > 0, point * np.exp(-spread), np.nan)
        upper = np.where(point > 0, point * np.exp(spread), np.nan)
    return {"point": point, "lower": lower, "upper": upper}


# --- time to the next purchase ------------------------------------------------------------------


def next_purchase_time(model, frequency, recency, T, *, quantiles: Sequence[float] = (0.1, 0.5, 0.9)) -> pd.DataFrame:
    """Return how likely each customer is to buy again, and by when, counted from the end of the period.

    In the BG/NBD ([1]_) a customer drops out only right after a purchase, so a customer alive at
    ``T`` buys again for certain, and one who is not never buys again. Alive, the time to the next
    purchase is exponential with the customer's rate ``lambda``, and given the history
    ``lambda ~ Gamma(r + x, alpha + T)`` (shape, rate). Mixing the exponential over that gamma gives a
    Lomax waiting time, so::

        P(next purchase within t) = P(alive) (1 - ((alpha + T) / (alpha + T + t))^(r + x))

    and the time by which the customer has bought with probability ``q`` is
    ``(alpha + T) ((1 - q / P(alive))^(-1 / (r + x)) - 1)``.

    In the Pareto/NBD ([2]_) a customer alive at ``T`` may still drop out before buying again.
    Given the history and being alive, ``lambda ~ Gamma(r + x, alpha + T)`` and
    ``mu ~ Gamma(s, beta + T)`` independently, and the customer buys within ``t``, before dropping
    out, with probability ``lambda / (lambda + mu) (1 - exp(-(lambda + mu) t))``. That is
    ``int_0^t lambda exp(-(lambda + mu) u) du``, and integrating ``lambda`` and ``mu`` out first gives::

        P(next purchase within t) = P(alive) int_0^t (r + x) / (alpha + T)
                                    * (1 + u / (alpha + T))^-(r + x + 1) (1 + u / (beta + T))^-s du.

    The integral to infinity, ``E[lambda / (lambda + mu)]``, is below 1, so the probability of ever
    buying again is ``P(alive) E[lambda / (lambda + mu)]``. The integral is a Gaussian
    hypergeometric function, evaluated as in :mod:`revopt.models.pareto_nbd`, and the times are
    found by bisection.

    Parameters
    ----------
    model : purchase model
        A fitted BG/NBD, MBG/NBD or Pareto/NBD (``name`` ``"bg_nbd"``, ``"mbg_nbd"`` or
        ``"pareto_nbd"``) with ``probability_alive``. In the MBG/NBD a customer may also drop out at
        the first purchase, which only changes P(alive).
    frequency, recency, T : array_like, shape (n,)
        The customers' summaries, in the model's time unit.
    quantiles : sequence of float, default (0.1, 0.5, 0.9)
        Distinct probabilities in (0, 1).

    Returns
    -------
    pandas.DataFrame
        One row per customer, with ``probability_alive`` and, for each ``q``, ``time_p{100 q}``
        (``time_p10``, ``time_p50``, ...): time after ``T`` by which the customer has bought again
        with probability ``q``, in the model's time unit. For the BG/NBD and MBG/NBD,
        ``probability_alive`` is also the probability of ever buying again, and a time is NaN where
        ``P(alive) <= q``. For the Pareto/NBD a time is NaN where
        ``P(alive) E[lambda / (lambda + mu)] <= q``. In both cases such a customer reaches
        probability ``q`` at no finite time.

    Raises
    ------
    InputError
        If the model is not a BG/NBD, MBG/NBD or Pareto/NBD, or a customer breaks the summary
        invariants.
    ConfigError
        If a quantile is outside (0, 1) or repeated.
    NotFittedError
        If the model is not fitted.

    References
    ----------
    .. [1] Fader, Hardie and Lee (2005), Marketing Science 24(2).
    .. [2] Schmittlein, D. C., Morrison, D. G. and Colombo, R. (1987). Counting your customers: who
       are they and what will they do next? Management Science 33(1), 1-24.
    """
    if getattr(model, "name", None) not in _NEXT_PURCHASE_MODELS:
        raise InputError(
            f"next_purchase_time needs a BG/NBD, MBG/NBD or Pareto/NBD model "
            f"(one of {sorted(_NEXT_PURCHASE_MODELS)}); {type(model).__name__} is not one"
        )
    levels = [float(check_range("quantile", q, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)) for q in quantiles]
    if len(set(levels)) < len(levels):
        raise ConfigError(f"quantiles must be distinct; got {list(quantiles)}")
    data = validate_summary(frequency, recency, T)
    x = data["frequency"]
    alive = np.asarray(model.probability_alive(x, data["recency"], data["T"]), dtype=float)
    if model.name == "pareto_nbd":
        return _pareto_nbd_next_purchase_time(model.params_, x, data["T"], alive, levels)

    shape = model.params_["r"] + x
    scale = model.params_["alpha"] + data["T"]
    table = {"probability_alive": alive}
    for q in levels:
        reachable = alive > q
        # (1 - q / P(alive))^(-1 / shape) - 1 through log1p and expm1: accurate for small q and large shape.
        log_survival = np.log1p(-q / np.where(reachable, alive, 1.0))
        time = scale * np.expm1(-log_survival / shape)
        table[f"time_p{100 * q:g}"] = np.where(reachable, time, np.nan)
    return pd.DataFrame(table)


class _ParetoNBDWaiting:
    """The density ``f(u) = a / A (1 + u / A)^-(a + 1) (1 + u / B)^-b`` of buying next at ``u``
    after ``T``, before dropping out, for Pareto/NBD customers alive at ``T``, one per distinct
    (x, T) row, with ``a = r + x``, ``A = alpha + T``, ``b = s`` and ``B = beta + T``.

    Its tail ``int_t^inf f(u) du`` is, up to a factor free of ``t``, the integral of
    ``(big + u)^-P (small + u)^-Q`` from ``t``, with ``big, small, P, Q = A, B, a + 1, b`` when
    A >= B and ``B, A, b, a + 1`` otherwise. Euler's transformation turns that into
    ``(big + t)^-P (small + t)^-(Q - 1) G(z) / (P + Q - 1)`` with ``z = (big - small) / (big + t)``
    and ``G = 2F1(1, P; P + Q; z)``, the function of :func:`revopt.models.pareto_nbd._log_hyp2f1_cf`.
    """

    def __init__(self, params: Mapping[str, float], x: np.ndarray, T: np.ndarray):
        a, A = params["r"] + x, params["alpha"] + T
        b, B = np.full(x.shape, float(params["s"])), params["beta"] + T
        alpha_larger = A >= B
        self.big, self.small = np.where(alpha_larger, A, B), np.where(alpha_larger, B, A)
        self.P, self.Q = np.where(alpha_larger, a + 1.0, b), np.where(alpha_larger, b, a + 1.0)
        self.log_g0 = self._log_g(np.zeros(x.shape), np.arange(x.size))
        # E[lambda / (lambda + mu)] = int_0^inf f: a B G(z_0) / (A (a + b)) when A >= B, else a G(z_0) / (a + b).
        self.purchase_share = a / (a + b) * np.exp(self.log_g0) * np.where(alpha_larger, B / A, 1.0)
        self.initial_density = a / A  # f(0), the maximum of f, which decreases

    def _log_g(self, t: np.ndarray, rows: np.ndarray) -> np.ndarray:
        z = (self.big[rows] - self.small[rows]) / (self.big[rows] + t)
        return _log_hyp2f1_cf(self.P[rows], self.Q[rows], z)[0]

    def log_tail_ratio(self, t: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Return ``ln(int_t^inf f / int_0^inf f)`` at ``t`` for the given rows; NaN where G did not converge."""
        return (
            -self.P[rows] * np.log1p(t / self.big[rows])
            - (self.Q[rows] - 1.0) * np.log1p(t / self.small[rows])
            + self._log_g(t, rows)
            - self.log_g0[rows]
        )


def _pareto_nbd_next_purchase_time(params, x, T, alive, levels) -> pd.DataFrame:
    """Return next_purchase_time's table for a Pareto/NBD, computing the waiting times once per distinct (x, T)."""
    (x_rows, T_rows), inverse = unique_rows(x, T)
    waiting = _ParetoNBDWaiting(params, x_rows, T_rows)
    table = {"probability_alive": alive}
    for q in levels:
        # Alive, the customer must buy within t with probability q / P(alive), which is `share` times
        # E[lambda / (lambda + mu)]. So the tail ratio must fall to 1 - share, reachable when share < 1.
        share = q / np.where(alive > 0, alive, np.nan) / waiting.purchase_share[inverse]
        reachable = share < 1.0
        times = np.full(x.size, np.nan)
        # Customers with the same (x, T) and P(alive) have the same time, so each pair is solved once.
        (rows, shares), pair_inverse = unique_rows(inverse[reachable], share[reachable])
        if rows.size:
            rows = rows.astype(np.intp)
            # f is at most f(0), so the probability within t is at most f(0) t and the solution is at
            # least the target probability divided by f(0).
            lower = shares * waiting.purchase_share[rows] / waiting.initial_density[rows]
            solved = _solve_tail_ratio(waiting, rows, np.log1p(-shares), lower)
            times[reachable] = solved[pair_inverse]
        table[f"time_p{100 * q:g}"] = times
    return pd.DataFrame(table)


def _solve_tail_ratio(waiting: _ParetoNBDWaiting, rows: np.ndarray, targets: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Return the ``t`` at which ``waiting.log_tail_ratio(t, rows)`` equals ``targets``, by bisection on ``log t``.

    ``lower`` must lie at or below the solution. The tail ratio decreases in ``t``, so doubling the
    upper end brackets the solution, and halving the bracket in ``log t`` finds it. Rows where the
    hypergeometric function did not converge are NaN.

    NOTE: the continued fraction behind G stops after a fixed number of steps, which covers
    ``alpha + T`` and ``beta + T`` within a factor of about 10^6 of each other. Customers beyond that
    get NaN times.
    """
    low = lower.copy()
    high = 2.0 * low
    failed = np.zeros(rows.size, dtype=bool)
    above = np.ones(rows.size, dtype=bool)  # whether the tail ratio at `high` is still above the target
    for _ in range(_MAX_DOUBLINGS):
        open_rows = np.flatnonzero(above & ~failed)
        if not open_rows.size:
            break
        values = waiting.log_tail_ratio(high[open_rows], rows[open_rows])
        failed[open_rows] |= np.isnan(values)
        still = values > targets[open_rows]
        low[open_rows[still]] = high[open_rows[still]]
        high[open_rows[still]] *= 2.0
        above[open_rows] = still
    failed |= above

    for _ in range(_BISECTION_STEPS):
        middle = np.sqrt(low * high)
        values = waiting.log_tail_ratio(middle, rows)
        failed |= np.isnan(values)
        go_up = values > targets
        low = np.where(go_up, middle, low)
        high = np.where(go_up, high, middle)
    return np.where(failed, np.nan, np.sqrt(low * high))
