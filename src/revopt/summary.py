"""Per-customer RFM summaries as Ibis expressions: the sufficient statistics of the CLV models.

For each customer, counted in business days and converted to the chosen time unit:

- ``frequency`` (x): purchases (purchase days) after the first, up to the calibration end;
- ``recency`` (t_x): time from the first to the last purchase in the calibration period;
- ``T``: time from the first purchase to the end of the calibration period;
- ``monetary_value``: mean net spend of the repeat purchases (NULL when frequency is 0).

The calibration period ends on ``calibration_end`` inclusive; T counts whole days from the first
purchase day to that day, as in Fader, Hardie and Lee's CDNOW examples (T = 38.86 weeks for a
first purchase on 1997-01-01 and a calibration end of 1997-09-30).
"""

from __future__ import annotations

import datetime as dt

import ibis
import numpy as np
import pandas as pd

from revopt.timeunits import DAYS_PER_UNIT, check_time_unit

__all__ = ["MIN_SPEND", "customer_summary", "compressed_statistics", "holdout_counts", "to_date"]

# Mean repeat spend at or below this (in currency units) counts as zero. Purchases and returns that
# cancel out sum to about 1e-13 either side of zero, and the sign then depends on the order in which
# the engine adds them.
MIN_SPEND = 1e-6


def customer_summary(purchases: ibis.Table, *, calibration_end: dt.date, time_unit: str = "week") -> ibis.Table:
    """Return one row per customer with first purchase in the calibration period.

    Parameters
    ----------
    purchases : ibis.Table
        Columns customer_id, order_date (date) and amount, one row per customer per purchase day.
    calibration_end : datetime.date
        Last day of the calibration period (inclusive).
    time_unit : {"day", "week", "month"}
        Unit of recency and T.

    Returns
    -------
    ibis.Table
        customer_id, first_purchase, last_purchase, purchases, frequency, recency_days, T_days,
        recency, T, revenue, monetary_value.
    """
    days_per_unit = DAYS_PER_UNIT[check_time_unit(time_unit)]
    end = ibis.date(calibration_end)
    calibration = purchases.filter(purchases.order_date <= end)
    # One aggregation, no window: a customer has one row per purchase day, so the first day's amount
    # is the amount at the earliest date, and repeat revenue is the rest. Plain aggregates spill to
    # disk in DuckDB, and a window over every purchase needs far more memory.
    grouped = calibration.group_by("customer_id").aggregate(
        first_purchase=calibration.order_date.min(),
        last_purchase=calibration.order_date.max(),
        purchases=calibration.count(),
        revenue=calibration.amount.sum(),
        first_amount=calibration.amount.argmin(calibration.order_date),
    )
    recency_days = grouped.last_purchase.delta(grouped.first_purchase, unit="day")
    T_days = end.delta(grouped.first_purchase, unit="day")
    frequency = grouped.purchases - 1
    return grouped.select(
        "customer_id",
        "first_purchase",
        "last_purchase",
        "purchases",
        frequency=frequency,
        recency_days=recency_days,
        T_days=T_days,
        # Cast first: Spark divides an integer by a literal in DECIMAL with 6 digits of scale.
        recency=recency_days.cast("float64") / days_per_unit,
        T=T_days.cast("float64") / days_per_unit,
        revenue=grouped.revenue,
        monetary_value=ibis.ifelse(frequency > 0, (grouped.revenue - grouped.first_amount) / frequency, None),
    )


def compressed_statistics(summary: ibis.Table) -> ibis.Table:
    """Collapse customers with identical (frequency, recency_days, T_days) to one row with a ``count``.

    Fitting cost then grows with distinct purchase histories, not with customers.
    """
    return summary.group_by(["frequency", "recency_days", "T_days"]).aggregate(count=summary.count())


def holdout_counts(purchases: ibis.Table, *, calibration_end: dt.date, holdout_end: dt.date) -> ibis.Table:
    """Count each customer's purchases and spend in the holdout period (calibration_end, holdout_end]."""
    window = purchases.filter(
        (purchases.order_date > ibis.date(calibration_end)) & (purchases.order_date <= ibis.date(holdout_end))
    )
    return window.group_by("customer_id").aggregate(
        holdout_purchases=window.count(), holdout_revenue=window.amount.sum()
    )


def to_date(value) -> dt.date | None:
    """Convert a date-like value from the engine to ``datetime.date``; None for NULL or NaT."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None
    return pd.Timestamp(value).date()
