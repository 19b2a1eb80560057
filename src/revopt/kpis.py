"""Business KPIs, period-over-period retention and cohort retention, computed as Ibis expressions.

Every step over transactions is an Ibis expression, so the same code runs on any Ibis backend
(the tests run it on DuckDB and PySpark). Only aggregated results come back to Python: one row of totals, one row per period, and
one row per (cohort, period) cell.

Periods are numbered by an integer index so that "the previous period" is ``index - 1`` and
"periods since the first purchase" is a difference of indices, on every backend:

- month: ``year * 12 + month - 1``, labelled ``YYYY-MM``;
- week: ISO weeks starting on Monday, counted from 1970-01-05 (the first Monday after the UNIX
  epoch), labelled by the Monday's date ``YYYY-MM-DD``.
"""

from __future__ import annotations

import datetime
import logging
import math

import ibis
import ibis.expr.types as ir
import pandas as pd

from revopt.errors import ConfigError, InputError
from revopt.i18n import catalog, detect_language

__all__ = ["PERIODS", "compute_kpis", "kpi_labels"]

logger = logging.getLogger(__name__)

PERIODS = ("month", "week")
MONTHS_PER_YEAR = 12
DAYS_PER_WEEK = 7
# Week indices count weeks from this Monday, the first after the UNIX epoch (1970-01-01 was a Thursday).
WEEK_INDEX_ORIGIN = datetime.date(1970, 1, 5)
WEEK_INDEX_ORIGIN_EPOCH_DAY = (WEEK_INDEX_ORIGIN - datetime.date(1970, 1, 1)).days
# A repeat customer bought on at least two different days.
REPEAT_MIN_PURCHASE_DAYS = 2

_LINES_COLUMNS = ("customer_id", "order_id", "order_date", "amount", "is_return")
_PURCHASES_COLUMNS = ("customer_id", "order_date", "amount")
_LABEL_PREFIX = "kpi."


def compute_kpis(lines: ir.Table, purchases: ir.Table, *, period: str = "month") -> dict:
    """Compute the summary KPIs, period-over-period retention and the cohort matrices.

    Parameters
    ----------
    lines : ibis.Table
        One row per kept order line, with columns ``customer_id`` (string, NULL for guest orders),
        ``order_id`` (string), ``order_date`` (date), ``amount`` (numeric, negative for returns and
        cancellations) and ``is_return`` (boolean).
    purchases : ibis.Table
        One row per customer per day with at least one non-return line, with columns
        ``customer_id`` (string, never NULL), ``order_date`` (date) and ``amount`` (numeric, the
        day's net spend).
    period : {"month", "week"}, default "month"
        Length of the retention and cohort periods. Weeks are ISO weeks starting on Monday.

    Returns
    -------
    dict
        Plain JSON-serialisable values (dates as ISO strings, undefined ratios as ``None``):

        - ``customers``: distinct customers with at least one purchase.
        - ``orders``: distinct order ids with a non-return line, guest orders included.
        - ``purchases``: rows of ``purchases`` (customer-days).
        - ``revenue``: net revenue, the sum of all line amounts (guests and returns included).
        - ``gross_revenue``: the sum of the positive amounts of non-return lines.
        - ``returns``: minus the sum of the return lines' amounts (a positive number).
        - ``revenue_without_customer_id``, ``orders_without_customer_id``: net revenue and orders
          of guest lines.
        - ``average_order_value``: ``revenue / orders``.
        - ``purchase_frequency``: ``purchases / customers``.
        - ``repeat_purchase_rate``: share of customers with purchases on at least two days.
        - ``first_date``, ``last_date``: first and last ``order_date`` of ``lines``.
        - ``retention``: one dict per period after the first, see Notes.
        - ``cohorts``: the cohort matrices, see Notes.

    Raises
    ------
    ConfigError
        If ``period`` is not one of :data:`PERIODS`.
    InputError
        If a required column is missing or has the wrong type, or ``purchases`` has NULL
        customer ids.

    Notes
    -----
    The periods run from the first to the last period that contains a line or a purchase, gaps
    included. The last period may be partly covered by the data.

    Each ``retention`` entry has ``period``, ``active_customers`` (customers with a purchase in
    the period), ``active_previous`` (the same in the previous period), ``retained`` (active in
    both), ``retention_rate = retained / active_previous`` and ``churn_rate = 1 - retention_rate``.
    Both rates are ``None`` when the previous period had no active customer, because the ratio is
    undefined there.

    ``cohorts`` groups customers by the period of their first purchase. It contains ``period``,
    ``cohorts`` (labels), ``periods_since`` (``0, 1, ...``), ``sizes`` and three matrices with one
    row per cohort and one column per ``periods_since``: ``customers`` (active customers of the
    cohort in that period), ``revenue`` (their net purchase revenue) and ``retention_rate``
    (``customers / size``). Cells of periods after the last period of the data are ``None``.
    """
    _check_period(period)
    _check_columns(lines, "lines", _LINES_COLUMNS)
    _check_columns(purchases, "purchases", _PURCHASES_COLUMNS)

    indexed_lines = lines.mutate(period_index=_period_index(lines.order_date, period))
    indexed_purchases = purchases.mutate(period_index=_period_index(purchases.order_date, period))

    summary, first_index, last_index = _summarise(indexed_lines, indexed_purchases)
    result = dict(summary)
    last_date = datetime.date.fromisoformat(result["last_date"]) if result["last_date"] else None
    result["retention"] = _retention(indexed_purchases, first_index, last_index, period, last_date=last_date)
    result["cohorts"] = _cohorts(indexed_purchases, last_index, period)

    logger.info(
        "kpis.computed period=%s customers=%d orders=%d periods=%d cohorts=%d",
        period,
        result["customers"],
        result["orders"],
        0 if first_index is None else last_index - first_index + 1,
        len(result["cohorts"]["cohorts"]),
    )
    return result


