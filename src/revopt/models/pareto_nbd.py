"""The Pareto/NBD model of repeat purchasing (Schmittlein, Morrison and Colombo 1987).

While alive, a customer buys as a Poisson process with rate ``lambda ~ Gamma(r, alpha)``. The
unobserved lifetime is exponential with rate ``mu ~ Gamma(s, beta)``, independent of ``lambda``. A
customer is summarised by

=============  =========  ================================================================
business word  symbol     meaning
=============  =========  ================================================================
frequency      ``x``      repeat purchases (purchases after the first)
recency        ``t_x``    time from the first purchase to the last one (0 when ``x`` is 0)
T              ``T``      time from the first purchase to the end of the observation period
=============  =========  ================================================================

with ``t_x`` and ``T`` in one time unit of the caller's choice. ``alpha`` and ``beta`` are then in
that unit, and ``r`` and ``s`` are unit-free.

Every quantity of the model that conditions on a history goes through the integral

    I(t) = int_t^inf (alpha + u)^-(r + x) (beta + u)^-(s + 1) du,

which is, up to factors that do not depend on ``t``, the likelihood of x purchases followed by
dropout at u, integrated over dropout times u after ``t`` (lambda and mu integrated out). In closed
form it is a Gaussian hypergeometric function, ``2F1(r + s + x, s + 1; r + s + x + 1; z)`` with
``z = (alpha - beta) / (alpha + t)`` when alpha >= beta, and the same with the roles of the two
processes exchanged otherwise ([2]_, eq. 19 and 20). Two parameters of that 2F1 grow with ``x``, and
scipy's ``hyp2f1`` returns inf or NaN for customers with hundreds of purchases when z is not small. This module applies
Euler's transformation, which leaves ``2F1(1, P; P + Q; z)`` times powers that are kept in logs, and
evaluates that 2F1 and its derivatives by Gauss's continued fraction (see :func:`_log_hyp2f1_cf`).

References
----------
.. [1] Schmittlein, D. C., Morrison, D. G. and Colombo, R. (1987). Counting your customers: who are
   they and what will they do next? Management Science 33(1), 1-24.
.. [2] Fader, P. S. and Hardie, B. G. S. (2005). A note on deriving the Pareto/NBD model and related
   expressions. http://brucehardie.com/notes/009/
.. [3] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). A note on implementing the Pareto/NBD
   model in MATLAB.
.. [4] Fader, P. S. and Hardie, B. G. S. (2006). Deriving an expression for P(X(t) = x) under the
   Pareto/NBD model. http://brucehardie.com/notes/012/
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import betaln, digamma, expit, exprel, gammaln, hyperu, logsumexp, xlogy

from revopt.errors import ConfigError, DataQualityWarning
from revopt.models._fitting import (
    MaximumLikelihoodModel,
    compress,
    fit_maximum_likelihood,
    unique_rows,
    validate_summary,
    weighted_sum,
)

__all__ = ["ParetoNBDModel"]

PARAMS = ("r", "alpha", "s", "beta")

# Gauss's continued fraction stops once the bound on its remaining tail (see _log_hyp2f1_cf) falls
# below this relative tolerance, a few ulps above double precision.
_CF_TOLERANCE = 1e-14
# A change at the level of rounding carries no information about the tail, so a change this many
# ulps large also ends the fraction. The error is then about that much times the tail factor, which
# is what rounding allows near z = 1.
_CF_ROUNDING = 16 * np.finfo(float).eps
# Steps needed (measured, P and Q from 0.1 to 300): at most 32 at z = 0.5, 256 at z = 0.99, 2,048
# at 1 - z = 1e-4 and 16,384 at 1 - z = 1e-6. As 1 - z is min(alpha, beta) / max(alpha, beta) at
# t = 0, this limit covers rates whose time scales differ by a factor of up to about 10^6. Pairs
# that need more steps are returned as NaN.
_CF_MAX_STEPS = 20_000
# Convergence is checked, and finished pairs are dropped, every this many steps.
_CF_STEPS_PER_CHECK = 8

# The power series behind the P(X(t) = n) formula: the terms are summed in blocks of this many, up
# to _SERIES_MAX_TERMS, until the bound on the remaining tail falls below _SERIES_TOLERANCE times
# the sum.
_SERIES_BLOCK = 64
_SERIES_MAX_TERMS = 1 << 17
_SERIES_TOLERANCE = 1e-16


# --- the hypergeometric function ----------------------------------------------------------------


def _log_hyp2f1_cf(P: np.ndarray, Q: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Return ``ln G`` and its partial derivatives in P, Q and z, for ``G = 2F1(1, P; P + Q; z)``.

    Requires P > 0, Q > 0 and 0 <= z < 1, elementwise. ``G`` is Gauss's continued fraction for
    the ratio ``2F1(a, b + 1; c + 1; z) / 2F1(a, b; c; z)``, taken with ``a = P``, ``b = 0`` and
    ``c = P + Q - 1`` so that the denominator is 1:

        G = 1 / (1 - k_1 z / (1 - k_2 z / (1 - ...))),
        k_(2n+1) = (P + n)(P + Q - 1 + n) / ((P + Q - 1 + 2n)(P + Q + 2n)),
        k_(2n) = n (Q - 1 + n) / ((P + Q + 2n - 2)(P + Q + 2n - 1)).

    Every ``k`` is positive and tends to 1/4, so the fraction converges for all z < 1, geometrically
    with ratio ``rho = (1 - w) / (1 + w)``, ``w = sqrt(1 - z)``, per step. The power series of G
    converges with ratio z, which is far slower near z = 1. The numerators and denominators of the
    convergents follow the three-term (Wallis) recurrence. Differentiating that recurrence gives the
    derivatives with no extra evaluations. ``G`` lies between 1 and ``(P + Q - 1) / (Q - 1)`` (or
    ``(1 - z)^(Q - 1)`` times a bounded factor when Q < 1), so it needs no logs.

    Parameters
    ----------
    P, Q, z : numpy.ndarray, shape (n,)

    Returns
    -------
    numpy.ndarray, shape (4, n)
        Rows ``ln G``, ``d ln G / dP``, ``d ln G / dQ``, ``d ln G / dz``. Columns whose fraction has
        not converged within ``_CF_MAX_STEPS`` steps are NaN.
    """
    result = np.full((4, P.size), np.nan)
    active = np.arange(P.size)
    C = P + Q
    w = np.sqrt(1.0 - z)
    # The convergents increase to G. Over the last two steps the change shrinks by rho^2 per two
    # steps, so what is left after it is at most change * rho^2 / (1 - rho^2) = change * tail_factor.
    tail_factor = (1.0 - w) ** 2 / (4.0 * w)
    # The numerator A and denominator B of the convergents of 1 - k_1 z / (1 - ...), for the two
    # previous steps. Axis 0 is (A, B), axis 1 is (value, d/dP, d/dQ, d/dz).
    older = np.zeros((2, 4, P.size))
    older[0, 0] = 1.0
    old = np.zeros((2, 4, P.size))
    old[:, 0] = 1.0
    partial = np.zeros((4, P.size))  # the partial numerator's derivatives, in rows 1 to 3
    step = 0
    while active.size and step < _CF_MAX_STEPS:
        for _ in range(_CF_STEPS_PER_CHECK):
            step += 1
            n = step // 2
            if step % 2:  # k_(2n+1)
                first, second, third, fourth = P + n, C - 1.0 + n, C - 1.0 + 2 * n, C + 2 * n
                k = first * second / (third * fourth)
                dlogk_dq = 1.0 / second - 1.0 / third - 1.0 / fourth
                dlogk_dp = 1.0 / first + dlogk_dq
            else:  # k_(2n)
                second, third, fourth = Q - 1.0 + n, C + 2 * n - 2.0, C + 2 * n - 1.0
                k = n * second / (third * fourth)
                dlogk_dp = -1.0 / third - 1.0 / fourth
                dlogk_dq = 1.0 / second + dlogk_dp
            a = -k * z  # the partial numerator of this step
            partial[1], partial[2], partial[3] = a * dlogk_dp, a * dlogk_dq, -k
            if step % _CF_STEPS_PER_CHECK == _CF_STEPS_PER_CHECK - 1:
                back = old
            older, old = old, old + a * older + partial * older[:, :1]

        # The recurrence is linear and homogeneous, so one common factor rescales it without
        # changing any ratio. Rescaling keeps the numbers near 1, as they shrink by up to 1/2 a step.
        scale = 1.0 / old[0, 0]
        older, old, back = older * scale, old * scale, back / back[0, 0]

        value, value_back = old[1, 0], back[1, 0]  # G = B / A, and A is now 1
        gradient = old[1, 1:] / value - old[0, 1:]
        gradient_back = back[1, 1:] / value_back - back[0, 1:]
        # The derivatives converge a little more slowly than G. Their changes are measured against
        # the size of the two terms of d ln G = dB / B - dA / A, which may cancel.
        gradient_scale = np.abs(old[1, 1:] / value) + np.abs(old[0, 1:])
        allowed = _CF_TOLERANCE + _CF_ROUNDING * tail_factor
        done = ((value - value_back) * tail_factor <= allowed * value) & np.all(
            np.abs(gradient - gradient_back) * tail_factor <= allowed * gradient_scale, axis=0
        )
        finished = active[done]
        result[0, finished] = np.log(value[done])
        result[1:, finished] = gradient[:, done]
        keep = ~done
        active, P, Q, C, z, tail_factor = active[keep], P[keep], Q[keep], C[keep], z[keep], tail_factor[keep]
        older, old, partial = older[..., keep], old[..., keep], partial[:, keep]
    return result


