"""Render the HTML report: one self-contained file, in Simplified Chinese or English.

:func:`render_report` turns a :class:`ReportData` into the text of an HTML page with embedded CSS
and inline SVG charts. The page has no scripts and loads nothing, so it opens offline. Every text
an operator reads comes from the message catalog (``report.*`` ids); values from the data are
escaped by Jinja2's autoescaping.

The customer table may hold millions of rows. Every section reduces it with numpy or pandas to a
bounded number of values (bins, grid cells, quantile points, the top rows) before drawing, so the
size of the page does not grow with the number of customers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from revopt import __version__
from revopt.errors import ConfigError, InputError
from revopt.i18n import LANGUAGES, Translator, catalog
from revopt.report import charts
from revopt.segments import SEGMENT_CODES, label
from revopt.timeunits import HORIZON_PATTERN

__all__ = [
    "ReportData",
    "render_report",
    "write_report",
    "AT_RISK_ROWS",
    "TOP_PERCENTS",
    "CUSTOMER_COLUMNS",
    "TRACKING_COLUMNS",
]

logger = logging.getLogger(__name__)

CUSTOMER_COLUMNS = (
    "customer_id",
    "first_purchase",
    "last_purchase",
    "frequency",
    "recency",
    "T",
    "monetary_value",
    "total_revenue",
    "orders",
    "probability_alive",
    "expected_purchases",
    "expected_average_value",
    "clv",
    "r_score",
    "f_score",
    "m_score",
    "segment",
    "segment_label",
    "value_tier",
    "value_tier_label",
)
TRACKING_COLUMNS = ("period_start", "actual", "predicted")

# Rows in the table of customers most at risk: a list one can act on from the report. The full
# ranking is a sort of the customer table by the same score.
AT_RISK_ROWS = 20
# Money is shown with two decimals, so a revenue at risk below 0.005 would show as 0.00. Such
# customers are left out, and a model that considers everyone active gives an empty table.
_MIN_AT_RISK = 0.005
# Only customers the model thinks more likely gone than active are listed as at risk. A fit in which
# nearly everyone is active (a dropout rate near 0) then gives an empty table, not a list of active buyers.
AT_RISK_MAX_ALIVE = 0.5
# Customer shares, in percent, for the concentration table.
TOP_PERCENTS = (1, 5, 10, 20)

# Cohort heatmap: the most recent cohorts and the first periods since the first purchase. Three
# years of monthly cohorts fit the tallest chart with rows about 20 pixels high at full page width.
_MAX_COHORTS = 36
_MAX_COHORT_PERIODS = 37
# Grids up to this many cells get a percentage written in each cell. Beyond it the 7-point text
# no longer fits inside a cell.
_ANNOTATE_MAX_CELLS = 200

_HISTOGRAM_BINS = 40
# The CLV histogram uses logarithmic bins when the maximum exceeds the median by this factor.
# With 40 equal-width bins from 0 up to the maximum, half the customers would then fall into the
# first two bins.
_SKEW_RATIO = 20.0
# Points on each concentration curve, at evenly spaced customer shares.
_LORENZ_POINTS = 201

# Probability-alive grid: frequency rows up to this quantile of frequency (higher frequencies go
# into the last row), at most this many rows, and equal-width recency columns.
_FREQUENCY_QUANTILE = 0.99
_MAX_FREQUENCY_ROWS = 25
_RECENCY_COLUMNS = 24

# Currencies shown with a symbol; any other ISO code is written before the amount.
_CURRENCY_SYMBOLS = {"CNY": "¥", "USD": "$", "EUR": "€", "GBP": "£"}
# Chinese sentences end in a full-width stop and follow each other without a space.
_SENTENCE_SEPARATORS = {"en": " ", "zh-CN": ""}
_LIST_SEPARATORS = {"en": "; ", "zh-CN": "；"}
_UNIT_IDS = {"day": "units.day", "week": "units.week", "month": "units.month"}
_SINGULAR_UNIT_IDS = {"day": "report.unit.day", "week": "report.unit.week", "month": "report.unit.month"}
_MODEL_TITLE_IDS = {
    "bg_nbd": "report.model.bg_nbd",
    "mbg_nbd": "report.model.mbg_nbd",
    "pareto_nbd": "report.model.pareto_nbd",
    "gamma_gamma": "report.model.gamma_gamma",
}
_RFM_IDS = {
    "recency": "report.segments.recency",
    "frequency": "report.segments.frequency",
    "monetary": "report.segments.monetary",
}
_INGEST_COUNT_IDS = {
    "rows_read": "ingest.count.rows_read",
    "rows_kept": "ingest.count.rows_kept",
    "rows_rejected": "ingest.count.rows_rejected",
    "duplicates_dropped": "ingest.count.duplicates_dropped",
    "cancelled_rows": "ingest.count.cancelled_rows",
    "return_rows": "ingest.count.return_rows",
    "rows_without_customer_id": "ingest.count.rows_without_customer_id",
    "purchases_merged": "ingest.count.purchases_merged",
    "lines_skipped_as_loaded": "ingest.count.lines_skipped_as_loaded",
}
_SECTION_IDS = (
    ("kpis", "report.section.kpis"),
    ("data-quality", "report.section.data_quality"),
    ("cohorts", "report.section.cohorts"),
    ("clv", "report.section.clv"),
    ("segments", "report.section.segments"),
    ("alive", "report.section.alive"),
    ("tracking", "report.section.tracking"),
    ("model", "report.section.model"),
    ("at-risk", "report.section.at_risk"),
    ("churn", "report.section.churn"),
    ("recommendations", "report.section.recommendations"),
    ("actions", "report.section.actions"),
)


@dataclass(frozen=True, eq=False)
class ReportData:
    """Everything the report shows, computed by the pipeline before rendering.

    The report only formats, aggregates and draws these values. It fits nothing.

    Attributes
    ----------
    language : {"zh-CN", "en"}
        Language of every text in the report.
    settings : mapping
        The run's settings, under these keys:

        - ``source``: list of input file names, or one name.
        - ``generated_at``: ISO timestamp.
        - ``time_unit``: ``"day"``, ``"week"`` or ``"month"``.
        - ``horizon``: as given, for example ``"12M"``, and ``horizon_units``, the horizon in time
          units (float).
        - ``discount_rate``: annual, as a fraction. ``margin``: the fraction of revenue that CLV
          counts.
        - ``currency``: ISO code, for example ``"CNY"``. ``tz``: time zone name.
        - ``calibration_end`` and ``holdout_end``: ISO dates, or None when no holdout is set.
    kpis : mapping
        Descriptive KPIs over all orders, under these keys:

        - ``customers``, ``orders``, ``purchases``, ``revenue`` (net of returns),
          ``gross_revenue``, ``returns``, ``revenue_without_customer_id``,
          ``orders_without_customer_id``, ``average_order_value``, ``purchase_frequency``,
          ``repeat_purchase_rate``, ``first_date`` and ``last_date``.
        - ``retention``: a list of ``{period, active_customers, active_previous, retained,
          retention_rate, churn_rate}``, oldest first, with None for rates that are undefined.
        - ``cohorts``: ``{period, cohorts, periods_since, sizes, customers, revenue,
          retention_rate}``. The last three are matrices of cohorts by periods since the first
          purchase, with None where not observed. ``period`` is a time unit name.
    model : mapping
        The fitted models, under these keys:

        - ``time_unit`` and ``calibration_end``.
        - ``models``: ``bg_nbd`` with ``params`` {r, alpha, a, b} and ``gamma_gamma`` with
          ``params`` {p, q, gamma}. Each also has ``standard_errors``, ``log_likelihood``,
          ``n_customers`` and ``converged``.
        - ``holdout``: None, or ``{customers, actual_total, predicted_total, mae, rmse}``. The
          report describes ``mae`` and ``rmse`` as per-customer errors in the number of repeat
          purchases over the holdout period.
        - ``spend_excluded``: ``{count, example_ids}``.
        - ``rfm_edges``: ``{recency, frequency, monetary}``, each either a list of score
          boundaries or the bins that :meth:`revopt.segments.ScoreBins.to_dict` returns.
    customers : pandas.DataFrame
        One row per customer with the columns in :data:`CUSTOMER_COLUMNS`. ``frequency`` counts
        repeat purchases, and ``recency`` and ``T`` are in time units. ``monetary_value`` is NaN
        for customers without a repeat purchase. ``segment_label`` and ``value_tier_label`` are
        already in ``language``. The report never modifies the table.
    segments_table : sequence of mapping
        The segment definitions ``{code, label, rule}`` in ``language``, in the order the report
        lists segments. May be empty.
    ingest : mapping
        Counts from reading the input: ``rows_read``, ``rows_kept``, ``rows_rejected``,
        ``rejected_by_reason`` (reason code to count, labelled by ``ingest.reason.<code>``),
        ``duplicates_dropped``, ``cancelled_rows``, ``return_rows``, ``rows_without_customer_id``,
        ``revenue_without_customer_id``, ``purchases_merged`` and ``files`` (list of file names).
    tracking : pandas.DataFrame or None, default None
        Repeat purchases per time unit over the calibration and holdout periods, with the columns
        in :data:`TRACKING_COLUMNS` (``period_start`` a date, ``actual`` observed, ``predicted``
        expected by the model). None when no holdout is set.

    The growth sections read ``model["churn"]`` (:meth:`revopt.churn.ChurnEvaluation.to_dict`
    plus ``horizon_days``), ``model["recommendations"]`` (``method``, ``split_date``,
    ``evaluation``, a list of per-method metric records, and ``evaluation_sample_share``) and ``model["actions"]`` (``by_action``
    and ``by_segment`` records of customers and expected value). Each may be None or absent, and
    the section then explains why it is empty. ``customers`` may carry ``next_best_action`` and
    ``message_zh``/``message_en`` for the sample messages.

    Raises
    ------
    ConfigError
        If ``language`` is not one of :data:`revopt.i18n.LANGUAGES`.
    InputError
        If ``customers`` or ``tracking`` lacks a column the report needs.
    """

    language: str
    settings: Mapping[str, Any]
    kpis: Mapping[str, Any]
    model: Mapping[str, Any]
    customers: pd.DataFrame
    segments_table: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    ingest: Mapping[str, Any] = field(default_factory=dict)
    tracking: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        if self.language not in LANGUAGES:
            raise ConfigError(f"report language {self.language!r} is not supported. Use one of: {', '.join(LANGUAGES)}")
        _check_columns(self.customers, CUSTOMER_COLUMNS, "customers")
        if self.tracking is not None:
            _check_columns(self.tracking, TRACKING_COLUMNS, "tracking")


def _check_columns(frame: pd.DataFrame, required: Sequence[str], name: str) -> None:
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise InputError(
            f"the {name} table for the report is missing the columns {', '.join(missing)}. "
            f"The report needs the columns: {', '.join(required)}"
        )


def render_report(data: ReportData) -> str:
    """Render the report as the text of one self-contained HTML page.

    Parameters
    ----------
    data : ReportData
        The values to show, and the language to show them in.

    Returns
    -------
    str
        The HTML page, with embedded CSS and inline SVG charts, no scripts and no external
        references.
    """
    translate = Translator(data.language)
    formats = _Formats(translate=translate, currency=str(data.settings.get("currency", "")))
    context = {
        "language": data.language,
        "t": translate,
        "version": __version__,
        "sections": [(anchor, translate(message_id)) for anchor, message_id in _SECTION_IDS],
        "settings": _settings_rows(data, formats),
        "tiles": _kpi_tiles(data, formats),
        "quality": _data_quality(data, formats),
        "cohorts": _cohorts(data, formats),
        "clv": _clv(data, formats),
        "segments": _segments(data, formats),
        "alive": _alive(data, formats),
        "tracking": _tracking(data, formats),
        "model": _model(data, formats),
        "at_risk": _at_risk(data, formats),
        "at_risk_minimum": formats.money(_MIN_AT_RISK),
        "at_risk_max_alive": formats.percent(AT_RISK_MAX_ALIVE),
        "churn": _churn(data, formats),
        "recommendations": _recommendations(data, formats),
        "actions": _actions(data, formats),
        "growth_off": data.model.get("growth") is False,
        "currency": formats.currency,
    }
    page = _environment().get_template("report.html").render(context)
    logger.info("report_rendered language=%s customers=%d characters=%d", data.language, len(data.customers), len(page))
    return page


def write_report(data: ReportData, path: str | Path) -> Path:
    """Render the report and write it to ``path`` as UTF-8, replacing any file there.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    target = Path(path)
    target.write_text(render_report(data), encoding="utf-8")
    logger.info("report_written path=%s", target)
    return target


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("revopt.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


# --- Number formatting -----------------------------------------------------------------------


def _is_missing(value: Any) -> bool:
    """Return True for None, NaN, NaT and pd.NA (the scalars pandas treats as missing)."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


@dataclass(frozen=True)
class _Formats:
    """Number, money, percent and date formatting in the report's language, with one currency.

    Missing values (None, NaN, NaT) become the catalog's word for undefined, never a number.
    """

    translate: Translator
    currency: str

    def undefined(self) -> str:
        return self.translate("report.value.undefined")

    def count(self, value: Any) -> str:
        return self.undefined() if _is_missing(value) else f"{round(float(value)):,d}"

    def number(self, value: Any, digits: int = 2) -> str:
        return self.undefined() if _is_missing(value) else f"{float(value):,.{digits}f}"

    def significant(self, value: Any) -> str:
        """Format a model parameter: four significant digits, with separators from 1,000 up."""
        if _is_missing(value):
            return self.undefined()
        value = float(value)
        return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.4g}"

    def money(self, value: Any) -> str:
        if _is_missing(value):
            return self.undefined()
        value = float(value)
        sign = "-" if value < 0 else ""
        amount = f"{abs(value):,.2f}"
        symbol = _CURRENCY_SYMBOLS.get(self.currency)
        if symbol is not None:
            return f"{sign}{symbol}{amount}"
        return f"{sign}{self.currency} {amount}".strip()

    def percent(self, value: Any, digits: int = 1) -> str:
        return self.undefined() if _is_missing(value) else f"{float(value):.{digits}%}"

    def date(self, value: Any) -> str:
        if _is_missing(value):
            return self.undefined()
        return pd.Timestamp(value).date().isoformat()

    def edge(self, value: Any) -> str:
        """Format a score boundary: whole numbers without decimals, others with two."""
        if _is_missing(value):
            return self.undefined()
        return self.count(value) if float(value).is_integer() else self.number(value)

    def list_separator(self) -> str:
        return _LIST_SEPARATORS[self.translate.language]

    def sentences(self, *texts: str | None) -> str:
        """Join sentences as the report's language does, skipping None."""
        return _SENTENCE_SEPARATORS[self.translate.language].join(text for text in texts if text)

    def horizon(self, text: Any) -> str:
        """Write a horizon option such as "12M" as words ("12 months", "12 个月"); other text is kept as is."""
        match = HORIZON_PATTERN.match(str(text or ""))
        if not match:
            return str(text or "")
        count = float(match.group(1))
        number = f"{count:g}"
        form = "one" if count == 1 else "many"
        return self.translate(f"report.horizon_{form}.{match.group(2).upper()}", count=number)

    def unit(self, time_unit: str | None, *, singular: bool = False) -> str:
        """Name a time unit in the plural ("weeks"), or in the singular ("week") for "per week"."""
        message_id = (_SINGULAR_UNIT_IDS if singular else _UNIT_IDS).get(time_unit or "")
        return self.translate(message_id) if message_id else str(time_unit)


def _share(part: float, total: float) -> float | None:
    """Return ``part / total``, or None (undefined) when the total is not positive."""
    return part / total if total > 0 else None


def _shares(parts: np.ndarray) -> np.ndarray:
    """Return each part's share of the sum, all NaN (undefined) when the sum is not positive."""
    total = parts.sum()
    return parts / total if total > 0 else np.full(parts.shape, math.nan)


# --- Header and section 1: settings and KPI tiles ---------------------------------------------


def _settings_rows(data: ReportData, formats: _Formats) -> list[tuple[str, str]]:
    settings, kpis, translate = data.settings, data.kpis, formats.translate
    source = settings.get("source") or data.ingest.get("files") or []
    files = [source] if isinstance(source, str) else list(source)
    not_set = translate("report.value.not_set")
    horizon = translate(
        "report.settings.horizon_value",
        horizon=formats.horizon(settings.get("horizon")),
        units=formats.significant(settings.get("horizon_units")),
        unit=formats.unit(settings.get("time_unit")),
    )
    date_range = translate(
        "report.settings.date_range_value",
        first=formats.date(kpis.get("first_date")),
        last=formats.date(kpis.get("last_date")),
    )
    return [
        (translate("report.settings.source"), ", ".join(str(name) for name in files) or not_set),
        (translate("report.settings.generated_at"), str(settings.get("generated_at", not_set))),
        (translate("report.settings.date_range"), date_range),
        (translate("report.settings.time_unit"), formats.unit(settings.get("time_unit"))),
        (translate("report.settings.horizon"), horizon),
        (translate("report.settings.discount_rate"), formats.percent(settings.get("discount_rate"))),
        (translate("report.settings.margin"), formats.percent(settings.get("margin"))),
        (translate("report.settings.currency"), str(settings.get("currency") or not_set)),
        (translate("report.settings.tz"), str(settings.get("tz") or not_set)),
        (translate("report.settings.calibration_end"), _optional_date(settings.get("calibration_end"), formats)),
        (translate("report.settings.holdout_end"), _optional_date(settings.get("holdout_end"), formats)),
    ]


def _optional_date(value: Any, formats: _Formats) -> str:
    return formats.translate("report.value.not_set") if _is_missing(value) else formats.date(value)


def _kpi_tiles(data: ReportData, formats: _Formats) -> list[dict[str, str]]:
    kpis, translate = data.kpis, formats.translate
    clv = data.customers["clv"].to_numpy(dtype=float)
    finite_clv = clv[np.isfinite(clv)]
    mean_clv = finite_clv.mean() if finite_clv.size else None
    total_clv = finite_clv.sum() if finite_clv.size else None
    clv_note = translate(
        "report.kpi.clv_note",
        horizon=formats.horizon(data.settings.get("horizon")),
        margin=formats.percent(data.settings.get("margin")),
    )

    retention = list(kpis.get("retention") or [])
    if retention:
        # The last complete period: the data may end part-way through the final one.
        complete = [entry for entry in retention if entry.get("complete", True)]
        last = complete[-1] if complete else retention[-1]
        retention_note = translate(
            "report.kpi.retention_note",
            period=str(last.get("period")),
            retained=formats.count(last.get("retained")),
            previous=formats.count(last.get("active_previous")),
        )
        retention_rate, churn_rate = last.get("retention_rate"), last.get("churn_rate")
    else:
        retention_note = translate("report.kpi.no_retention")
        retention_rate = churn_rate = None

    def tile(name: str, label_id: str, value: str, note: str = "") -> dict[str, str]:
        return {"id": name, "label": translate(label_id), "value": value, "note": note}

    return [
        tile("customers", "report.kpi.customers", formats.count(kpis.get("customers"))),
        tile(
            "orders", "report.kpi.orders", formats.count(kpis.get("orders")),
            translate("report.kpi.orders_note", purchases=formats.count(kpis.get("purchases"))),
        ),
        tile(
            "revenue", "report.kpi.revenue", formats.money(kpis.get("revenue")),
            translate(
                "report.kpi.revenue_note",
                gross=formats.money(kpis.get("gross_revenue")),
                returns=formats.money(kpis.get("returns")),
            ),
        ),
        tile("average-order-value", "report.kpi.average_order_value", formats.money(kpis.get("average_order_value"))),
        tile(
            "purchase-frequency", "report.kpi.purchase_frequency", formats.number(kpis.get("purchase_frequency")),
            translate("report.kpi.purchase_frequency_note"),
        ),
        tile(
            "repeat-purchase-rate", "report.kpi.repeat_purchase_rate", formats.percent(kpis.get("repeat_purchase_rate"))
        ),
        tile("retention", "report.kpi.retention", formats.percent(retention_rate), retention_note),
        tile("churn", "report.kpi.churn", formats.percent(churn_rate), retention_note),
        tile("mean-clv", "report.kpi.mean_clv", formats.money(mean_clv), clv_note),
        tile("total-clv", "report.kpi.total_clv", formats.money(total_clv), clv_note),
    ]


# --- Section 2: data quality -----------------------------------------------------------------


def _data_quality(data: ReportData, formats: _Formats) -> dict[str, Any]:
    ingest, translate = data.ingest, formats.translate
    counts = [
        (translate(message_id), formats.count(ingest[name]))
        for name, message_id in _INGEST_COUNT_IDS.items()
        if name in ingest
    ]

    known = catalog()
    reasons = []
    for code, count in sorted((ingest.get("rejected_by_reason") or {}).items(), key=lambda item: -item[1]):
        message_id = f"ingest.reason.{code}"
        if message_id in known:
            label = translate(message_id)
        else:
            # Show the code itself so that the count is not lost, and log the missing message.
            logger.warning("report_unknown_reject_reason code=%s", code)
            label = str(code)
        reasons.append((label, formats.count(count)))

    revenue_without_id = data.kpis.get("revenue_without_customer_id", ingest.get("revenue_without_customer_id"))
    rows_without_id = ingest.get("rows_without_customer_id", 0) or 0
    note = None
    if rows_without_id or (not _is_missing(revenue_without_id) and revenue_without_id):
        revenue = data.kpis.get("revenue")
        share = None if _is_missing(revenue) or _is_missing(revenue_without_id) else _share(revenue_without_id, revenue)
        note = translate(
            "report.quality.revenue_without_customer_id_note",
            amount=formats.money(revenue_without_id),
            share=formats.percent(share),
            orders=formats.count(data.kpis.get("orders_without_customer_id")),
        )
    return {"counts": counts, "reasons": reasons, "without_id_note": note}


# --- Section 3: cohort retention --------------------------------------------------------------


def _matrix(rows: Sequence[Sequence[Any]]) -> np.ndarray:
    """Convert a list of lists with None for unobserved cells into a float array with NaN."""
    return np.array([[math.nan if _is_missing(value) else float(value) for value in row] for row in rows], dtype=float)


def _cohorts(data: ReportData, formats: _Formats) -> dict[str, Any] | None:
    cohorts = data.kpis.get("cohorts") or {}
    labels = list(cohorts.get("cohorts") or [])
    if not labels:
        return None
    translate = formats.translate
    rates = _matrix(cohorts["retention_rate"]).reshape(len(labels), -1)
    periods = list(cohorts.get("periods_since") or range(rates.shape[1]))
    sizes = list(cohorts.get("sizes") or [None] * len(labels))

    total_cohorts, total_periods = rates.shape
    rates = rates[-_MAX_COHORTS:, :_MAX_COHORT_PERIODS]
    labels, sizes, periods = labels[-_MAX_COHORTS:], sizes[-_MAX_COHORTS:], periods[:_MAX_COHORT_PERIODS]
    row_labels = [
        translate("report.cohorts.row_label", cohort=str(label), size=formats.count(size))
        for label, size in zip(labels, sizes, strict=True)
    ]

    unit = formats.unit(cohorts.get("period"))
    svg = charts.cohort_heatmap(
        rates,
        row_labels=row_labels,
        column_labels=[str(period) for period in periods],
        x_label=translate("report.cohorts.x_label", unit=unit),
        y_label=translate("report.cohorts.y_label"),
        color_label=translate("report.cohorts.color_label"),
        annotate=rates.size <= _ANNOTATE_MAX_CELLS,
        title=translate("report.section.cohorts"),
    )
    truncated = None
    if rates.shape != (total_cohorts, total_periods):
        truncated = translate(
            "report.cohorts.truncated", shown=len(labels), total=total_cohorts, periods=len(periods)
        )
    return {"chart": Markup(svg), "caption": formats.sentences(translate("report.cohorts.caption"), truncated)}


# --- Section 4: CLV distribution and concentration --------------------------------------------


def _concentration(values: np.ndarray) -> tuple[dict[int, float | None], tuple[np.ndarray, np.ndarray] | None]:
    """Compute the share of the total held by the top customers, and the concentration curve.

    Customers are ranked by ``values`` from the largest down. The top ``p`` percent are the first
    ``ceil(p * n / 100)`` customers, at least one. Returns ``({percent: share}, (x, y))`` where the
    curve has :data:`_LORENZ_POINTS` points. A share of a zero or negative total is undefined, so
    then the shares and the curve are None.
    """
    values = values[np.isfinite(values)]
    n_customers = values.size
    total = float(values.sum()) if n_customers else 0.0
    if total <= 0:
        return {percent: None for percent in TOP_PERCENTS}, None

    ranked = np.sort(values)[::-1]
    cumulative = np.concatenate([[0.0], np.cumsum(ranked) / total])
    top = {percent: float(cumulative[max(1, -(-percent * n_customers // 100))]) for percent in TOP_PERCENTS}

    customer_share = np.linspace(0.0, 1.0, _LORENZ_POINTS)
    value_share = np.interp(customer_share * n_customers, np.arange(n_customers + 1), cumulative)
    return top, (customer_share, value_share)


def _clv(data: ReportData, formats: _Formats) -> dict[str, Any] | None:
    translate = formats.translate
    clv = data.customers["clv"].to_numpy(dtype=float)
    clv = clv[np.isfinite(clv)]
    if clv.size == 0:
        return None
    horizon = formats.horizon(data.settings.get("horizon"))

    positive = clv[clv > 0]
    log_scale = positive.size > 0 and positive.max() > _SKEW_RATIO * np.median(positive)
    histogram = charts.value_histogram(
        positive if log_scale else clv,
        log_scale=bool(log_scale),
        bins=_HISTOGRAM_BINS,
        x_label=translate("report.clv.x_label", currency=formats.currency),
        y_label=translate("report.clv.y_label"),
        title=translate("report.clv.histogram_caption", horizon=horizon),
    )
    caption = translate("report.clv.histogram_caption", horizon=horizon)
    if log_scale:
        hidden = None
        if positive.size < clv.size:
            hidden = translate("report.clv.nonpositive_hidden", count=formats.count(clv.size - positive.size))
        caption = formats.sentences(caption, translate("report.clv.log_note"), hidden)

    revenue = data.customers["total_revenue"].to_numpy(dtype=float)
    clv_top, clv_curve = _concentration(clv)
    revenue_top, revenue_curve = _concentration(revenue)
    rows = [
        (
            translate("report.clv.top_share", percent=f"{percent}%"),
            formats.percent(clv_top[percent]),
            formats.percent(revenue_top[percent]),
        )
        for percent in TOP_PERCENTS
    ]
    curves = {}
    if clv_curve is not None:
        curves[translate("report.clv.predicted_clv")] = clv_curve
    if revenue_curve is not None:
        curves[translate("report.clv.historical_revenue")] = revenue_curve
    lorenz = None
    if curves:
        lorenz = charts.lorenz_curves(
            curves,
            equality_label=translate("report.clv.equality"),
            x_label=translate("report.clv.lorenz_x_label"),
            y_label=translate("report.clv.lorenz_y_label"),
            title=translate("report.clv.concentration_caption"),
        )
    return {
        "histogram": Markup(histogram),
        "histogram_caption": caption,
        "top_rows": rows,
        "lorenz": Markup(lorenz) if lorenz else None,
    }


# --- Section 5: segments and value tiers ------------------------------------------------------


def _group_values(
    customers: pd.DataFrame, code_column: str, label_column: str, order: Sequence[str], formats: _Formats
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Sum customers, revenue and CLV per group, and return the table rows and the chart's shares.

    Groups listed in ``order`` come first, in that order. The others follow by mean CLV, highest
    first.
    """
    grouped = customers.groupby(code_column, sort=False, observed=True, dropna=False).agg(
        label=(label_column, "first"),
        customers=("customer_id", "size"),
        revenue=("total_revenue", "sum"),
        clv=("clv", "sum"),
    )
    grouped["mean_clv"] = grouped["clv"] / grouped["customers"]
    listed = [code for code in order if code in grouped.index]
    others = grouped.drop(index=listed).sort_values("mean_clv", ascending=False).index.tolist()
    grouped = grouped.loc[listed + others]

    n_customers = float(grouped["customers"].sum())
    shares = {
        "customers": grouped["customers"].to_numpy(dtype=float) / n_customers,
        "revenue": _shares(grouped["revenue"].to_numpy(dtype=float)),
        "clv": _shares(grouped["clv"].to_numpy(dtype=float)),
    }
    rows = [
        {
            "label": str(record.label),
            "customers": formats.count(record.customers),
            "share": formats.percent(record.customers / n_customers),
            "revenue": formats.money(record.revenue),
            "clv": formats.money(record.clv),
            "mean_clv": formats.money(record.mean_clv),
        }
        for record in grouped.itertuples()
    ]
    return rows, shares


def _segments(data: ReportData, formats: _Formats) -> dict[str, Any] | None:
    if data.customers.empty:
        return None
    translate = formats.translate
    order = [str(entry["code"]) for entry in data.segments_table]
    segment_rows, shares = _group_values(data.customers, "segment", "segment_label", order, formats)
    tier_rows, _ = _group_values(data.customers, "value_tier", "value_tier_label", [], formats)
    chart = charts.segment_shares(
        [row["label"] for row in segment_rows],
        {
            translate("report.segments.share_of_customers"): shares["customers"],
            translate("report.segments.revenue"): shares["revenue"],
            translate("report.segments.clv"): shares["clv"],
        },
        x_label=translate("report.segments.share_of_total"),
        title=translate("report.segments.caption"),
    )
    rfm_rows, rfm_note = _rfm_bins(data.model.get("rfm_edges") or {}, formats)
    return {
        "chart": Markup(chart),
        "rows": segment_rows,
        "tiers": tier_rows,
        "rules": [(str(entry["label"]), str(entry["rule"])) for entry in data.segments_table],
        "rfm_edges": rfm_rows,
        "rfm_note": rfm_note,
    }


def _rfm_bins(edges: Mapping[str, Any], formats: _Formats) -> tuple[list[tuple[str, str]], str | None]:
    """Describe the RFM score bins: one row per dimension, and a note on units when they are known.

    A dimension is either a plain list of boundaries or the mapping that
    :meth:`revopt.segments.ScoreBins.to_dict` returns (``bins`` with ``score``, ``lower``,
    ``upper`` and ``customers``). Only the mapping states its units (days for recency).
    """
    translate = formats.translate
    rows = []
    units_known = False
    for name, message_id in _RFM_IDS.items():
        entry = edges.get(name)
        if entry is None:
            continue
        if not isinstance(entry, Mapping):
            rows.append((translate(message_id), ", ".join(formats.edge(edge) for edge in entry)))
            continue

        units_known = True
        parts = []
        for bin_ in entry.get("bins") or []:
            customers = formats.count(bin_.get("customers"))
            lower, upper = bin_.get("lower"), bin_.get("upper")
            if _is_missing(lower) and _is_missing(upper):
                parts.append(translate("report.segments.missing_bin", score=bin_["score"], customers=customers))
            elif lower == upper:
                parts.append(translate(
                    "report.segments.single_value_bin",
                    score=bin_["score"],
                    value=formats.edge(lower),
                    customers=customers,
                ))
            else:
                parts.append(translate(
                    "report.segments.bin",
                    score=bin_["score"],
                    lower=formats.edge(lower),
                    upper=formats.edge(upper),
                    customers=customers,
                ))
        rows.append((translate(message_id), formats.list_separator().join(parts)))

    note = translate("report.segments.rfm_units", currency=formats.currency) if units_known else None
    return rows, note


# --- Section 6: probability alive by frequency and recency ------------------------------------


def _frequency_bins(frequency: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Assign each customer a frequency row; return the row indices and the row labels.

    Rows are one repeat purchase wide up to the frequency quantile :data:`_FREQUENCY_QUANTILE`,
    wider when that would exceed :data:`_MAX_FREQUENCY_ROWS` rows. The last row also contains every
    higher frequency, and its label then reads ``≥n``.
    """
    upper = max(1, math.ceil(np.quantile(frequency, _FREQUENCY_QUANTILE)))
    width = math.ceil((upper + 1) / _MAX_FREQUENCY_ROWS)
    n_rows = upper // width + 1
    rows = np.minimum(frequency // width, n_rows - 1).astype(np.int64)

    labels = [str(row * width) if width == 1 else f"{row * width}–{(row + 1) * width - 1}" for row in range(n_rows)]
    if frequency.max() > n_rows * width - 1:
        labels[-1] = f"≥{(n_rows - 1) * width}"
    return rows, labels


def _alive(data: ReportData, formats: _Formats) -> dict[str, Any] | None:
    customers = data.customers
    frequency = customers["frequency"].to_numpy(dtype=float)
    recency = customers["recency"].to_numpy(dtype=float)
    alive = customers["probability_alive"].to_numpy(dtype=float)
    valid = np.isfinite(frequency) & np.isfinite(recency) & np.isfinite(alive)
    if not valid.any():
        return None
    frequency, recency, alive = np.floor(frequency[valid]), recency[valid], alive[valid]

    rows, frequency_labels = _frequency_bins(frequency)
    recency_max = float(recency.max()) or 1.0
    columns = np.minimum((recency / recency_max * _RECENCY_COLUMNS).astype(np.int64), _RECENCY_COLUMNS - 1)
    cells = len(frequency_labels) * _RECENCY_COLUMNS
    index = rows * _RECENCY_COLUMNS + columns
    counts = np.bincount(index, minlength=cells)
    sums = np.bincount(index, weights=alive, minlength=cells)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), math.nan)

    translate = formats.translate
    unit = formats.unit(data.settings.get("time_unit"))
    svg = charts.alive_heatmap(
        means.reshape(len(frequency_labels), _RECENCY_COLUMNS),
        recency_range=(0.0, recency_max),
        frequency_labels=frequency_labels,
        x_label=translate("report.alive.x_label", unit=unit),
        y_label=translate("report.alive.y_label"),
        color_label=translate("report.alive.color_label"),
        title=translate("report.section.alive"),
    )
    return {"chart": Markup(svg)}


# --- Section 7: predicted versus actual repeat purchases --------------------------------------


def _tracking(data: ReportData, formats: _Formats) -> dict[str, Any]:
    translate = formats.translate
    unit = formats.unit(data.settings.get("time_unit"), singular=True)
    chart = None
    if data.tracking is not None and not data.tracking.empty:
        tracking = data.tracking.sort_values("period_start")
        calibration_end = data.settings.get("calibration_end")
        chart = charts.tracking_plot(
            pd.to_datetime(tracking["period_start"]).to_numpy(dtype="datetime64[ns]"),
            tracking["actual"].to_numpy(dtype=float),
            tracking["predicted"].to_numpy(dtype=float),
            calibration_end=None if _is_missing(calibration_end) else np.datetime64(pd.Timestamp(calibration_end)),
            labels={
                "actual": translate("report.tracking.actual"),
                "predicted": translate("report.tracking.predicted"),
                "calibration_end": translate("report.tracking.calibration_end"),
                "incremental": translate("report.tracking.incremental", unit=unit),
                "cumulative": translate("report.tracking.cumulative"),
                "y": translate("report.tracking.y_label"),
            },
            title=translate("report.section.tracking"),
        )

    holdout = data.model.get("holdout")
    metrics = None
    if holdout is not None:
        metrics = [
            (translate("report.tracking.customers"), formats.count(holdout.get("customers"))),
            (translate("report.tracking.actual_total"), formats.number(holdout.get("actual_total"))),
            (translate("report.tracking.predicted_total"), formats.number(holdout.get("predicted_total"))),
            (translate("report.tracking.mae"), formats.number(holdout.get("mae"), digits=3)),
            (translate("report.tracking.rmse"), formats.number(holdout.get("rmse"), digits=3)),
        ]
    return {
        "chart": Markup(chart) if chart else None,
        "caption": translate("report.tracking.caption", unit=unit),
        "metrics": metrics,
    }


# --- Section 8: model parameters --------------------------------------------------------------


def _model(data: ReportData, formats: _Formats) -> dict[str, Any]:
    translate = formats.translate
    models = data.model.get("models") or {}
    known_first = [name for name in _MODEL_TITLE_IDS if name in models]
    ordered = known_first + [name for name in models if name not in _MODEL_TITLE_IDS]
    tables = []
    for name in ordered:
        fit = models[name] or {}
        errors = fit.get("standard_errors") or {}
        title_id = _MODEL_TITLE_IDS.get(name)
        converged = fit.get("converged")
        if converged is None:
            converged_text = formats.undefined()
        else:
            converged_text = translate("report.value.yes" if converged else "report.value.no")
        tables.append({
            "title": translate(title_id) if title_id else name,
            "parameters": [
                (parameter, formats.significant(value), formats.significant(errors.get(parameter)))
                for parameter, value in (fit.get("params") or {}).items()
            ],
            "facts": [
                (translate("report.model.log_likelihood"), formats.number(fit.get("log_likelihood"))),
                (translate("report.model.n_customers"), formats.count(fit.get("n_customers"))),
                (translate("report.model.converged"), converged_text),
            ],
        })

    excluded = data.model.get("spend_excluded") or {}
    excluded_note = None
    if excluded.get("count"):
        excluded_note = translate(
            "report.model.spend_excluded",
            count=formats.count(excluded["count"]),
            examples=", ".join(str(customer_id) for customer_id in excluded.get("example_ids") or []),
        )
    calibration_end = data.model.get("calibration_end")
    time_note = translate(
        "report.model.time_unit",
        unit=formats.unit(data.model.get("time_unit") or data.settings.get("time_unit"), singular=True),
        date=_optional_date(calibration_end, formats),
    )
    return {"tables": tables, "time_note": time_note, "excluded_note": excluded_note,
            **_model_choice(data, formats)}


def _model_choice(data: ReportData, formats: _Formats) -> dict[str, Any]:
    """Build the purchase-model comparison, the reason for the choice, and holdout purchases by frequency."""
    selection = data.model.get("selection") or {}
    reason = selection.get("reason_zh" if data.language == "zh-CN" else "reason")
    comparison = []
    # Without --calibration-end there is no holdout period, which "undefined" would misstate.
    no_holdout = None if data.model.get("holdout") else formats.translate("report.model.no_holdout")
    for row in selection.get("comparison") or []:
        title_id = _MODEL_TITLE_IDS.get(row.get("name"))
        comparison.append({
            "model": formats.translate(title_id) if title_id else row.get("option"),
            "chosen": bool(row.get("chosen")),
            "failed": row.get("failed"),
            "log_likelihood": formats.number(row.get("log_likelihood")),
            "aic": formats.number(row.get("aic")),
            "bic": formats.number(row.get("bic")),
            "holdout_mae": no_holdout or formats.significant(row.get("holdout_mae")),
        })
    expectations = [
        {
            "frequency": row["frequency"],
            "customers": formats.count(row["customers"]),
            "actual": formats.significant(row["actual"]),
            "predicted": formats.significant(row["predicted"]),
        }
        for row in (data.model.get("diagnostics") or {}).get("conditional_expectations") or []
    ]
    ranking = (data.model.get("diagnostics") or {}).get("ranking") or {}
    ranking_note = None
    if ranking:
        ranking_note = formats.translate(
            "report.model.ranking", gini=formats.significant(ranking.get("gini")),
            capture=formats.percent(ranking.get("top_decile_capture")),
        )
    notes = [entry.get(data.language) or entry.get("en") for entry in data.model.get("warnings") or []]
    intervals = data.model.get("intervals") or {}
    if intervals and not intervals.get("available", True):
        notes.append(formats.translate("report.model.no_intervals"))
    return {"reason": reason, "comparison": comparison, "expectations": expectations, "ranking_note": ranking_note,
            "warnings": notes}


# --- Section 9: high-value customers at risk --------------------------------------------------


def _at_risk(data: ReportData, formats: _Formats) -> list[dict[str, str]]:
    """Rank customers by revenue at risk, (1 - P(alive)) x historical revenue, and keep the top.

    Historical revenue, not predicted CLV, measures the value here. Predicted CLV already scales
    with P(alive), so (1 - P(alive)) x CLV would be small both for customers surely lost and for
    customers surely active. Ties keep the order of the customer table. Customers with less than
    :data:`_MIN_AT_RISK` at risk, or with P(alive) of :data:`AT_RISK_MAX_ALIVE` or more, are left out.
    """
    customers = data.customers
    alive = customers["probability_alive"].to_numpy(dtype=float)
    revenue = customers["total_revenue"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        at_risk = (1.0 - alive) * revenue
    candidates = np.flatnonzero(np.isfinite(at_risk) & (at_risk >= _MIN_AT_RISK) & (alive < AT_RISK_MAX_ALIVE))
    if candidates.size > AT_RISK_ROWS:
        # Keep every customer tied with the last row, so that the stable sort decides ties.
        threshold = np.partition(at_risk[candidates], -AT_RISK_ROWS)[-AT_RISK_ROWS]
        candidates = candidates[at_risk[candidates] >= threshold]
    top = candidates[np.argsort(-at_risk[candidates], kind="stable")][:AT_RISK_ROWS]

    rows = []
    for position in top:
        record = customers.iloc[position]
        rows.append({
            "customer_id": str(record["customer_id"]),
            "segment": str(record["segment_label"]),
            "probability_alive": formats.percent(record["probability_alive"]),
            "clv": formats.money(record["clv"]),
            "total_revenue": formats.money(record["total_revenue"]),
            "last_purchase": formats.date(record["last_purchase"]),
            "at_risk": formats.money(at_risk[position]),
        })
    return rows


# --- Section 10: churn model ---------------------------------------------------------------------

_CHURN_SCORE_IDS = {
    "model": "report.churn.score.model",
    "bgnbd_p_alive": "report.churn.score.bgnbd_p_alive",
    "bgnbd_no_purchase": "report.churn.score.bgnbd_no_purchase",
}


def _churn(data: ReportData, formats: _Formats) -> dict[str, Any] | None:
    """Compare the learned churn model with the BG/NBD baselines on the later cut-off."""
    churn = data.model.get("churn")
    if not churn:
        return None
    rows = []
    for name, title_id in _CHURN_SCORE_IDS.items():
        metrics = (churn.get("scores") or {}).get(name)
        if not metrics:
            continue
        rows.append({
            "score": formats.translate(title_id),
            "roc_auc": formats.number(metrics.get("roc_auc"), 3),
            "pr_auc": formats.number(metrics.get("pr_auc"), 3),
            "brier": formats.number(metrics.get("brier"), 3),
            "lift": formats.number(metrics.get("top_decile_lift"), 2),
            "capture": formats.percent(metrics.get("top_decile_capture")),
        })
    calibration = [
        {"range": f"{formats.percent(bin_['lower'], 0)}-{formats.percent(bin_['upper'], 0)}",
         "count": formats.count(bin_["count"]), "predicted": formats.percent(bin_.get("mean_predicted")),
         "observed": formats.percent(bin_.get("observed_rate"))}
        for bin_ in ((churn.get("scores") or {}).get("model") or {}).get("calibration") or [] if bin_["count"]
    ]
    setup = formats.translate(
        "report.churn.setup", days=churn.get("horizon_days"), train_cutoff=churn.get("train_cutoff"),
        eval_cutoff=churn.get("eval_cutoff"), end=churn.get("end"), customers=formats.count(churn.get("eval_customers")),
        rate=formats.percent(churn.get("eval_churn_rate")),
    )
    share = churn.get("sample_share", 1.0)
    if share is not None and share < 1.0:
        setup += " " + formats.translate("report.churn.sampled", share=formats.percent(share))
    verdict = formats.translate("report.churn.beats" if churn.get("beats_baseline") else "report.churn.not_beats")
    return {"setup": setup, "verdict": verdict, "rows": rows, "calibration": calibration}


# --- Section 11: recommendations -----------------------------------------------------------------

_RECOMMENDATION_METRICS = ("precision@5", "recall@5", "precision@10", "recall@10", "map@10", "ndcg@10", "coverage")


def _recommendations(data: ReportData, formats: _Formats) -> dict[str, Any] | None:
    """Every recommendation method beside the popularity baseline, on the time split."""
    summary = data.model.get("recommendations")
    if not summary:
        return None
    rows = []
    for record in summary.get("evaluation") or []:
        rows.append({
            "method": formats.translate(f"report.recommendations.method.{record['method']}"),
            "chosen": record["method"] == summary.get("method"),
            "values": [formats.number(record.get(metric), 3) for metric in _RECOMMENDATION_METRICS],
        })
    chosen = formats.translate(f"report.recommendations.method.{summary.get('method')}")
    caption = formats.translate("report.recommendations.caption", method=chosen, k=summary.get("k"),
                                split_date=formats.date(summary.get("split_date")),
                                as_of=formats.date(summary.get("as_of")))
    share = summary.get("evaluation_sample_share")
    if share is not None and share < 1.0:
        caption += " " + formats.translate("report.recommendations.sampled", share=formats.percent(share))
    return {"caption": caption, "metrics": _RECOMMENDATION_METRICS, "rows": rows}


# --- Section 12: next best actions ----------------------------------------------------------------

ACTION_ORDER = ("win_back", "cross_sell", "upsell", "replenishment_reminder", "loyalty_invitation", "no_contact")


def _actions(data: ReportData, formats: _Formats) -> dict[str, Any] | None:
    """Customers and expected value per action by segment, and one sample message per action."""
    summary = data.model.get("actions")
    if not summary:
        return None
    by_segment = pd.DataFrame(summary.get("by_segment") or [])
    if by_segment.empty:
        return None
    actions = [code for code in ACTION_ORDER if code in set(by_segment.next_best_action)]
    segment_order = [code for code in SEGMENT_CODES if code in set(by_segment.segment)]
    counts = by_segment.pivot_table(index="segment", columns="next_best_action", values="customers", aggfunc="sum",
                                    fill_value=0)
    values = by_segment.pivot_table(index="segment", columns="next_best_action", values="value", aggfunc="sum",
                                    fill_value=0.0)

    rows = []
    for code in segment_order:
        rows.append({
            "segment": label(code, data.language),
            "cells": [formats.count(counts.loc[code].get(action, 0)) for action in actions],
            "value": formats.money(float(values.loc[code].sum())),
        })
    totals = {
        "cells": [formats.count(counts[action].sum()) for action in actions],
        "value": formats.money(float(values.to_numpy().sum())),
    }

    samples = []
    suffix = "zh" if data.language == "zh-CN" else "en"
    customers = data.customers
    if {"next_best_action", f"message_{suffix}", "action_value"} <= set(customers.columns):
        for action in actions:
            chosen = customers[(customers.next_best_action == action) & customers[f"message_{suffix}"].notna()]
            if len(chosen):
                best = chosen.sort_values("action_value", ascending=False, kind="stable").iloc[0]
                samples.append({"action": formats.translate(f"actions.label.{action}"),
                                "text": str(best[f"message_{suffix}"])})

    return {
        "headers": [formats.translate(f"actions.label.{action}") for action in actions],
        "rows": rows, "totals": totals, "samples": samples,
    }
