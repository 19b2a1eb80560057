"""The MBG/NBD model of repeat purchasing (Batislam, Denizel and Filiztekin 2007).

The MBG/NBD changes one assumption of the BG/NBD (:mod:`revopt.models.bgnbd`). While alive, a
customer buys as a Poisson process with rate ``lambda ~ Gamma(r, alpha)``, and drops out with
probability ``p ~ Beta(a, b)`` right after each purchase, the first purchase included. So a customer
with no repeat purchase may already be gone, and P(alive) < 1 for every customer. A customer is
summarised by

=============  =========  ================================================================
business word  symbol     meaning
=============  =========  ================================================================
frequency      ``x``      repeat purchases (purchases after the first)
recency        ``t_x``    time from the first purchase to the last one (0 when ``x`` is 0)
T              ``T``      time from the first purchase to the end of the observation period
=============  =========  ================================================================

with ``t_x`` and ``T`` in one time unit of the caller's choice; ``alpha`` is then in that unit and
all other parameters are unit-free.

The individual likelihood is ``A1 A2' (A3 + A4')`` with ``A1`` and ``A3`` as in the BG/NBD,
``A2' = B(a, b + x + 1) / B(a, b)`` (the customer survived x + 1 drop-out chances) and
``A4' = a / (b + x) (alpha + t_x)^-(r + x)`` (the customer dropped out after the last purchase),
for every x including 0 ([1]_).

References
----------
.. [1] Batislam, E. P., Denizel, M. and Filiztekin, A. (2007). Empirical validation and comparison
   of models for customer base analysis. International Journal of Research in Marketing 24(3),
   201-209.
"""

from __future__ import annotations

import numpy as np
from scipy.special import betainc, betaln, digamma, gammaln, xlogy

from revopt.errors import ConfigError

from revopt.models._fitting import (
    MaximumLikelihoodModel,
    compress,
    fit_maximum_likelihood,
    validate_summary,
    weighted_sum,
)
from revopt.models.bgnbd import _check_t, _expected, expected_given_history, log_beta_ratio

__all__ = ["ModifiedBetaGeoModel"]

PARAMS = ("r", "alpha", "a", "b")