def _hypergeometric_terms(params: np.ndarray, x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``ln G`` at ``z(t)`` for (x, t) pairs and its gradient in (r, alpha, s, beta).

    With ``a = r + s + x``, Euler's transformation ``2F1(A, B; C; z) = (1 - z)^(C - A - B)
    2F1(C - A, C - B; C; z)`` (Abramowitz and Stegun 1964, 15.3.3) turns the integral of the module
    docstring into

        I(t) = (big + t)^-P (small + t)^-(Q - 1) G(z) / a,    z = (big - small) / (big + t),

    where ``big, small = alpha, beta`` and ``P, Q = r + x, s + 1`` when alpha >= beta, and
    ``big, small = beta, alpha`` and ``P, Q = s + 1, r + x`` otherwise. Only ``G`` is computed
    here; the powers are taken in logs by the callers.
    """
    r, alpha, s, beta = params
    alpha_form = alpha >= beta
    P, Q = (r + x, np.full(x.shape, s + 1.0)) if alpha_form else (np.full(x.shape, s + 1.0), r + x)
    big, small = (alpha, beta) if alpha_form else (beta, alpha)
    z = (big - small) / (big + t)

    log_g, d_p, d_q, d_z = _log_hyp2f1_cf(P, Q, z)
    d_big = d_z * (small + t) / (big + t) ** 2
    d_small = -d_z / (big + t)
    gradient = [d_p, d_big, d_q, d_small] if alpha_form else [d_q, d_small, d_p, d_big]
    return log_g, np.stack(gradient)


# --- the likelihood and P(alive) -----------------------------------------------------------------


def _x_terms(params: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``ln(Gamma(r + x) alpha^r beta^s / Gamma(r))`` and its gradient: the factor of the
    likelihood ([2]_, eq. 18) that depends on x only."""
    r, alpha, s, beta = params
    value = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    d_r = digamma(r + x) - digamma(r) + np.log(alpha)
    return value, np.stack([d_r, np.full(x.shape, r / alpha), np.full(x.shape, np.log(beta)), np.full(x.shape, s / beta)])


def _log_expm1(delta: np.ndarray) -> np.ndarray:
    """Return ``ln(e^delta - 1)`` for delta >= 0 without overflow, and -inf at delta = 0."""
    with np.errstate(divide="ignore"):
        return delta + np.log(-np.expm1(-delta))


def _period_terms(params, x, t_x, T, g_tx, g_T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``ln(E (1 + D))``, the rest of the log-likelihood, its gradient, and P(alive).

    The likelihood of [2]_ (eq. 18) is the factor of :func:`_x_terms` times ``E (1 + D)``, with
    ``E = (alpha + T)^-(r + x) (beta + T)^-s``, the likelihood of being alive at T, and
    ``D = s (I(t_x) - I(T)) / E``, the odds of having dropped out between t_x and T. So
    P(alive) = 1 / (1 + D) ([2]_, eq. 36 and 37). ``D`` is formed in logs from
    ``ell = ln I(T) - ln E`` and ``delta = ln I(t_x) - ln I(T)`` as
    ``ln D = ln s + ell + ln(e^delta - 1)``. ``delta`` is built from ``log1p`` terms of ``T - t_x``
    and the difference of two ``ln G``, so it keeps its relative precision when t_x is close to T.

    ``g_tx`` and ``g_T`` are the (ln G, gradient) pairs of :func:`_hypergeometric_terms` at t_x and T.
    """
    r, alpha, s, beta = params
    (log_g_tx, grad_g_tx), (log_g_T, grad_g_T) = g_tx, g_T
    alpha_form = alpha >= beta
    rx = r + x
    a = rx + s
    gap = T - t_x
    log_alpha_T, log_beta_T = np.log(alpha + T), np.log(beta + T)

    log_e = -rx * log_alpha_T - s * log_beta_T
    ell = log_g_T - np.log(a) + (0.0 if alpha_form else log_alpha_T - log_beta_T)
    # The powers of (alpha + t) and (beta + t) in I(t): r + x and s when alpha >= beta, else r + x - 1 and s + 1.
    power_alpha, power_beta = (rx, s) if alpha_form else (rx - 1.0, s + 1.0)
    log1p_alpha, log1p_beta = np.log1p(gap / (alpha + t_x)), np.log1p(gap / (beta + t_x))
    delta = power_alpha * log1p_alpha + power_beta * log1p_beta + log_g_tx - log_g_T
    # delta >= 0 because I decreases in t. A negative value is rounding, when t_x is within about
    # 1e-12 of T, and there D is 0 to working precision.
    delta = np.maximum(delta, 0.0)

    log_d = np.log(s) + ell + _log_expm1(delta)
    with np.errstate(invalid="ignore"):  # NaN from an unconverged fraction, reported by the caller
        log_1p_d = np.logaddexp(0.0, log_d)
    dead = expit(log_d)  # D / (1 + D)
    # d ln(1 + D) / d delta = s exp(ell + delta) / (1 + D), which stays finite at delta = 0, where D is 0.
    delta_weight = np.exp(np.log(s) + ell + delta - log_1p_d)

    zero = np.zeros_like(gap)
    grad_e = np.stack([-log_alpha_T, -rx / (alpha + T), -log_beta_T, -s / (beta + T)])
    explicit_ell = (
        [-1.0 / a, zero, -1.0 / a, zero] if alpha_form else [-1.0 / a, 1.0 / (alpha + T), -1.0 / a, -1.0 / (beta + T)]
    )
    grad_log_d = grad_g_T + np.stack(np.broadcast_arrays(*explicit_ell)) + np.array([0.0, 0.0, 1.0 / s, 0.0])[:, None]
    grad_delta = grad_g_tx - grad_g_T + np.stack([
        log1p_alpha,
        -power_alpha * gap / ((alpha + t_x) * (alpha + T)),
        log1p_beta,
        -power_beta * gap / ((beta + t_x) * (beta + T)),
    ])
    gradient = grad_e + dead * grad_log_d + delta_weight * grad_delta
    return log_e + log_1p_d, gradient, expit(-log_d)


class _Histories:
    """Distinct (x, t_x, T) rows, and the distinct (x, t) pairs at which they need ``G``.

    ``G`` depends on a row only through (x, t_x) and (x, T). On CDNOW master (weekly), 8,685 distinct
    rows share 2,149 distinct pairs, so the continued fraction runs on a quarter as many values.
    """

    def __init__(self, x, t_x, T) -> None:
        self.x, self.t_x, self.T = x, t_x, T
        (self.pair_x, self.pair_t), inverse = unique_rows(np.concatenate([x, x]), np.concatenate([t_x, T]))
        self.at_t_x, self.at_T = inverse[: x.size], inverse[x.size :]

    def period_terms(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return :func:`_period_terms` for every row."""
        log_g, gradient = _hypergeometric_terms(params, self.pair_x, self.pair_t)
        g_tx = log_g[self.at_t_x], gradient[:, self.at_t_x]
        g_T = log_g[self.at_T], gradient[:, self.at_T]
        return _period_terms(params, self.x, self.t_x, self.T, g_tx, g_T)


class _Likelihood(_Histories):
    """Weighted Pareto/NBD log-likelihood on compressed rows. gammaln and digamma run once per distinct x."""

    def __init__(self, x, t_x, T, weights) -> None:
        (x, t_x, T), self.w = compress(x, t_x, T, weights=weights)
        super().__init__(x, t_x, T)
        starts = np.flatnonzero(np.diff(self.x, prepend=-1.0))  # compress sorts by x first
        self.x_values = self.x[starts]
        self.w_by_x = np.add.reduceat(self.w, starts)

    def __call__(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        x_ll, x_grad = _x_terms(params, self.x_values)
        period_ll, period_grad, _ = self.period_terms(params)
        # Multiply-and-sum rather than `@`: see _fitting.weighted_sum.
        value = weighted_sum(x_ll, self.w_by_x) + weighted_sum(period_ll, self.w)
        return float(value), weighted_sum(x_grad, self.w_by_x) + weighted_sum(period_grad, self.w)


# --- predictions --------------------------------------------------------------------------------


def _expected_new(t, r, alpha, s, beta):
    """Return E[X(t)] of a customer alive at time 0 with parameters (r, alpha, s, beta).

    ``E[X(t)] = r beta / (alpha (s - 1)) [1 - (beta / (beta + t))^(s - 1)]`` ([1]_; [2]_,
    eq. 27). With ``L = ln(1 + t / beta)`` the bracket over ``s - 1`` is ``L exprel((1 - s) L)``,
    which is smooth through s = 1, where the closed form is 0/0 and the value is ``L``.
    """
    log_ratio = np.log1p(t / beta)
    return r / alpha * beta * log_ratio * exprel((1.0 - s) * log_ratio)


def _log_hyp2f1_series(a, b, c, z) -> np.ndarray:
    """Return ``ln 2F1(a, b; c; z)`` for a, b, c > 0 and 0 <= z < 1 (arrays broadcast together).

    Sums the power series ``sum_k term_k``, ``term_k = (a)_k (b)_k / ((c)_k k!) z^k``, in logs, block
    by block. Every term is positive, so nothing cancels. The ratio of successive terms is
    ``z (a + k)(b + k) / ((c + k)(k + 1))``. Each of ``(a + k) / (k + 1)``, ``(b + k) / (c + k)``,
    ``(a + k) / (c + k)`` and ``(b + k) / (k + 1)`` is monotone in k, so for k >= K the ratio stays
    below ``rho``, the smaller of ``z max(1, (a + K) / (K + 1)) max(1, (b + K) / (c + K))`` and the
    same with a and b exchanged. Once rho < 1 the tail after ``term_K`` is at most
    ``term_K rho / (1 - rho)``. Values whose tail bound is not below ``_SERIES_TOLERANCE`` times the
    sum after ``_SERIES_MAX_TERMS`` terms are NaN.
    """
    a, b, c, z = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (a, b, c, z)))
    shape = a.shape
    a, b, c, z = (v.reshape(-1, 1) for v in (a, b, c, z))
    with np.errstate(divide="ignore"):
        log_z = np.log(z)
    total = np.zeros(a.shape)  # ln of the sum so far, starting from term_0 = 1
    last = np.zeros(a.shape)  # ln of the last term added
    done = np.zeros(a.shape, dtype=bool)
    for start in range(0, _SERIES_MAX_TERMS, _SERIES_BLOCK):
        k = np.arange(start, start + _SERIES_BLOCK, dtype=float)
        log_ratio = np.log((a + k) * (b + k) / ((c + k) * (k + 1.0))) + log_z  # ln(term_(k+1) / term_k)
        log_terms = last + np.cumsum(log_ratio, axis=1)
        total = np.logaddexp(total, logsumexp(log_terms, axis=1, keepdims=True))
        last = log_terms[:, -1:]

        K = start + _SERIES_BLOCK  # last is ln term_K
        rho = z * np.minimum(
            np.maximum(1.0, (a + K) / (K + 1.0)) * np.maximum(1.0, (b + K) / (c + K)),
            np.maximum(1.0, (b + K) / (K + 1.0)) * np.maximum(1.0, (a + K) / (c + K)),
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            log_tail = last + np.log(rho) - np.log1p(-rho)
        done |= (rho < 1.0) & (log_tail < total + np.log(_SERIES_TOLERANCE))
        if done.all():
            break
    return np.where(done, total, np.nan).reshape(shape)


def _log_integral_from_zero(j, n, r, s, big, small, big_is_alpha):
    """Return ``ln int_0^inf v^j (A + v)^-(r + n) (B + v)^-(s + 1) dv`` for the P(X(t) = n) formula.

    ``A`` and ``B`` are ``alpha + t`` and ``beta + t``; ``big`` and ``small`` are the larger and the
    smaller of them. With ``p = r + s + n - j`` the integral is
    ``B(j + 1, p) big^-p 2F1(p, e; r + s + n + 1; 1 - small / big)``, where ``e`` is the power on the
    smaller offset ([4]_, as in :func:`_hypergeometric_terms`). When that is ``r + n``, the series
    would grow like ``(1 - z)^-(r + n)``, so Euler's transformation is applied first; when it is
    ``s + 1`` the series converges without it.
    """
    p = r + s + n - j
    c = r + s + n + 1.0
    z = (big - small) / big
    if big_is_alpha:
        log_f = _log_hyp2f1_series(p, s + 1.0, c, z)
    else:
        log_f = (j + 1.0 - r - n) * np.log1p(-z) + _log_hyp2f1_series(j + 1.0, s + 1.0, c, z)
    return betaln(j + 1.0, p) - p * np.log(big) + log_f


def _probability_of_n(params, t: np.ndarray, n: int) -> np.ndarray:
    """Return P(X(t) = n) for a customer just acquired, for each t > 0 (see
    :meth:`ParetoNBDModel.probability_of_n_purchases`)."""
    r, alpha, s, beta = params
    log_nb_coefficient = gammaln(r + n) - gammaln(r) - gammaln(n + 1.0)
    alive = np.exp(
        log_nb_coefficient - r * np.log1p(t / alpha) + xlogy(n, t / (alpha + t)) - s * np.log1p(t / beta)
    )

    alpha_is_big = alpha >= beta
    big, small = (alpha, beta) if alpha_is_big else (beta, alpha)
    log_whole = _log_integral_from_zero(float(n), n, r, s, big, small, alpha_is_big)
    # int_t^inf u^n ... du, with u = t + v and u^n expanded binomially: every term is positive.
    j = np.arange(n + 1, dtype=float)[:, None]
    tail_terms = (
        gammaln(n + 1.0) - gammaln(j + 1.0) - gammaln(n - j + 1.0)
        + (n - j) * np.log(t)
        + _log_integral_from_zero(j, n, r, s, big + t, small + t, alpha_is_big)
    )
    log_tail = logsumexp(tail_terms, axis=0)
    # NOTE: int_0^t = int_0^inf - int_t^inf cancels when little of the integral lies before t
    # (large n, short t). The absolute error stays near 1e-16 times P(dropped out after exactly n
    # purchases, at any time), so probabilities far below that lose their relative precision, and a
    # difference that rounding makes negative is set to 0.
    log_scale = log_nb_coefficient + r * np.log(alpha) + np.log(s) + s * np.log(beta) + log_whole
    dropped = np.exp(log_scale) * np.maximum(-np.expm1(log_tail - log_whole), 0.0)
    return alive + dropped


# The upward recurrence of _discounted_lifetime_integral is used for z up to this value. Its rounding
# error grows by at most about e^z, and scipy's hyperu returns inf or NaN there when s is large.
_RECURRENCE_MAX_Z = 10.0


def _discounted_lifetime_integral(s: float, z: np.ndarray) -> np.ndarray:
    """Return ``J(s, z) = int_0^inf e^(-z u) (1 + u)^-s du = U(1, 2 - s, z)`` for z > 0.

    ``U`` is Tricomi's confluent hypergeometric function. For s above 1.5 and z up to
    ``_RECURRENCE_MAX_Z``, scipy's ``hyperu`` returns inf or NaN or loses digits, so J is taken from
    s0 in (0.5, 1.5] upward by ``J(s + 1, z) = (1 - z J(s, z)) / s`` (integration by parts).
    """
    value = hyperu(1.0, 2.0 - s, z)
    steps = max(int(np.ceil(s - 1.5)), 0)
    if steps:
        near = z <= _RECURRENCE_MAX_Z
        s0 = s - steps
        # NOTE: near z = 10 with s0 close to 1, scipy 1.x hyperu itself is off by up to about 1e-5
        # relative (measured against quadrature).
        recurred = hyperu(1.0, 2.0 - s0, z[near])
        for k in range(steps):
            recurred = (1.0 - z[near] * recurred) / (s0 + k)
        value[near] = recurred
    return value


def _check_t(t) -> np.ndarray:
    t = np.asarray(t, dtype=float)
    bad = ~(np.isfinite(t) & (t >= 0))
    if np.any(bad):
        raise ConfigError(f"t must be in [0, inf); got {t[bad][:5].tolist()}")
    return t


def _warn_if_unconverged(values: np.ndarray, quantity: str, params: np.ndarray) -> None:
    missing = int(np.count_nonzero(np.isnan(values)))
    if missing:
        _, alpha, _, beta = params
        warnings.warn(
            DataQualityWarning(
                f"Pareto/NBD: {quantity} is NaN for {missing} of {values.size} values because a hypergeometric "
                f"series or continued fraction did not converge within its step limit. That happens when alpha "
                f"({alpha:.4g}) and beta ({beta:.4g}) are far apart: beyond a ratio of about 10^6 for the "
                f"likelihood, P(alive) and expected purchases, and a few thousand for P(X(t) = n)"
            ),
            stacklevel=3,
        )


class ParetoNBDModel(MaximumLikelihoodModel):
    """Pareto/NBD model fitted by maximum likelihood on compressed (frequency, recency, T) rows.

    Parameters
    ----------
    max_iterations : int, default 1000
        Iteration limit for the BFGS solver.

    Attributes
    ----------
    params_ : dict of str to float
        ``r``, ``alpha`` (purchase rate ``lambda ~ Gamma(r, alpha)``, alpha in the time unit of the
        data), ``s``, ``beta`` (dropout rate ``mu ~ Gamma(s, beta)``, beta in that unit).
    standard_errors_ : dict of str to float
        Asymptotic standard errors (NaN if the information matrix is singular).
    log_likelihood_ : float
        Sample log-likelihood at the estimates.
    fit_result_ : FitResult
        Everything the solver reported.

    Notes
    -----
    The likelihood and P(alive) use the integral ``I(t)`` of the module docstring, evaluated with
    Gauss's continued fraction after Euler's transformation. Results stay finite for customers with
    hundreds of purchases and for a last purchase just before T. The gradient is analytic, including
    the derivatives of the hypergeometric function in its parameters.

    References
    ----------
    .. [1] Schmittlein, Morrison and Colombo (1987), Management Science 33(1).
    .. [2] Fader and Hardie (2005), http://brucehardie.com/notes/009/
    .. [3] Fader, Hardie and Lee (2005), A note on implementing the Pareto/NBD model in MATLAB.

    Examples
    --------
    >>> model = ParetoNBDModel().fit(
    ...     frequency=[0, 2, 5, 1, 0, 3, 1, 6, 0, 2],
    ...     recency=[0, 30, 36, 2, 0, 8, 25, 37, 0, 5],
    ...     T=[38] * 10,
    ... )
    >>> {name: round(value, 1) for name, value in model.params_.items()}
    {'r': 8.0, 'alpha': 82.3, 's': 0.4, 'beta': 5.6}
    >>> model.probability_alive([1, 6], [2, 37], [38, 38]).round(3)
    array([0.069, 0.989])
    >>> model.expected_purchases(10, [1, 6], [2, 37], [38, 38]).round(3)
    array([0.049, 1.097])
    >>> model.probability_of_n_purchases(38, [0, 1, 2]).round(3)
    array([0.331, 0.186, 0.139])
    """

    name = "pareto_nbd"
    param_names = PARAMS
    _fit_call = "fit(frequency, recency, T)"

    # --- fitting ------------------------------------------------------------------------------

    def fit(self, frequency, recency, T, *, weights=None) -> ParetoNBDModel:
        """Estimate r, alpha, s, beta by maximum likelihood (the likelihood of [1]_, eq. 18 of [2]_).

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
        ParetoNBDModel
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
        .. [1] Schmittlein, Morrison and Colombo (1987), Management Science 33(1).
        .. [2] Fader and Hardie (2005), http://brucehardie.com/notes/009/
        """
        data = validate_summary(frequency, recency, T, weights=weights)
        likelihood = _Likelihood(data["frequency"], data["recency"], data["T"], data["weights"])
        n_customers = float(data["weights"].sum())
        # alpha and beta are time scales: starting both at the mean T makes the search path the same
        # in any time unit, and alpha = beta starts the continued fraction at z = 0.
        mean_T = weighted_sum(data["T"], data["weights"]) / n_customers
        result = fit_maximum_likelihood(
            likelihood,
            (1.0, mean_T, 1.0, mean_T),
            PARAMS,
            n_customers=n_customers,
            n_distinct=likelihood.x.size,
            model="Pareto/NBD",
            max_iterations=self.max_iterations,
        )
        self._store(result)
        return self

    def _customer_terms(self, frequency, recency, T) -> tuple[np.ndarray, dict, np.ndarray, np.ndarray]:
        """Return the fitted parameters, the validated summary, and per customer ``ln(E (1 + D))``
        and P(alive) (see :func:`_period_terms`)."""
        params = self._params()
        data = validate_summary(frequency, recency, T)
        rows, inverse = unique_rows(data["frequency"], data["recency"], data["T"])
        period_ll, _, alive = _Histories(*rows).period_terms(params)
        return params, data, period_ll[inverse], alive[inverse]

    # --- per-customer quantities ----------------------------------------------------------------

    def log_likelihood(self, frequency, recency, T) -> np.ndarray:
        """Return the log-likelihood of each customer's history at the fitted parameters ([1]_, eq. 18).

        Parameters
        ----------
        frequency, recency, T : array_like, shape (n,)
            As in :meth:`fit`.

        Returns
        -------
        numpy.ndarray, shape (n,)

        References
        ----------
        .. [1] Fader and Hardie (2005), http://brucehardie.com/notes/009/
        """
        params, data, period_ll, _ = self._customer_terms(frequency, recency, T)
        values = _x_terms(params, data["frequency"])[0] + period_ll
        _warn_if_unconverged(values, "the log-likelihood", params)
        return values

    def probability_alive(self, frequency, recency, T) -> np.ndarray:
        """Return the probability that each customer is still active at the end of the period, P(tau > T).

        ``P(alive) = 1 / (1 + D)`` with ``D = s (I(t_x) - I(T)) (alpha + T)^(r + x) (beta + T)^s``
        ([1]_; [2]_, eq. 36 and 37), ``I`` as in the module docstring. ``D`` is computed in
        logs (see :func:`_period_terms`). A customer whose last purchase is at T has P(alive) = 1.

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
        .. [1] Schmittlein, Morrison and Colombo (1987), Management Science 33(1).
        .. [2] Fader and Hardie (2005), http://brucehardie.com/notes/009/
        """
        params, _, _, alive = self._customer_terms(frequency, recency, T)
        _warn_if_unconverged(alive, "P(alive)", params)
        return alive

    def expected_purchases(self, t, frequency, recency, T) -> np.ndarray:
        """Return the expected purchases in (T, T + t] given each customer's history.

        ``P(alive) (r + x) (beta + T) / ((alpha + T)(s - 1)) [1 - ((beta + T) / (beta + T + t))^(s - 1)]``
        ([1]_, eq. 22; [2]_, eq. 41): P(alive) times the expectation for a new customer with the
        posterior parameters ``r + x``, ``alpha + T``, ``s``, ``beta + T``. The bracket over
        ``s - 1`` is evaluated in a form that is smooth through s = 1 (see :func:`_expected_new`).

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
        .. [1] Schmittlein, Morrison and Colombo (1987), Management Science 33(1).
        .. [2] Fader and Hardie (2005), http://brucehardie.com/notes/009/
        """
        t = _check_t(t)
        params, data, _, alive = self._customer_terms(frequency, recency, T)
        r, alpha, s, beta = params
        x, big_t = data["frequency"], data["T"]
        expected = alive * _expected_new(t, r + x, alpha + big_t, s, beta + big_t)
        _warn_if_unconverged(alive, "the expected number of purchases", params)
        return expected

    def discounted_expected_residual_purchases(self, frequency, recency, T, *, discount_rate) -> np.ndarray:
        """Return the discounted expected residual transactions (DERT) of each customer after T.

        DERT is ``int_0^inf e^(-delta u) dE[X(T, T + u)]``, the present value at T of all future
        purchases, with ``delta = discount_rate``. Fader, Hardie and Lee ([1]_, eq. 2) give

            DERT = alpha^r beta^s delta^(s - 1) Gamma(r + x + 1) U(s, s; delta (beta + T))
                   / (Gamma(r) (alpha + T)^(r + x + 1) L),

        with ``L`` the likelihood of the history and ``U`` Tricomi's confluent hypergeometric
        function. This method evaluates the same quantity in the factored form

            DERT = P(alive) (r + x) / (alpha + T) (beta + T) U(1, 2 - s; delta (beta + T)),

        which follows from ``E[lambda | alive] = (r + x) / (alpha + T)``, ``mu | alive ~ Gamma(s,
        beta + T)``, ``E[1 / (mu + delta)] = b U(1, 2 - s; delta b)`` for ``b = beta + T``, and
        Kummer's transformation ``U(s, s; z) = z^(1 - s) U(1, 2 - s; z)``. P(alive) comes from the
        likelihood code in logs, and the other factors stay moderate, so the result is finite for
        customers with hundreds of purchases. As delta tends to 0 the value tends to
        ``P(alive) (r + x) (beta + T) / ((alpha + T)(s - 1))`` when s > 1, and grows without bound
        like ``delta^(s - 1)`` when s < 1.

        Parameters
        ----------
        frequency, recency, T : array_like, shape (n,)
            As in :meth:`fit`.
        discount_rate : float or array_like
            Continuously compounded discount rate ``delta`` per time unit of the data; positive. An
            annual rate ``d`` becomes ``ln(1 + d) / 52`` per week, for example, and that conversion
            is the caller's. Broadcast against the customers, so ``discount_rate[:, None]`` gives
            one row per rate.

        Returns
        -------
        numpy.ndarray
            Shape of ``discount_rate`` broadcast against (n,); expected purchases, unit-free.

        Raises
        ------
        ConfigError
            If ``discount_rate`` is not positive and finite.
        NotFittedError
            If the model is not fitted.

        References
        ----------
        .. [1] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). RFM and CLV: using iso-value
           curves for customer base analysis. Journal of Marketing Research 42(4), 415-430.
        """
        delta = np.asarray(discount_rate, dtype=float)
        bad = ~(np.isfinite(delta) & (delta > 0))
        if np.any(bad):
            raise ConfigError(f"discount_rate must be in (0, inf); got {delta[bad][:5].tolist()}")
        params, data, _, alive = self._customer_terms(frequency, recency, T)
        r, alpha, s, beta = params
        x, big_t = data["frequency"], data["T"]
        lifetime_scale = beta + big_t
        z = np.broadcast_to(delta * lifetime_scale, np.broadcast_shapes(delta.shape, x.shape))
        integral = _discounted_lifetime_integral(s, z.ravel()).reshape(z.shape)
        values = alive * (r + x) / (alpha + big_t) * lifetime_scale * integral
        _warn_if_unconverged(values, "the discounted expected residual transactions", params)
        return values

    def expected_purchases_new_customer(self, t) -> np.ndarray:
        """Return the expected purchases in (0, t] of a customer just acquired, E[X(t)].

        ``E[X(t)] = r beta / (alpha (s - 1)) [1 - (beta / (beta + t))^(s - 1)]`` ([1]_; [2]_,
        eq. 27), evaluated smoothly through s = 1.

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
        .. [1] Schmittlein, Morrison and Colombo (1987), Management Science 33(1).
        .. [2] Fader and Hardie (2005), http://brucehardie.com/notes/009/
        """
        r, alpha, s, beta = self._params()
        return _expected_new(_check_t(t), r, alpha, s, beta)

    def probability_of_n_purchases(self, t, n) -> np.ndarray:
        """Return the probability that a customer just acquired makes exactly ``n`` repeat purchases
        in (0, t], P(X(t) = n) ([1]_).

        The customer either stays alive through t, which gives the negative binomial count
        ``NB(n; t) = Gamma(r + n) / (Gamma(r) n!) (alpha / (alpha + t))^r (t / (alpha + t))^n`` times
        the survival ``(beta / (beta + t))^s``, or drops out at some u < t after exactly n purchases:

            P(X(t) = n) = NB(n; t) (beta / (beta + t))^s
                          + Gamma(r + n) / (Gamma(r) n!) alpha^r s beta^s
                            int_0^t u^n (alpha + u)^-(r + n) (beta + u)^-(s + 1) du.

        As in [1]_, the integral is the one over (0, inf) minus a sum of n + 1 positive integrals
        over (t, inf), each a Gaussian hypergeometric function, here summed in logs.

        Parameters
        ----------
        t : float or array_like
            Length of the period, in the time unit of the data; non-negative.
        n : int or array_like
            Number of repeat purchases; whole, non-negative.

        Returns
        -------
        numpy.ndarray
            Shape of ``t`` and ``n`` broadcast together; values in [0, 1], summing to 1 over n. The
            absolute error is about 1e-16 times the largest probability in the distribution, so a
            probability far below that has no correct digits (see the NOTE in
            :func:`_probability_of_n`).

        Raises
        ------
        ConfigError
            If ``t`` is negative or not finite, or ``n`` is not a whole non-negative number.
        NotFittedError
            If the model is not fitted.

        References
        ----------
        .. [1] Fader and Hardie (2006), http://brucehardie.com/notes/012/
        """
        params = self._params()
        t = _check_t(t)
        n = np.asarray(n, dtype=float)
        bad = ~(np.isfinite(n) & (n >= 0) & (n == np.floor(n)))
        if np.any(bad):
            raise ConfigError(f"n must be a whole number in [0, inf); got {n[bad][:5].tolist()}")
        t, n = np.broadcast_arrays(t, n)

        result = np.where(n == 0, 1.0, 0.0)  # X(0) = 0
        positive = t > 0
        for count in np.unique(n[positive]):
            rows = positive & (n == count)
            result[rows] = _probability_of_n(params, t[rows], int(count))
        _warn_if_unconverged(result, "P(X(t) = n)", params)
        return result