def kpi_labels(language: str) -> dict[str, str]:
    """Return the operator-facing KPI names in ``language``, keyed like :func:`compute_kpis` output.

    Parameters
    ----------
    language : {"zh-CN", "en"}
        Language of the labels.

    Raises
    ------
    ConfigError
        If ``language`` is not supported.
    """
    language = detect_language(language)
    return {
        message_id.removeprefix(_LABEL_PREFIX): texts[language]
        for message_id, texts in catalog().items()
        if message_id.startswith(_LABEL_PREFIX)
    }


# --- input checks ---------------------------------------------------------------------------


def _check_period(period: str) -> None:
    if period not in PERIODS:
        raise ConfigError(f"period {period!r} is not supported; use one of: {', '.join(PERIODS)}")


def _check_columns(table: ir.Table, table_name: str, required: tuple[str, ...]) -> None:
    schema = table.schema()
    missing = [name for name in required if name not in schema]
    if missing:
        raise InputError(
            f"{table_name} is missing the columns {', '.join(missing)}. "
            f"It needs {', '.join(required)}, and its columns are {', '.join(schema.names)}"
        )

    expected_types = {
        "order_date": ("date", lambda dtype: dtype.is_date()),
        "amount": ("numeric", lambda dtype: dtype.is_numeric()),
        "is_return": ("boolean", lambda dtype: dtype.is_boolean()),
    }
    for name, (type_name, has_type) in expected_types.items():
        if name in required and not has_type(schema[name]):
            raise InputError(
                f"{table_name}.{name} must be a {type_name} column; got {schema[name]}. "
                f"Cast it to {type_name} before computing KPIs"
            )


# --- periods ----------------------------------------------------------------------------------


def _period_index(order_date: ir.DateValue, period: str) -> ir.IntegerValue:
    """Number the period that contains ``order_date`` so that consecutive periods differ by 1."""
    if period == "month":
        return order_date.year() * MONTHS_PER_YEAR + order_date.month() - 1
    # Mondays are whole weeks apart, so the division is exact and no backend's rounding matters.
    monday = order_date.truncate("W")
    return (monday.epoch_days() - WEEK_INDEX_ORIGIN_EPOCH_DAY) // DAYS_PER_WEEK


def _period_end(index: int, period: str) -> datetime.date:
    """Return the last day of the period numbered ``index`` by :func:`_period_index`."""
    if period == "month":
        year, month_offset = divmod(index + 1, MONTHS_PER_YEAR)
        return datetime.date(year, month_offset + 1, 1) - datetime.timedelta(days=1)
    return WEEK_INDEX_ORIGIN + datetime.timedelta(weeks=index, days=DAYS_PER_WEEK - 1)


def _period_label(index: int, period: str) -> str:
    """Return the label of the period numbered ``index`` by :func:`_period_index`."""
    if period == "month":
        year, month_offset = divmod(index, MONTHS_PER_YEAR)
        return f"{year:04d}-{month_offset + 1:02d}"
    return (WEEK_INDEX_ORIGIN + datetime.timedelta(weeks=index)).isoformat()


# --- summary ----------------------------------------------------------------------------------