def _x_terms(params: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ln A1 + ln A2' and their gradient: the part of the likelihood that depends on x only.

    ``A1 = Gamma(r + x) alpha^r / Gamma(r)`` and ``A2' = Gamma(a + b) Gamma(b + x + 1) /
    (Gamma(b) Gamma(a + b + x + 1))``.
    """
    r, alpha, a, b = params

    log_a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    # The ratio of Beta functions summed term by term, exact when a + b is huge (see bgnbd.log_beta_ratio).
    log_a2, d_a, d_b = log_beta_ratio(a, b, x + 1.0)

    d_r = digamma(r + x) - digamma(r) + np.log(alpha)
    d_alpha = np.broadcast_to(r / alpha, x.shape)
    return log_a1 + log_a2, np.stack([d_r, d_alpha, d_a, d_b])


def _period_terms(params: np.ndarray, x, t_x, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ln(A3 + A4'), its gradient, and P(alive at T).

    ``A3 = (alpha + T)^-(r + x)`` is the likelihood of "still alive at T" and
    ``A4' = a / (b + x) (alpha + t_x)^-(r + x)`` of "dropped out right after the last purchase", so
    P(alive) is the share of ``A3`` in the sum ([1]_). The function works
    with ``d = ln A4' - ln A3``: one exp and one log1p give the log-sum and both shares without
    overflow, for any x.
    """
    r, alpha, a, b = params
    rx = r + x

    log_alpha_T = np.log(alpha + T)
    log_alpha_tx = np.log(alpha + t_x)
    d = np.log(a) - np.log(b + x) - rx * (log_alpha_tx - log_alpha_T)
    e = np.exp(-np.abs(d))
    log_l = -rx * log_alpha_T + np.maximum(d, 0.0) + np.log1p(e)  # logaddexp(ln A3, ln A4')
    dead = np.where(d > 0, 1.0, e) / (1.0 + e)  # A4' / (A3 + A4'), the logistic function of d
    # A3 / (A3 + A4') from its own formula: 1 - dead would lose all digits once P(alive) < 1e-16.
    alive = np.where(d > 0, e, 1.0) / (1.0 + e)

    d_r = -log_alpha_T + dead * (log_alpha_T - log_alpha_tx)
    d_alpha = -rx * (alive / (alpha + T) + dead / (alpha + t_x))
    d_a = dead / a
    d_b = -dead / (b + x)
    return log_l, np.stack([d_r, d_alpha, d_a, d_b]), alive


class _Likelihood:
    """Weighted MBG/NBD log-likelihood on compressed rows; gammaln and digamma run once per distinct x."""

    def __init__(self, x, t_x, T, weights) -> None:
        (self.x, self.t_x, self.T), self.w = compress(x, t_x, T, weights=weights)
        # compress sorts by x first, so each distinct x is one run of rows
        starts = np.flatnonzero(np.diff(self.x, prepend=-1.0))
        self.x_values = self.x[starts]
        self.w_by_x = np.add.reduceat(self.w, starts)

    def __call__(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        x_ll, x_grad = _x_terms(params, self.x_values)
        period_ll, period_grad, _ = _period_terms(params, self.x, self.t_x, self.T)
        value = weighted_sum(x_ll, self.w_by_x) + weighted_sum(period_ll, self.w)
        return float(value), weighted_sum(x_grad, self.w_by_x) + weighted_sum(period_grad, self.w)


class ModifiedBetaGeoModel(MaximumLikelihoodModel):
    """MBG/NBD model fitted by maximum likelihood on compressed (frequency, recency, T) rows.

    Parameters
    ----------
    max_iterations : int, default 1000
        Iteration limit for the BFGS solver.

    Attributes
    ----------
    params_ : dict of str to float
        ``r``, ``alpha`` (in the time unit of the data), ``a``, ``b``.
    standard_errors_ : dict of str to float
        Asymptotic standard errors (NaN if the information matrix is singular).
    log_likelihood_ : float
        Sample log-likelihood at the estimates.
    fit_result_ : FitResult
        Everything the solver reported.

    References
    ----------
    .. [1] Batislam, E. P., Denizel, M. and Filiztekin, A. (2007). Empirical validation and
       comparison of models for customer base analysis. International Journal of Research in
       Marketing 24(3), 201-209.

    Examples
    --------
    >>> model = ModifiedBetaGeoModel().fit(
    ...     frequency=[0, 2, 5, 1, 0, 3, 1, 6, 0, 2],
    ...     recency=[0, 30, 36, 2, 0, 8, 25, 37, 0, 5],
    ...     T=[38] * 10,
    ... )
    >>> {name: round(value, 2) for name, value in model.params_.items()}
    {'r': 3.29, 'alpha': 24.96, 'a': 1.59, 'b': 4.38}
    >>> model.probability_alive([0, 1, 6], [0, 2, 37], [38, 38, 38]).round(3)
    array([0.116, 0.082, 0.849])
    >>> model.expected_purchases(10, [0, 1, 6], [0, 2, 37], [38, 38, 38]).round(3)
    array([0.056, 0.051, 1.139])
    """

    name = "mbg_nbd"
    param_names = PARAMS
    _fit_call = "fit(frequency, recency, T)"

    # --- fitting ------------------------------------------------------------------------------

    def fit(self, frequency, recency, T, *, weights=None) -> ModifiedBetaGeoModel:
        """Estimate r, alpha, a, b by maximum likelihood (the likelihood of [1]_ summed over customers).

        Parameters
        ----------
        frequency : array_like, shape (n,)
            Repeat purchases ``x``.
        recency : array_like, shape (n,)
            ``t_x``, time from first to last purchase.
        T : array_like, shape (n,)
            Time from first purchase to the end of the period, in the unit of ``recency``.
        weights : array_like, shape (n,), optional
            Number of customers each row represents (for pre-aggregated data). Default: 1 per row.

        Returns
        -------
        ModifiedBetaGeoModel
            ``self``, fitted.

        Raises
        ------
        InputError
            If a customer breaks an invariant (see :func:`revopt.models._fitting.validate_summary`).
        FitError
            If the likelihood cannot be evaluated at the start or end of the search.

        Warns
        -----
        ConvergenceWarning, DataQualityWarning
            See :func:`revopt.models._fitting.fit_maximum_likelihood`.

        References
        ----------
        .. [1] Batislam, Denizel and Filiztekin (2007), International Journal of Research in
           Marketing 24(3).
        """
        data = validate_summary(frequency, recency, T, weights=weights)
        likelihood = _Likelihood(data["frequency"], data["recency"], data["T"], data["weights"])
        n_customers = float(data["weights"].sum())
        # alpha is a time scale: starting it at the mean T makes the search path the same in any time unit.
        start = (1.0, weighted_sum(data["T"], data["weights"]) / n_customers, 1.0, 1.0)
        result = fit_maximum_likelihood(
            likelihood,
            start,
            PARAMS,
            n_customers=n_customers,
            n_distinct=likelihood.x.size,
            model="MBG/NBD",
            max_iterations=self.max_iterations,
        )
        self._store(result)
        return self

    def _customers(self, frequency, recency, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        data = validate_summary(frequency, recency, T)
        return data["frequency"], data["recency"], data["T"]

    # --- per-customer quantities ----------------------------------------------------------------

    def log_likelihood(self, frequency, recency, T) -> np.ndarray:
        """Return the log-likelihood of each customer's history at the fitted parameters ([1]_).

        Parameters
        ----------
        frequency, recency, T : array_like, shape (n,)
            As in :meth:`fit`.

        Returns
        -------
        numpy.ndarray, shape (n,)

        References
        ----------
        .. [1] Batislam, Denizel and Filiztekin (2007), International Journal of Research in
           Marketing 24(3).
        """
        params = self._params()
        x, t_x, big_t = self._customers(frequency, recency, T)
        return _x_terms(params, x)[0] + _period_terms(params, x, t_x, big_t)[0]

    def probability_alive(self, frequency, recency, T) -> np.ndarray:
        """Return the probability that each customer is still active at the end of the period.

        ``1 / (1 + a / (b + x) ((alpha + T) / (alpha + t_x))^(r + x))`` ([1]_),
        computed as the share of A3 in A3 + A4' so that it cannot overflow. Unlike the BG/NBD, a
        customer with no repeat purchase may already have dropped out.

        Parameters
        ----------
        frequency, recency, T : array_like, shape (n,)
            As in :meth:`fit`.

        Returns
        -------
        numpy.ndarray, shape (n,)
            Values in [0, 1].

        References
        ----------
        .. [1] Batislam, Denizel and Filiztekin (2007), International Journal of Research in
           Marketing 24(3).
        """
        params = self._params()
        return _period_terms(params, *self._customers(frequency, recency, T))[2]

    def expected_purchases(self, t, frequency, recency, T) -> np.ndarray:
        """Return the expected purchases in (T, T + t] given each customer's history.

        A customer alive at T has drop-out probability ``p ~ Beta(a, b + x + 1)`` and purchase rate
        ``lambda ~ Gamma(r + x, alpha + T)``, and from then on can drop out only after a purchase,
        as in the BG/NBD. So the result is P(alive) times eq. 9 of Fader, Hardie and Lee (2005) at
        ``(r + x, alpha + T, a, b + x + 1)``:
        ``(a + b + x) / (a - 1) [1 - ((alpha + T) / (alpha + T + t))^(r + x)
        2F1(r + x, b + x + 1; a + b + x; t / (alpha + T + t))]``. That expression is evaluated in
        the form of :func:`revopt.models.bgnbd._expected`, which stays finite for x in the hundreds
        and across a = 1.

        Parameters
        ----------
        t : float or array_like
            Length of the forecast period, in the time unit of the data; non-negative. Broadcast
            against the customers, so ``t[:, None]`` gives one row per period length.
        frequency, recency, T : array_like, shape (n,)
            As in :meth:`fit`.

        Returns
        -------
        numpy.ndarray
            Shape of ``t`` broadcast against (n,).

        Raises
        ------
        ConfigError
            If ``t`` is negative or not finite.
        """
        params = self._params()
        r, alpha, a, b = params
        x, t_x, big_t = self._customers(frequency, recency, T)
        alive = _period_terms(params, x, t_x, big_t)[2]
        return alive * expected_given_history(_check_t(t), r, alpha, a, b, x, big_t, b_shift=1.0)

    def expected_purchases_new_customer(self, t) -> np.ndarray:
        """Return the expected purchases in (0, t] of a customer just acquired, E[X(t)] ([1]_).

        ``b / (a - 1) [1 - (alpha / (alpha + t))^r 2F1(r, b + 1; a + b; t / (alpha + t))]``. The
        customer is still alive after the first purchase with probability ``b / (a + b)``, and then
        has ``p ~ Beta(a, b + 1)``. So the value is ``b / (a + b)`` times eq. 9 of Fader, Hardie and
        Lee (2005) at ``(r, alpha, a, b + 1)``, evaluated as in :meth:`expected_purchases`.

        Parameters
        ----------
        t : float or array_like
            Length of the period, in the time unit of the data; non-negative.

        Returns
        -------
        numpy.ndarray
            Same shape as ``t``.

        Raises
        ------
        ConfigError
            If ``t`` is negative or not finite.

        References
        ----------
        .. [1] Batislam, Denizel and Filiztekin (2007), International Journal of Research in
           Marketing 24(3).
        """
        r, alpha, a, b = self._params()
        return b / (a + b) * _expected(_check_t(t), r, alpha, a, b + 1.0)

    def probability_of_n_purchases(self, t, n) -> np.ndarray:
        """Return the probability that a customer just acquired makes exactly ``n`` repeat purchases
        in (0, t], P(X(t) = n).

        Derived here from the MBG/NBD assumptions, as eq. 8 of Fader, Hardie and Lee (2005) is for
        the BG/NBD. Given ``p`` and ``lambda``, X(t) = n happens in one of two ways. Either the
        customer survives the n + 1 drop-out chances at purchases 0 (the first purchase), ..., n and
        the Poisson process makes exactly n purchases in (0, t], with probability
        ``(1 - p)^(n + 1) Poisson(n; lambda t)``. Or the customer survives purchases 0, ..., n - 1,
        drops out right after purchase n, and purchase n falls in (0, t], with probability
        ``p (1 - p)^n P(Poisson(lambda t) >= n)``. For n = 0 the second way is the drop-out at time
        0, and the Poisson tail is 1. Integrating over ``p ~ Beta(a, b)`` and
        ``lambda ~ Gamma(r, alpha)`` gives

        ``B(a, b + n + 1) / B(a, b) NB(n) + B(a + 1, b + n) / B(a, b) S(n)``,

        where ``NB(j) = Gamma(r + j) / (Gamma(r) j!) (alpha / (alpha + t))^r (t / (alpha + t))^j``
        and ``S(n) = 1 - sum_{j < n} NB(j)``, with ``S(0) = 1``. This is ``a / (a + b)`` at n = 0
        plus ``b / (a + b)`` times eq. 8 of the BG/NBD at ``(r, alpha, a, b + 1)``. It is also the
        formula of lifetimes 0.11.3 ``ModifiedBetaGeoFitter.probability_of_n_purchases_up_to_time``,
        which forms ``S(n)`` as a sum and so loses its digits when ``S(n)`` is small. Here the first
        term is evaluated in logs, and the tail as the regularised incomplete beta function
        ``S(n) = I_z(n, r)`` with ``z = t / (alpha + t)``. So large ``n`` stays finite and accurate.

        Parameters
        ----------
        t : float or array_like
            Length of the period, in the time unit of the data; non-negative.
        n : int or array_like
            Number of repeat purchases; whole and non-negative. Broadcast against ``t``.

        Returns
        -------
        numpy.ndarray
            Shape of ``t`` and ``n`` broadcast together; values in [0, 1], summing to 1 over n.

        Raises
        ------
        ConfigError
            If ``t`` is negative or not finite, or ``n`` is not a whole non-negative number.
        NotFittedError
            If the model is not fitted.

        Examples
        --------
        >>> model = ModifiedBetaGeoModel().fit([0, 2, 5, 1, 0, 3, 1, 6, 0, 2], [0, 30, 36, 2, 0, 8, 25, 37, 0, 5], [38] * 10)
        >>> model.probability_of_n_purchases(38, [0, 1, 2]).round(3)
        array([0.302, 0.213, 0.152])
        """
        r, alpha, a, b = self._params()
        t = _check_t(t)
        n = np.asarray(n, dtype=float)
        bad = ~(np.isfinite(n) & (n >= 0) & (n == np.floor(n)))
        if np.any(bad):
            raise ConfigError(f"n must be a whole number in [0, inf); got {n[bad][:5].tolist()}")
        t, n = np.broadcast_arrays(t, n)

        z = t / (alpha + t)
        log_stay_alive = (
            betaln(a, b + n + 1.0) - betaln(a, b)
            + gammaln(r + n) - gammaln(r) - gammaln(n + 1.0)
            - r * np.log1p(t / alpha)  # r ln(alpha / (alpha + t))
            + xlogy(n, z)  # 0 at n = 0, also when t = 0
        )
        n_positive = np.maximum(n, 1.0)  # keeps betainc defined at n = 0, where S(0) = 1
        tail = np.where(n > 0, betainc(n_positive, r, z), 1.0)
        dropped = np.exp(betaln(a + 1.0, b + n) - betaln(a, b)) * tail
        return np.exp(log_stay_alive) + dropped
