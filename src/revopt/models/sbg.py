"""The shifted-beta-geometric (sBG) model of contract renewals (Fader and Hardie 2007).

In a contractual setting (subscriptions, memberships) a customer decides at the end of each period
whether to renew. Each customer churns at each renewal with a constant probability ``theta``, and
``theta ~ Beta(alpha, beta)`` across customers. With ``T`` the period in which a customer churns
(T = 1, 2, ...), the model gives ([1]_)

- churn probability ``P(T = t) = B(alpha + 1, beta + t - 1) / B(alpha, beta)``;
- survival ``S(t) = P(T > t) = B(alpha, beta + t) / B(alpha, beta)``, the share of a cohort still
  active at the start of period t (``S(0) = 1``);
- retention rate ``r(t) = S(t) / S(t - 1) = (beta + t - 1) / (alpha + beta + t - 1)``, which rises
  with t because the customers most likely to churn leave first.

The model is fitted on cohort survivor counts: ``n_0`` customers acquired together, of whom
``n_1, n_2, ..., n_k`` are still active at the start of periods 1 .. k. The likelihood counts
``n_(t-1) - n_t`` churns in period t and ``n_k`` customers who are still active (right-censored)
at the end of the data. The parameters are unit-free, and t counts contract periods.

References
----------
.. [1] Fader, P. S. and Hardie, B. G. S. (2007). How to project customer retention. Journal of
   Interactive Marketing 21(1), 76-90.
.. [2] Fader, P. S. and Hardie, B. G. S. (2010). Customer-base valuation in a contractual setting:
   the perils of ignoring heterogeneity. Marketing Science 29(1), 85-93.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import digamma, gammaln

from revopt.errors import ConfigError, DataQualityWarning, InputError, check_range
from revopt.models._fitting import MaximumLikelihoodModel, fit_maximum_likelihood, weighted_sum

__all__ = ["ShiftedBetaGeometricModel"]

PARAMS = ("alpha", "beta")

# Cohorts named in an input error; enough to find them, short enough for one line.
_COHORTS_SHOWN = 5

# The DERL series is summed until the remainder is below this share of the sum (under double rounding).
_SERIES_TOLERANCE = 1e-17

# Most terms the DERL series may take: 2**22 doubles are 32 MiB per working array. The count is
# about 40 / d for a discount rate d per period, plus the spread of the renewal counts asked for.
_MAX_SERIES_TERMS = 2**22


# --- input validation ---------------------------------------------------------------------------


def _cohorts(survivors) -> list[np.ndarray]:
    """Return the survivor counts as one float array per cohort, or raise InputError naming the broken rule.

    ``survivors`` is one sequence of counts (one cohort) or a sequence of such sequences (several
    cohorts, each of any length). A 2-D array is read as one cohort per row.
    """
    try:
        if isinstance(survivors, np.ndarray) and survivors.ndim == 2:
            items = list(survivors)
        else:
            items = list(survivors)
            if items and all(np.ndim(item) == 0 for item in items):
                items = [items]
        cohorts = [np.asarray(item, dtype=float) for item in items]
    except (TypeError, ValueError) as error:
        raise InputError(f"survivors must be a sequence of counts or a list of such sequences, one per cohort; {error}") from error
    if not cohorts:
        raise InputError("no cohorts to fit or score: survivors is empty")
    for number, cohort in enumerate(cohorts):
        if cohort.ndim != 1 or cohort.size == 0:
            raise InputError(f"cohort {number} must be a non-empty sequence of counts, cohort size first; got shape {cohort.shape}")
    _require_each(cohorts, lambda c: np.all(np.isfinite(c)), "counts are finite", "drop or repair missing and infinite values")
    _require_each(cohorts, lambda c: np.all((c >= 0) & (c == np.floor(c))), "counts are whole numbers >= 0", "pass numbers of customers, not shares of the cohort")
    _require_each(cohorts, lambda c: c[0] > 0, "the cohort size (first value) is > 0", "drop empty cohorts")
    _require_each(cohorts, lambda c: np.all(np.diff(c) <= 0), "counts do not increase", "a survivor count covers only customers active since the start; reactivations and new customers belong to another cohort")
    return cohorts


def _require_each(cohorts: list[np.ndarray], check, rule: str, fix: str) -> None:
    """Raise InputError naming how many cohorts break ``rule`` and the positions of a few of them."""
    bad = [number for number, cohort in enumerate(cohorts) if not check(cohort)]
    if bad:
        positions = ", ".join(str(number) for number in bad[:_COHORTS_SHOWN]) + (", ..." if len(bad) > _COHORTS_SHOWN else "")
        raise InputError(f"{len(bad)} of {len(cohorts)} cohorts break the rule '{rule}' (cohort positions {positions}); {fix}")


def _periods(name: str, values, low: int) -> np.ndarray:
    """Return ``values`` as a float array, or raise ConfigError unless all are whole numbers >= ``low``."""
    array = np.asarray(values, dtype=float)
    bad = ~(np.isfinite(array) & (array >= low) & (array == np.floor(array)))
    if np.any(bad):
        raise ConfigError(f"{name} must be whole numbers >= {low} (contract periods); got {array[bad][:5].tolist()}")
    return array


# --- likelihood ---------------------------------------------------------------------------------


def _log_churn(params: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``ln P(T = t) = ln[B(alpha + 1, beta + t - 1) / B(alpha, beta)]`` and its gradient, for t >= 1."""
    alpha, beta = params
    shared = gammaln(alpha + beta) - gammaln(alpha + beta + t)
    shared_grad = digamma(alpha + beta) - digamma(alpha + beta + t)

    value = np.log(alpha) + gammaln(beta + t - 1.0) - gammaln(beta) + shared
    d_alpha = 1.0 / alpha + shared_grad
    d_beta = digamma(beta + t - 1.0) - digamma(beta) + shared_grad
    return value, np.stack([d_alpha, d_beta])