def _summarise(lines: ir.Table, purchases: ir.Table) -> tuple[dict, int | None, int | None]:
    """Return the summary KPIs and the first and last period index of the data (``None`` if empty)."""
    line_totals = _line_totals(lines)
    customer_totals = _customer_totals(purchases)

    revenue = _to_float(line_totals["revenue"], default=0.0)
    orders = _to_int(line_totals["orders"])
    customers = _to_int(customer_totals["customers"])
    purchase_count = _to_int(customer_totals["purchases"])
    summary = {
        "customers": customers,
        "orders": orders,
        "purchases": purchase_count,
        "revenue": revenue,
        "gross_revenue": _to_float(line_totals["gross_revenue"], default=0.0),
        "returns": _to_float(line_totals["returns"], default=0.0),
        "revenue_without_customer_id": _to_float(line_totals["revenue_without_customer_id"], default=0.0),
        "orders_without_customer_id": _to_int(line_totals["orders_without_customer_id"]),
        "average_order_value": _ratio(revenue, orders),
        "purchase_frequency": _ratio(purchase_count, customers),
        "repeat_purchase_rate": _ratio(_to_int(customer_totals["repeat_customers"]), customers),
        "first_date": _to_iso_date(line_totals["first_date"]),
        "last_date": _to_iso_date(line_totals["last_date"]),
    }

    # purchases derive from lines, so their periods should lie inside the lines' range. The
    # union keeps every purchase on the calendar even if a caller breaks that contract.
    first_indices = [line_totals["first_index"], customer_totals["first_index"]]
    last_indices = [line_totals["last_index"], customer_totals["last_index"]]
    first_index = min((int(value) for value in first_indices if not pd.isna(value)), default=None)
    last_index = max((int(value) for value in last_indices if not pd.isna(value)), default=None)
    return summary, first_index, last_index


def _line_totals(lines: ir.Table) -> pd.Series:
    """Aggregate the order lines into one row of revenue, order and date totals."""
    is_sale = ~lines.is_return
    is_guest = lines.customer_id.isnull()
    totals = lines.aggregate(
        revenue=lines.amount.sum(),
        gross_revenue=lines.amount.sum(where=is_sale & (lines.amount > 0)),
        returns=(-lines.amount).sum(where=lines.is_return),
        revenue_without_customer_id=lines.amount.sum(where=is_guest),
        orders=lines.order_id.nunique(where=is_sale),
        orders_without_customer_id=lines.order_id.nunique(where=is_sale & is_guest),
        first_date=lines.order_date.min(),
        last_date=lines.order_date.max(),
        first_index=lines.period_index.min(),
        last_index=lines.period_index.max(),
    )
    return totals.execute().iloc[0]


def _customer_totals(purchases: ir.Table) -> pd.Series:
    """Aggregate the purchases into one row of customer and purchase counts.

    Raises :class:`InputError` if a purchase has a NULL customer id.
    """
    per_customer = purchases.group_by("customer_id").aggregate(
        purchase_days=purchases.count(),
        first_index=purchases.period_index.min(),
        last_index=purchases.period_index.max(),
    )
    is_identified = per_customer.customer_id.notnull()
    aggregated = per_customer.aggregate(
        customers=per_customer.count(where=is_identified),
        purchases=per_customer.purchase_days.sum(),
        null_id_rows=per_customer.purchase_days.sum(where=~is_identified),
        repeat_customers=per_customer.count(where=per_customer.purchase_days >= REPEAT_MIN_PURCHASE_DAYS),
        first_index=per_customer.first_index.min(),
        last_index=per_customer.last_index.max(),
    )
    totals = aggregated.execute().iloc[0]

    null_id_rows = _to_int(totals["null_id_rows"])
    if null_id_rows:
        raise InputError(
            f"purchases has a NULL customer_id in {null_id_rows} rows. It must contain identified "
            "customers only, so drop guest orders from it (they stay in lines)"
        )
    return totals


# --- retention --------------------------------------------------------------------------------


