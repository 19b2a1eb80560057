"""The BG/NBD model of repeat purchasing (Fader, Hardie and Lee 2005).

While alive, a customer buys as a Poisson process with rate ``lambda ~ Gamma(r, alpha)``; after each
purchase they drop out with probability ``p ~ Beta(a, b)``. A customer is summarised by

=============  =========  ================================================================
business word  symbol     meaning
=============  =========  ================================================================
frequency      ``x``      repeat purchases (purchases after the first)
recency        ``t_x``    time from the first purchase to the last one (0 when ``x`` is 0)
T              ``T``      time from the first purchase to the end of the observation period
=============  =========  ================================================================

with ``t_x`` and ``T`` in one time unit of the caller's choice; ``alpha`` is then in that unit and
all other parameters are unit-free.

References
----------
.. [1] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). "Counting your customers" the easy way:
   an alternative to the Pareto/NBD model. Marketing Science 24(2), 275-284.
.. [2] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). Implementing the BG/NBD model for
   customer base analysis in Excel. http://brucehardie.com/notes/004/
.. [3] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2008). Computing P(alive) using the BG/NBD
   model. http://brucehardie.com/notes/021/
"""

from __future__ import annotations

import numpy as np
from scipy.special import betainc, betaln, digamma, gammaln, hyp2f1, xlogy

from revopt.errors import ConfigError
from revopt.models._fitting import (
    MaximumLikelihoodModel,
    compress,
    fit_maximum_likelihood,
    unique_rows,
    validate_summary,
    weighted_sum,
)

__all__ = ["BetaGeoModel"]

PARAMS = ("r", "alpha", "a", "b")

# Half-width of the bands around the removable singularities of eq. 9 (see _expected). At the band
# edges the closed form loses about eps / 1e-5 ~ 1e-11 (relative) to cancellation. Inside the band
# the linear interpolation errs by less than 1e-9 (4e-10 measured at a = 1), since eq. 9 is smooth.
_NEAR_SINGULAR = 1e-5


# Up to this many purchases the Beta-function ratio is summed term by term. Beyond it the
# gammaln difference is used, so the cost stays bounded for extreme counts.
_MAX_SUMMED_PURCHASES = 10_000


