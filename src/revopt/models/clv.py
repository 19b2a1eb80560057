"""Discounted customer lifetime value from a purchase model and an expected spend.

CLV over a horizon H is the sum, over steps of one time unit, of the expected purchases in the step
times the expected spend per purchase times the margin, each step discounted to today from its end:

    CLV = margin * spend * sum_k [E(t_k) - E(t_(k-1))] / (1 + d)^(t_k * days_per_unit / days_per_year)

with ``E(t)`` the conditional expected purchases in (T, T + t], ``t_k = min(k, H)`` (the last step
may be partial) and ``d`` the annual discount rate. It is a discrete-time counterpart of the
discounted expected residual transactions (DERT) that Fader, Hardie and Lee (2005) multiply by
expected spend to get CLV.

References
----------
.. [1] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). RFM and CLV: using iso-value curves for
   customer base analysis. Journal of Marketing Research 42(4), 415-430.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from revopt.errors import InputError, check_range
from revopt.models._fitting import require, unique_rows, validate_summary, weighted_sum
from revopt.timeunits import DAYS_PER_UNIT, DAYS_PER_YEAR, check_time_unit

__all__ = ["PurchaseModel", "customer_lifetime_value"]


class PurchaseModel(Protocol):
    """Anything with BG/NBD-style conditional expected purchases, such as :class:`BetaGeoModel`."""

    def expected_purchases(self, t, frequency, recency, T) -> np.ndarray: ...


# Distinct histories evaluated at once; with 52 steps each block's arrays are about 27 MB.
HISTORIES_PER_BLOCK = 65_536


def _step_ends(horizon: float) -> np.ndarray:
    """Return the end of each one-unit step in (0, horizon]. The last step ends at the horizon itself."""
    ends = np.arange(1.0, np.ceil(horizon) + 1.0)
    ends[-1] = horizon
    return ends


def customer_lifetime_value(
    purchase_model: PurchaseModel,
    expected_spend,
    frequency,
    recency,
    T,
    *,
    horizon: float,
    discount_rate: float,
    margin: float = 1.0,
    time_unit: str,
) -> np.ndarray:
    """Return the discounted expected margin of each customer over the next ``horizon`` time units.

    Parameters
    ----------
    purchase_model : PurchaseModel
        A fitted model (for example :class:`~revopt.models.BetaGeoModel`) whose time unit is
        ``time_unit``.
    expected_spend : float or array_like, shape (n,)
        Expected spend per purchase, for example from
        :meth:`~revopt.models.GammaGammaModel.expected_average_value`; must be >= 0. NaN (spend
        undefined) gives NaN, except where expected purchases are 0.
    frequency, recency, T : array_like, shape (n,)
        The customers' summaries, in ``time_unit``.
    horizon : float
        Length of the forecast, in ``time_unit``; > 0. A fractional end is one shorter last step.
    discount_rate : float
        Annual discount rate, >= 0 (0.1 for 10 % a year); converted to each step's length with
        :data:`revopt.timeunits.DAYS_PER_UNIT` and :data:`revopt.timeunits.DAYS_PER_YEAR`.
    margin : float, default 1.0
        Share of spend that is margin, in [0, 1].
    time_unit : {"day", "week", "month"}
        Unit of ``recency``, ``T``, ``horizon`` and the purchase model.

    Returns
    -------
    numpy.ndarray, shape (n,)
        CLV in the currency of ``expected_spend``; exactly 0 where expected purchases over the
        horizon are 0.

    Raises
    ------
    ConfigError
        If ``horizon``, ``discount_rate``, ``margin`` or ``time_unit`` is out of range.
    InputError
        If a customer breaks the summary invariants, or ``expected_spend`` is negative or infinite.
    NotFittedError
        If ``purchase_model`` is not fitted.

    References
    ----------
    .. [1] Fader, Hardie and Lee (2005), JMR 42(4).

    Examples
    --------
    A year of weekly steps at 10 % a year, 30 per order and a 30 % margin:

    >>> from revopt.models import BetaGeoModel
    >>> model = BetaGeoModel().fit([0, 2, 5, 1, 0, 3, 1, 6, 0, 2], [0, 30, 36, 2, 0, 8, 25, 37, 0, 5], [38] * 10)
    >>> customer_lifetime_value(
    ...     model, 30.0, [1, 6], [2, 37], [38, 38], horizon=52, discount_rate=0.1, margin=0.3, time_unit="week"
    ... ).round(2)
    array([ 2.62, 36.73])
    """
    check_range("horizon", horizon, low=0.0, low_inclusive=False)
    check_range("discount_rate", discount_rate, low=0.0)
    check_range("margin", margin, low=0.0, high=1.0)
    years_per_unit = DAYS_PER_UNIT[check_time_unit(time_unit)] / DAYS_PER_YEAR
    data = validate_summary(frequency, recency, T)
    spend = np.asarray(expected_spend, dtype=float)
    if spend.ndim > 1 or spend.size not in (1, data["frequency"].size):
        raise InputError(f"expected_spend has shape {spend.shape}; pass one number, or one value per customer ({data['frequency'].size})")
    spend = np.broadcast_to(spend, data["frequency"].shape)
    usable = np.isnan(spend) | ((spend >= 0) & np.isfinite(spend))
    require(usable, "expected_spend >= 0 and finite, or NaN where undefined", "expected spend per purchase is an amount of money")

    # Expected purchases depend on (x, t_x, T) only, so evaluate them once per distinct history.
    histories, inverse = unique_rows(data["frequency"], data["recency"], data["T"])
    ends = _step_ends(float(horizon))
    discount = (1.0 + discount_rate) ** -(ends * years_per_unit)  # each step discounted from its end
    discounted = np.empty(histories[0].size)
    total = np.empty(histories[0].size)
    # A block of histories at a time: one step per week of a year is 52 values per history, and
    # the model's intermediate arrays have that shape too.
    for start in range(0, histories[0].size, HISTORIES_PER_BLOCK):
        block = slice(start, start + HISTORIES_PER_BLOCK)
        cumulative = purchase_model.expected_purchases(ends[:, None], *(column[block] for column in histories))
        increments = np.diff(cumulative, axis=0, prepend=0.0)  # (steps, histories in the block)
        discounted[block] = weighted_sum(increments.T, discount)
        total[block] = cumulative[-1]
    discounted = discounted[inverse]
    total = total[inverse]

    value = margin * spend * discounted
    return np.where(total == 0.0, 0.0, value)