def _retention(
    purchases: ir.Table, first_index: int | None, last_index: int | None, period: str, *, last_date
) -> list[dict]:
    """Return one retention entry per period after ``first_index``, up to ``last_index``.

    ``complete`` is False for a period that the data ends inside: it had fewer days to buy in, so
    its rates are not comparable with the others.
    """
    if first_index is None:
        return []

    active = purchases.select("customer_id", "period_index").distinct()
    # Shift each customer's active periods forward by one, so a match on (customer, period)
    # means the customer was also active in the period before.
    active_before = active.select(
        "customer_id", period_index=active.period_index + 1, was_active=ibis.literal(True)
    )
    joined = active.left_join(active_before, ["customer_id", "period_index"])
    per_period = (
        joined.group_by("period_index")
        # COUNT(column) skips the NULLs of unmatched rows and is 0, not NULL, when none match.
        .aggregate(active_customers=joined.count(), retained=joined.was_active.count())
        .execute()
        .set_index("period_index")
    )

    active_counts = per_period["active_customers"].to_dict()
    retained_counts = per_period["retained"].to_dict()
    entries = []
    for index in range(first_index + 1, last_index + 1):
        active_previous = int(active_counts.get(index - 1, 0))
        retained = int(retained_counts.get(index, 0))
        retention_rate = _ratio(retained, active_previous)
        entries.append(
            {
                "period": _period_label(index, period),
                "active_customers": int(active_counts.get(index, 0)),
                "active_previous": active_previous,
                "retained": retained,
                "retention_rate": retention_rate,
                "churn_rate": None if retention_rate is None else 1.0 - retention_rate,
                "complete": last_date is not None and _period_end(index, period) <= last_date,
            }
        )
    return entries


# --- cohorts ----------------------------------------------------------------------------------


def _cohorts(purchases: ir.Table, last_index: int | None, period: str) -> dict:
    """Build the cohort matrices, where a cohort is the period of a customer's first purchase."""
    first_purchase = purchases.group_by("customer_id").aggregate(cohort_index=purchases.period_index.min())
    with_cohort = purchases.join(first_purchase, "customer_id")
    cells = (
        with_cohort.group_by(
            "cohort_index", periods_since=with_cohort.period_index - with_cohort.cohort_index
        )
        .aggregate(customers=with_cohort.customer_id.nunique(), revenue=with_cohort.amount.sum())
        .execute()
    )

    result = {
        "period": period,
        "cohorts": [],
        "periods_since": [],
        "sizes": [],
        "customers": [],
        "revenue": [],
        "retention_rate": [],
    }
    if cells.empty:
        return result

    cohort_indices = sorted(int(value) for value in cells["cohort_index"].unique())
    cells = cells.set_index(["cohort_index", "periods_since"])
    result["cohorts"] = [_period_label(cohort, period) for cohort in cohort_indices]
    result["periods_since"] = list(range(last_index - cohort_indices[0] + 1))
    for cohort in cohort_indices:
        # Every cohort member purchases in the cohort's own period, so period 0 counts the whole cohort.
        size = int(cells.at[(cohort, 0), "customers"])
        customers_row, revenue_row = _cohort_row(cells, cohort, len(result["periods_since"]), last_index)
        result["sizes"].append(size)
        result["customers"].append(customers_row)
        result["revenue"].append(revenue_row)
        result["retention_rate"].append([None if count is None else count / size for count in customers_row])
    return result


def _cohort_row(
    cells: pd.DataFrame, cohort: int, width: int, last_index: int
) -> tuple[list[int | None], list[float | None]]:
    """Return the active customers and revenue of one cohort in each of its first ``width`` periods.

    Periods after ``last_index`` are ``None``. Periods inside the data without a purchase are 0.
    """
    customers_row: list[int | None] = []
    revenue_row: list[float | None] = []
    for offset in range(width):
        if cohort + offset > last_index:
            customers_row.append(None)
            revenue_row.append(None)
        elif (cohort, offset) in cells.index:
            customers_row.append(int(cells.at[(cohort, offset), "customers"]))
            revenue_row.append(_to_float(cells.at[(cohort, offset), "revenue"], default=0.0))
        else:
            customers_row.append(0)
            revenue_row.append(0.0)
    return customers_row, revenue_row


# --- conversions to plain Python --------------------------------------------------------------


def _to_int(value) -> int:
    """Convert a count to ``int``, where a NULL sum over no rows counts as 0."""
    return 0 if pd.isna(value) else int(value)


def _to_float(value, *, default: float) -> float:
    """Convert a sum to ``float``, where a NULL sum over no rows becomes ``default``."""
    if pd.isna(value):
        return default
    # Adding 0.0 turns a -0.0 (minus an empty or zero sum) into 0.0 for the JSON output.
    return float(value) + 0.0


def _ratio(numerator: float, denominator: float) -> float | None:
    """Return ``numerator / denominator``, or ``None`` (undefined) when the denominator is 0."""
    if denominator == 0:
        return None
    value = numerator / denominator
    return None if math.isnan(value) else float(value)


def _to_iso_date(value) -> str | None:
    if pd.isna(value):
        return None
    return pd.Timestamp(value).date().isoformat()