def _log_survival(params: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``ln S(t) = ln[B(alpha, beta + t) / B(alpha, beta)]`` and its gradient, for t >= 0."""
    alpha, beta = params
    shared = gammaln(alpha + beta) - gammaln(alpha + beta + t)
    shared_grad = digamma(alpha + beta) - digamma(alpha + beta + t)

    value = gammaln(beta + t) - gammaln(beta) + shared
    d_beta = digamma(beta + t) - digamma(beta) + shared_grad
    return value, np.stack([shared_grad, d_beta])


class _Likelihood:
    """sBG log-likelihood of survivor counts, pooled across cohorts by period.

    Every cohort contributes ``(n_(t-1) - n_t) ln P(T = t)`` for each observed period t and
    ``n_k ln S(k)`` for its last observed period k, so the cohorts add up to one count of churns
    and one count of censored customers per period.
    """

    def __init__(self, cohorts: list[np.ndarray]) -> None:
        last = max(cohort.size for cohort in cohorts)
        churned = np.zeros(last)  # index t: churns in period t (index 0 unused)
        censored = np.zeros(last)  # index t: still active at the start of period t, the last one observed
        for cohort in cohorts:
            churned[1 : cohort.size] += -np.diff(cohort)
            censored[cohort.size - 1] += cohort[-1]
        self.churn_periods = np.flatnonzero(churned).astype(float)
        self.churned = churned[churned > 0]
        self.censor_periods = np.flatnonzero(censored).astype(float)
        self.censored = censored[censored > 0]
        self.n_customers = float(sum(cohort[0] for cohort in cohorts))
        self.n_distinct = self.churned.size + self.censored.size
        self.last_period = last - 1

    def __call__(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        churn, churn_grad = _log_churn(params, self.churn_periods)
        survival, survival_grad = _log_survival(params, self.censor_periods)
        value = weighted_sum(churn, self.churned) + weighted_sum(survival, self.censored)
        return float(value), weighted_sum(churn_grad, self.churned) + weighted_sum(survival_grad, self.censored)


def _residual_lifetime(alpha: float, beta: float, renewals: np.ndarray, discount_rate: float) -> np.ndarray:
    """Return DERL for whole-number ``renewals`` by summing its series in log space.

    ``DERL(r) = sum_{k > r} S(k) / S(r) z^(k - r - 1)`` with ``z = 1 / (1 + d)``. This is the
    series of the 2F1 in eq. 6 of Fader and Hardie (2010). scipy's hyp2f1 (1.17) returns NaN for
    renewals in the thousands at d = 0.001, and it was off by 1.4e-5 (relative) at alpha = 12,
    beta = 30, 100 renewals and d = 0.1. The sum runs over one shared array of periods
    ``k = min(r) .. max(r) + J``, with a reverse cumulative log-sum-exp giving every
    ``sum_{k' >= k}``. Because ``S(k) / S(r) <= 1``, the remainder after J more periods is at most
    ``z^J / (1 - z)``; J makes that at most ``_SERIES_TOLERANCE`` times the first term.

    Raises
    ------
    ConfigError
        If the series needs more than ``_MAX_SERIES_TERMS`` terms (a discount rate below about
        1e-5 per period, or renewal counts millions apart).
    """
    if discount_rate == 0.0:
        # sum_{j >= 0} S(r + 1 + j) / S(r) = (beta + r) / (alpha - 1) when alpha > 1, else it diverges.
        return (beta + renewals) / (alpha - 1.0) if alpha > 1.0 else np.full(renewals.shape, np.inf)

    log_z = -np.log1p(discount_rate)
    first, last = int(renewals.min()), int(renewals.max())
    smallest_first_term = (beta + first) / (alpha + beta + first)  # the renewal probability rises with r
    log_bound = np.log(_SERIES_TOLERANCE) + np.log(-np.expm1(log_z)) + np.log(smallest_first_term)
    extra = int(np.ceil(log_bound / log_z)) + 1
    if last - first + extra > _MAX_SERIES_TERMS:
        raise ConfigError(
            f"expected_residual_lifetime needs {last - first + extra} terms for discount_rate={discount_rate:g} and renewals "
            f"from {first} to {last}, more than {_MAX_SERIES_TERMS}; use a longer period (a larger rate per period), "
            "fewer distinct renewal counts per call, or discount_rate=0 for the undiscounted value"
        )

    k = np.arange(first, last + extra + 1, dtype=float)
    log_survival = np.zeros(k.size)  # ln S(k) - ln S(first)
    np.cumsum(-np.log1p(alpha / (beta + k[:-1])), out=log_survival[1:])  # ln S(k + 1) / S(k) = ln[(beta + k) / (alpha + beta + k)]
    log_terms = log_survival + (k - first) * log_z
    log_tails = np.logaddexp.accumulate(log_terms[::-1])[::-1]  # ln sum_{k' >= k} of the terms
    offset = (renewals - first).astype(np.intp)
    return np.exp(log_tails[offset + 1] - log_survival[offset] - (offset + 1) * log_z)


class ShiftedBetaGeometricModel(MaximumLikelihoodModel):
    """sBG model of contract renewals, fitted by maximum likelihood on cohort survivor counts.

    Parameters
    ----------
    max_iterations : int, default 1000
        Iteration limit for the BFGS solver.

    Attributes
    ----------
    params_ : dict of str to float
        ``alpha``, ``beta`` of the Beta distribution of the churn probability across customers.
    standard_errors_ : dict of str to float
        Asymptotic standard errors (NaN if the information matrix is singular).
    log_likelihood_ : float
        Sample log-likelihood at the estimates.
    fit_result_ : FitResult
        Everything the solver reported; ``n_customers`` is the sum of the cohort sizes.

    References
    ----------
    .. [1] Fader, P. S. and Hardie, B. G. S. (2007). How to project customer retention. Journal of
       Interactive Marketing 21(1), 76-90.

    Examples
    --------
    >>> model = ShiftedBetaGeometricModel().fit([1000, 631, 468, 382, 326, 289, 262, 241])
    >>> {name: round(value, 3) for name, value in model.params_.items()}
    {'alpha': 0.704, 'beta': 1.182}
    >>> model.retention_rate([1, 2, 12]).round(3)
    array([0.627, 0.756, 0.945])
    >>> model.projected_survivors([8, 12], active=241, period=7).round(1)
    array([221.9, 171.4])
    """

    name = "sbg"
    param_names = PARAMS
    _fit_call = "fit(survivors)"

    # --- fitting ------------------------------------------------------------------------------

    def fit(self, survivors) -> ShiftedBetaGeometricModel:
        """Estimate alpha and beta by maximum likelihood from cohort survivor counts ([1]_).

        Parameters
        ----------
        survivors : sequence of int, or sequence of sequences of int
            For one cohort, the customers still active at the start of periods 0, 1, ..., k, so
            the first value is the cohort size. For several cohorts, a list of such sequences, each of
            any length (a recent cohort has fewer periods observed), or a 2-D array with one cohort
            per row.

        Returns
        -------
        ShiftedBetaGeometricModel
            ``self``, fitted.

        Raises
        ------
        InputError
            If a count is missing, negative or fractional, a cohort is empty or its counts increase,
            or no cohort has a period observed. The message names the rule and the cohorts.
        FitError
            If the likelihood cannot be evaluated at the start or end of the search.

        Warns
        -----
        ConvergenceWarning, DataQualityWarning
            See :func:`revopt.models._fitting.fit_maximum_likelihood`.
        DataQualityWarning
            If no cohort is observed beyond period 1: the data then identify only
            ``alpha / (alpha + beta)``, and the estimates are one arbitrary point on that ridge.

        References
        ----------
        .. [1] Fader and Hardie (2007), Journal of Interactive Marketing 21(1).
        """
        cohorts = _cohorts(survivors)
        if all(cohort.size == 1 for cohort in cohorts):
            raise InputError("no renewal observed: every cohort has only its size; add the survivors at the start of period 1 and later")
        likelihood = _Likelihood(cohorts)
        result = fit_maximum_likelihood(
            likelihood,
            (1.0, 1.0),
            PARAMS,
            n_customers=likelihood.n_customers,
            n_distinct=likelihood.n_distinct,
            model="sBG",
            max_iterations=self.max_iterations,
        )
        self._store(result)
        if likelihood.last_period == 1:
            # Period 1 alone gives only P(T = 1) = alpha / (alpha + beta): the likelihood is flat along that ridge.
            first_churn = float(self.churn_probability(1))
            warnings.warn(DataQualityWarning(
                f"sBG: only period 1 is observed, so only the first-period churn probability alpha / (alpha + beta) = {first_churn:.4g} "
                "is identified, not alpha and beta themselves; add survivor counts for later periods before projecting retention"
            ), stacklevel=2)
        return self

    def log_likelihood(self, survivors) -> np.ndarray:
        """Return the log-likelihood of each cohort's survivor counts at the fitted parameters.

        Parameters
        ----------
        survivors : sequence of int, or sequence of sequences of int
            As in :meth:`fit`.

        Returns
        -------
        numpy.ndarray, shape (cohorts,)
        """
        params = self._params()
        return np.array([_Likelihood([cohort])(params)[0] for cohort in _cohorts(survivors)])

    # --- projections --------------------------------------------------------------------------

    def survival(self, t) -> np.ndarray:
        """Return ``S(t) = B(alpha, beta + t) / B(alpha, beta)``, the share of a new cohort still active at the start of period t ([1]_).

        Parameters
        ----------
        t : int or array_like of int
            Periods since acquisition; whole numbers >= 0.

        Returns
        -------
        numpy.ndarray
            Same shape as ``t``; values in (0, 1], with ``S(0) = 1``.

        Raises
        ------
        ConfigError
            If ``t`` is not a whole number >= 0.

        References
        ----------
        .. [1] Fader and Hardie (2007), Journal of Interactive Marketing 21(1).
        """
        params = self._params()
        return np.exp(_log_survival(params, _periods("t", t, 0))[0])

    def churn_probability(self, t) -> np.ndarray:
        """Return ``P(T = t) = B(alpha + 1, beta + t - 1) / B(alpha, beta)``, the probability that a new customer churns in period t ([1]_).

        Parameters
        ----------
        t : int or array_like of int
            Periods; whole numbers >= 1.

        Returns
        -------
        numpy.ndarray
            Same shape as ``t``; ``S(t - 1) - S(t)``, summing to 1 over t = 1, 2, ...

        Raises
        ------
        ConfigError
            If ``t`` is not a whole number >= 1.

        References
        ----------
        .. [1] Fader and Hardie (2007), Journal of Interactive Marketing 21(1).
        """
        params = self._params()
        return np.exp(_log_churn(params, _periods("t", t, 1))[0])

    def retention_rate(self, t) -> np.ndarray:
        """Return ``r(t) = S(t) / S(t - 1) = (beta + t - 1) / (alpha + beta + t - 1)``, the share of customers active in period t - 1 who renew for period t ([1]_).

        Parameters
        ----------
        t : int or array_like of int
            Periods; whole numbers >= 1.

        Returns
        -------
        numpy.ndarray
            Same shape as ``t``; values in (0, 1), increasing in t.

        Raises
        ------
        ConfigError
            If ``t`` is not a whole number >= 1.

        References
        ----------
        .. [1] Fader and Hardie (2007), Journal of Interactive Marketing 21(1).
        """
        alpha, beta = self._params()
        t = _periods("t", t, 1)
        return (beta + t - 1.0) / (alpha + beta + t - 1.0)

    def projected_survivors(self, t, *, active=1.0, period=0) -> np.ndarray:
        """Return the expected number of customers still active at the start of period t.

        Of ``active`` customers active at the start of ``period``, the expected number active at
        the start of period t is ``active * S(t) / S(period)``: customers who survived to
        ``period`` have the churn distribution ``Beta(alpha, beta + period)``. With the defaults,
        the result is S(t), the expected share of a new cohort.

        Parameters
        ----------
        t : int or array_like of int
            Periods; whole numbers >= ``period``.
        active : float or array_like, default 1.0
            Customers active at the start of ``period`` (a count, or 1 for shares); non-negative.
            Broadcast against ``t``.
        period : int, default 0
            The last observed period; a whole number >= 0.

        Returns
        -------
        numpy.ndarray
            Shape of ``t`` broadcast against ``active``.

        Raises
        ------
        ConfigError
            If ``t`` or ``period`` is not a whole number, ``t < period``, or ``active`` is negative.
        """
        params = self._params()
        period = float(_periods("period", period, 0))
        t = _periods("t", t, 0)
        if np.any(t < period):
            raise ConfigError(f"t must be at least period = {period:g} (projections run forward); got {t[t < period][:5].tolist()}")
        active = np.asarray(active, dtype=float)
        if np.any(~np.isfinite(active) | (active < 0)):
            raise ConfigError(f"active must be finite and >= 0 (customers); got {active[~(active >= 0) | ~np.isfinite(active)][:5].tolist()}")
        log_ratio = _log_survival(params, t)[0] - _log_survival(params, np.array([period]))[0][0]
        return active * np.exp(log_ratio)

    def expected_residual_lifetime(self, renewals, *, discount_rate: float) -> np.ndarray:
        """Return the discounted expected residual lifetime (DERL) of a customer who has renewed ``renewals`` times (eq. 6 of [2]_).

        The customer is at the end of period ``renewals + 1`` and about to decide on the next
        renewal. DERL counts the payments still to come, one per period in which the customer is
        active, each discounted to now; the next one is due now and is not discounted:
        ``sum_{j >= 0} S(renewals + 1 + j) / S(renewals) / (1 + d)^j``. In closed form, with
        ``n = renewals + 1``:
        ``DERL = B(alpha, beta + n) / B(alpha, beta + n - 1) * 2F1(1, beta + n; alpha + beta + n; 1 / (1 + d))``.
        Multiplied by the payment per period, it is the expected residual lifetime value. The
        2F1 is evaluated as the series it stands for (see :func:`_residual_lifetime`), which stays
        exact where scipy's hyp2f1 does not.

        Parameters
        ----------
        renewals : int or array_like of int
            Renewals made so far (n - 1 in [2]_); whole numbers >= 0.
        discount_rate : float
            Discount rate per contract period, d >= 0. With d = 0 the value is the undiscounted
            expected number of further payments, ``(beta + renewals) / (alpha - 1)``, which is
            infinite when alpha <= 1.

        Returns
        -------
        numpy.ndarray
            Same shape as ``renewals``; in payments (periods).

        Raises
        ------
        ConfigError
            If ``renewals`` is not a whole number >= 0, ``discount_rate`` is negative or NaN, or
            the series needs more than 2**22 terms (a discount rate below about 1e-5 per period).

        References
        ----------
        .. [2] Fader, P. S. and Hardie, B. G. S. (2010). Customer-base valuation in a contractual
           setting: the perils of ignoring heterogeneity. Marketing Science 29(1), 85-93.
        """
        alpha, beta = self._params()
        check_range("discount_rate", discount_rate, low=0.0)
        renewals = _periods("renewals", renewals, 0)
        if renewals.size == 0:
            return renewals
        return _residual_lifetime(alpha, beta, renewals, float(discount_rate))