def log_beta_ratio(a: float, b: float, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``ln[B(a, b + n) / B(a, b)]`` for whole ``n >= 0``, and its derivatives in a and b.

    The ratio is the product over ``k < n`` of ``(b + k) / (a + b + k)``, summed here as
    ``-log1p(a / (b + k))``. Four gammaln values give the same number but cancel catastrophically once
    ``a + b`` is large: at ``a + b`` = 1e80 they return noise of order 1e69, which an optimizer then
    climbs. The sum stays exact at any scale.
    """
    n = np.asarray(n, dtype=float)
    whole = n.astype(np.int64)
    top = int(whole.max(initial=0))
    if top > _MAX_SUMMED_PURCHASES:
        value = gammaln(a + b) + gammaln(b + n) - gammaln(b) - gammaln(a + b + n)
        d_a = digamma(a + b) - digamma(a + b + n)
        return value, d_a, d_a + digamma(b + n) - digamma(b)
    k = np.arange(top, dtype=float)
    zero = np.zeros(1)
    value = np.concatenate([zero, np.cumsum(-np.log1p(a / (b + k)))])[whole]
    d_a = np.concatenate([zero, np.cumsum(-1.0 / (a + b + k))])[whole]
    d_b = np.concatenate([zero, np.cumsum(a / ((b + k) * (a + b + k)))])[whole]
    return value, d_a, d_b


def _x_terms(params: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ln A1 + ln A2 and their gradient: the part of the likelihood that depends on x only.

    The individual likelihood of [1]_ is ``A1 A2 (A3 + delta(x > 0) A4)`` in the notation of [2]_
    (section 3), with ``A1 = Gamma(r + x) alpha^r / Gamma(r)`` and
    ``A2 = Gamma(a + b) Gamma(b + x) / (Gamma(b) Gamma(a + b + x))``.
    """
    r, alpha, a, b = params

    log_a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    log_a2, d_a, d_b = log_beta_ratio(a, b, x)

    d_r = digamma(r + x) - digamma(r) + np.log(alpha)
    d_alpha = np.broadcast_to(r / alpha, x.shape)
    return log_a1 + log_a2, np.stack([d_r, d_alpha, d_a, d_b])


def _period_terms(params: np.ndarray, x, t_x, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ln(A3 + delta(x > 0) A4) of [2]_, its gradient, and P(alive).

    ``A3 = (alpha + T)^-(r + x)`` and ``A4 = a / (b + x - 1) (alpha + t_x)^-(r + x)`` are the rest of the
    likelihood of [1]_.

    ``A3`` is the likelihood of "still alive at T" and ``A4`` of "dropped out right after the last
    purchase", so P(alive) is the share of ``A3`` in ``A3 + A4`` ([3]_). Every fit evaluates this
    function tens of times. It works with ``d = ln A4 - ln A3``, so one exp and one log1p give the
    log-sum and both shares without overflow.
    """
    r, alpha, a, b = params
    rx = r + x
    b_x = b + np.maximum(x - 1.0, 0.0)  # b + x - 1; the clamp only keeps x = 0 rows finite (A4 absent)

    log_alpha_T = np.log(alpha + T)
    log_alpha_tx = np.log(alpha + t_x)
    no_a4 = np.where(x > 0, 0.0, -np.inf)
    d = no_a4 + np.log(a) - np.log(b_x) - rx * (log_alpha_tx - log_alpha_T)
    e = np.exp(-np.abs(d))
    log_l = -rx * log_alpha_T + np.maximum(d, 0.0) + np.log1p(e)  # logaddexp(ln A3, ln A4)
    dead = np.where(d > 0, 1.0, e) / (1.0 + e)  # A4 / (A3 + A4), the logistic function of d

    d_r = -log_alpha_T + dead * (log_alpha_T - log_alpha_tx)
    d_alpha = -rx * ((1.0 - dead) / (alpha + T) + dead / (alpha + t_x))
    d_a = dead / a
    d_b = -dead / b_x
    return log_l, np.stack([d_r, d_alpha, d_a, d_b]), 1.0 - dead


class _Likelihood:
    """Weighted BG/NBD log-likelihood on compressed rows; gammaln and digamma run once per distinct x."""

    def __init__(self, x, t_x, T, weights) -> None:
        (self.x, self.t_x, self.T), self.w = compress(x, t_x, T, weights=weights)
        # compress sorts by x first, so each distinct x is one run of rows
        starts = np.flatnonzero(np.diff(self.x, prepend=-1.0))
        self.x_values = self.x[starts]
        self.w_by_x = np.add.reduceat(self.w, starts)

    def __call__(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        x_ll, x_grad = _x_terms(params, self.x_values)
        period_ll, period_grad, _ = _period_terms(params, self.x, self.t_x, self.T)
        # Multiply-and-sum rather than `@`: see _fitting.weighted_sum.
        value = weighted_sum(x_ll, self.w_by_x) + weighted_sum(period_ll, self.w)
        return float(value), weighted_sum(x_grad, self.w_by_x) + weighted_sum(period_grad, self.w)


# Above this a + b, Var(p) of the dropout probability is below 2.5e-4, so the second-order
# expansion used when the closed form overflows is accurate to about Var(p)^2, 1e-7 relative.
_CONCENTRATED = 1e3


def _expected_given_alive(t, r, alpha, a, b):
    """Compute E[X(t)] of eq. 9 of [1]_ for parameters (r, alpha, a, b), in a form that stays finite.

    Eq. 9 reads ``(a + b - 1) / (a - 1) [1 - (alpha / (alpha + t))^r 2F1(r, b; a + b - 1; z)]`` with
    ``z = t / (alpha + t)``. For the posterior parameters of eq. 10 (``r + x``, ``b + x``) this 2F1
    has two large parameters and scipy returns NaN once x is in the hundreds. Euler's
    transformation ``2F1(A, B; C; z) = (1 - z)^(C - A - B) 2F1(C - A, C - B; C; z)`` (Abramowitz and
    Stegun 1964, 15.3.3) gives the same value as
    ``(1 + t / alpha)^(1 - a) 2F1(a + b - 1 - r, a - 1; a + b - 1; z)``, whose first two parameters do
    not grow with x. The tests compare it with quadrature of the defining integral over the dropout
    probability, for x up to 300, and find agreement to 1e-8 or better.
    """
    z = t / (alpha + t)
    with np.errstate(invalid="ignore", over="ignore"):
        power = np.exp((1.0 - a) * np.log1p(t / alpha))
        closed_form = (a + b - 1.0) / (a - 1.0) * (1.0 - power * hyp2f1(a + b - 1.0 - r, a - 1.0, a + b - 1.0, z))
    if np.all(np.isfinite(closed_form)):
        return closed_form
    # With a + b in the thousands or more (a fit where every customer has nearly the same dropout
    # probability), 2F1 overflows while the power underflows. p ~ Beta(a, b) is then concentrated at
    # m = a / (a + b), and E[X(t)] = E_p[g(p)] with g(p) = (1 - (1 + p t / alpha)^-r) / p is
    # g(m) + g''(m) Var(p) / 2 up to terms of order Var(p)^2, Var(p) = m (1 - m) / (a + b + 1).
    m = a / (a + b)
    variance = m * (1.0 - m) / (a + b + 1.0)
    k = t / alpha
    u = -np.expm1(-r * np.log1p(m * k))
    du = r * k * np.exp((-r - 1.0) * np.log1p(m * k))
    d2u = -r * (r + 1.0) * k**2 * np.exp((-r - 2.0) * np.log1p(m * k))
    curvature = d2u / m - 2.0 * du / m**2 + 2.0 * u / m**3
    limit = u / m + 0.5 * curvature * variance
    return np.where(np.isfinite(closed_form), closed_form, np.where(a + b > _CONCENTRATED, limit, np.nan))


def _expected(t, r, alpha, a, b):
    """:func:`_expected_given_alive`, stepping across its two removable singularities.

    The closed form is 0/0 at ``a = 1`` and 0 * inf at ``a + b = 1``, where the third parameter of
    2F1 is 0 and 2F1 has a pole. Eq. 9 itself is smooth in both. Within ``_NEAR_SINGULAR`` of either point the
    value is interpolated linearly between the two edges of the band.
    """
    if abs(a - 1.0) >= _NEAR_SINGULAR:
        return _expected_off_pole(t, r, alpha, a, b)
    low = _expected_off_pole(t, r, alpha, 1.0 - _NEAR_SINGULAR, b)
    high = _expected_off_pole(t, r, alpha, 1.0 + _NEAR_SINGULAR, b)
    return low + (a - 1.0 + _NEAR_SINGULAR) / (2.0 * _NEAR_SINGULAR) * (high - low)


def expected_given_history(t, r, alpha, a, b, x, big_t, *, b_shift: float = 0.0) -> np.ndarray:
    """Compute :func:`_expected` at the posterior parameters ``r + x``, ``alpha + T``, ``a``, ``b + x + b_shift``.

    The value does not depend on recency. A shop has far fewer distinct (x, T) pairs than histories
    (22,886 against 618,923 in a simulated log of a million customers), so the hypergeometric
    function runs once per pair. A ``t`` with one value per customer is evaluated row by row.
    """
    if t.ndim and t.shape[-1] != 1:
        return _expected(t, r + x, alpha + big_t, a, b + x + b_shift)
    (pair_x, pair_t), inverse = unique_rows(x, big_t)
    return _expected(t, r + pair_x, alpha + pair_t, a, b + pair_x + b_shift)[..., inverse]


def _expected_off_pole(t, r, alpha, a, b):
    """:func:`_expected_given_alive` with the band around ``a + b = 1`` interpolated."""
    c = a + b - 1.0  # b is b + x per customer, so only x = 0 can come near 0
    near = np.abs(c) < _NEAR_SINGULAR
    if not np.any(near):
        return _expected_given_alive(t, r, alpha, a, b)
    low = _expected_given_alive(t, r, alpha, a, np.where(near, 1.0 - a - _NEAR_SINGULAR, b))
    high = _expected_given_alive(t, r, alpha, a, np.where(near, 1.0 - a + _NEAR_SINGULAR, b))
    return np.where(near, low + (c + _NEAR_SINGULAR) / (2.0 * _NEAR_SINGULAR) * (high - low), low)


class BetaGeoModel(MaximumLikelihoodModel):
    """BG/NBD model fitted by maximum likelihood on compressed (frequency, recency, T) rows.

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
    .. [1] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). "Counting your customers" the easy
       way: an alternative to the Pareto/NBD model. Marketing Science 24(2), 275-284.

    Examples
    --------
    >>> model = BetaGeoModel().fit(
    ...     frequency=[0, 2, 5, 1, 0, 3, 1, 6, 0, 2],
    ...     recency=[0, 30, 36, 2, 0, 8, 25, 37, 0, 5],
    ...     T=[38] * 10,
    ... )
    >>> {name: round(value, 2) for name, value in model.params_.items()}
    {'r': 0.67, 'alpha': 6.33, 'a': 2.07, 'b': 8.31}
    >>> model.probability_alive([1, 6], [2, 37], [38, 38]).round(3)
    array([0.197, 0.847])
    >>> model.expected_purchases(10, [1, 6], [2, 37], [38, 38]).round(3)
    array([0.07 , 1.149])
    """

    name = "bg_nbd"
    param_names = PARAMS
    _fit_call = "fit(frequency, recency, T)"

    # --- fitting ------------------------------------------------------------------------------

    def fit(self, frequency, recency, T, *, weights=None) -> BetaGeoModel:
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
        BetaGeoModel
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
        .. [1] Fader, Hardie and Lee (2005), Marketing Science 24(2).
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
            model="BG/NBD",
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
        .. [1] Fader, Hardie and Lee (2005), Marketing Science 24(2).
        """
        params = self._params()
        x, t_x, big_t = self._customers(frequency, recency, T)
        return _x_terms(params, x)[0] + _period_terms(params, x, t_x, big_t)[0]

    def probability_alive(self, frequency, recency, T) -> np.ndarray:
        """Return the probability that each customer is still active at the end of the period, P(tau > T).

        ``1 / (1 + delta(x > 0) a / (b + x - 1) ((alpha + T) / (alpha + t_x))^(r + x))`` ([1]_),
        computed as the share of A3 in A3 + A4 so that it cannot overflow. Customers with no repeat
        purchase are alive with probability 1 under this model.

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
        .. [1] Fader, Hardie and Lee (2008). Computing P(alive) using the BG/NBD model.
           http://brucehardie.com/notes/021/
        """
        params = self._params()
        return _period_terms(params, *self._customers(frequency, recency, T))[2]

    def expected_purchases(self, t, frequency, recency, T) -> np.ndarray:
        """Return the expected purchases in (T, T + t] given each customer's history (eq. 10 of [1]_).

        Eq. 10 equals P(alive) times eq. 9 with the posterior parameters ``r + x``, ``alpha + T``,
        ``a``, ``b + x``; eq. 9 is evaluated in a form that cannot overflow (see
        :func:`_expected_given_alive`).

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

        References
        ----------
        .. [1] Fader, Hardie and Lee (2005), Marketing Science 24(2).
        """
        params = self._params()
        r, alpha, a, b = params
        x, t_x, big_t = self._customers(frequency, recency, T)
        alive = _period_terms(params, x, t_x, big_t)[2]
        return alive * expected_given_history(_check_t(t), r, alpha, a, b, x, big_t)

    def expected_purchases_new_customer(self, t) -> np.ndarray:
        """Return the expected purchases in (0, t] of a customer just acquired, E[X(t)] (eq. 9 of [1]_).

        Parameters
        ----------
        t : float or array_like
            Length of the period, in the time unit of the data; non-negative.

        Returns
        -------
        numpy.ndarray
            Same shape as ``t``.

        References
        ----------
        .. [1] Fader, Hardie and Lee (2005), Marketing Science 24(2).
        """
        r, alpha, a, b = self._params()
        return _expected(_check_t(t), r, alpha, a, b)

    def probability_of_n_purchases(self, t, n) -> np.ndarray:
        """Return the probability that a customer just acquired makes exactly ``n`` repeat purchases
        in (0, t], P(X(t) = n) (eq. 8 of [1]_).

        Eq. 8 is ``B(a, b + n) / B(a, b) NB(n) + delta(n > 0) B(a + 1, b + n - 1) / B(a, b) S(n)``,
        where ``NB(j) = Gamma(r + j) / (Gamma(r) j!) (alpha / (alpha + t))^r (t / (alpha + t))^j`` is
        the negative binomial count of a customer who stays alive, and
        ``S(n) = 1 - sum_{j < n} NB(j)`` is its tail. The first term is evaluated in logs. The tail
        of a negative binomial is a regularised incomplete beta function, ``S(n) = I_z(n, r)`` with
        ``z = t / (alpha + t)``, and is evaluated as such. So neither a sum over j nor
        Gamma(r + n) is formed, the tail does not lose its digits to cancellation, and large ``n``
        stays finite.

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

        References
        ----------
        .. [1] Fader, Hardie and Lee (2005), Marketing Science 24(2), eq. 8.

        Examples
        --------
        >>> model = BetaGeoModel().fit([0, 2, 5, 1, 0, 3, 1, 6, 0, 2], [0, 30, 36, 2, 0, 8, 25, 37, 0, 5], [38] * 10)
        >>> model.probability_of_n_purchases(38, [0, 1, 2]).round(3)
        array([0.27 , 0.27 , 0.157])
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
            betaln(a, b + n) - betaln(a, b)
            + gammaln(r + n) - gammaln(r) - gammaln(n + 1.0)
            - r * np.log1p(t / alpha)  # r ln(alpha / (alpha + t))
            + xlogy(n, z)  # 0 at n = 0, also when t = 0
        )
        n_positive = np.maximum(n, 1.0)  # keeps betaln and betainc defined at n = 0, where the term is absent
        log_dropped = betaln(a + 1.0, b + n_positive - 1.0) - betaln(a, b)
        dropped = np.where(n > 0, np.exp(log_dropped) * betainc(n_positive, r, z), 0.0)
        return np.exp(log_stay_alive) + dropped  # eq. 8


def _check_t(t) -> np.ndarray:
    t = np.asarray(t, dtype=float)
    bad = ~(np.isfinite(t) & (t >= 0))
    if np.any(bad):
        raise ConfigError(f"t must be in [0, inf); got {t[bad][:5].tolist()}")
    return t
