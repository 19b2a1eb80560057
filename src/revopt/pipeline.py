"""The main job: order export in, scored customers, model, KPIs, report and rejected rows out.

``analyze`` runs the steps in order. Ingest turns files into clean lines and daily purchases;
customer summaries and KPIs run in the engine. The purchase models and Gamma-Gamma are fitted on
compressed statistics, one purchase model is chosen (see ``selection``), and its scores are
joined back in the engine. RFM segments and value tiers follow, then the output files. Outputs are
written into a temporary folder beside ``out_dir`` and moved into place only when every step
succeeded, so a failed run leaves nothing half-written.
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime as dt
import json
import logging
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import ibis
from ibis import _
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from revopt import segments as seg
from revopt.errors import ConfigError, DataQualityWarning, FitError, InputError, RevoptWarning, check_range
from revopt.i18n import detect_language
from revopt.ingest import CORE_LINE_COLUMNS, LINE_COLUMNS, load_orders
from revopt.holdout import holdout_report, holdout_validation, tracking_series
from revopt.kpis import compute_kpis
from revopt.store import stored_tables
from revopt import diagnostics
from revopt.models import GammaGammaModel, customer_lifetime_value
from revopt.selection import MODEL_CHOICES, PurchaseModelChoice, choose, comparison_records, fit_purchase_models
from revopt.summary import MIN_SPEND, compressed_statistics, customer_summary, to_date
from revopt.timeunits import DAYS_PER_UNIT, check_time_unit, parse_horizon
from revopt.workspace import (DATABASE_NAME, DEFAULT_MEMORY_LIMIT, check_memory_limit, connect_backend, masked_url,
                              open_workspace)

__all__ = ["AnalysisSettings", "AnalysisResult", "analyze", "OUTPUT_FILES"]

log = logging.getLogger(__name__)


ARROW_DATE = pd.ArrowDtype(pa.date32())
OUTPUT_FILES = ("customers.parquet", "customers.csv", "recommendations.csv", "model.json", "kpis.json", "report.html",
                "rejected.csv")


@dataclass(frozen=True)
class AnalysisSettings:
    """Options of one ``analyze`` run; the CLI maps its flags onto these fields one to one."""

    calibration_end: dt.date | None = None
    time_unit: str = "week"
    horizon: str = "12M"
    discount_rate: float = 0.10
    margin: float = 1.0
    tz: str | None = None
    currency: str = "CNY"
    language: str | None = None
    column_map: tuple[str, ...] = ()
    dayfirst: bool | None = None
    date_format: str | None = None
    duplicates: str = "auto"
    max_invalid_share: float = 0.01
    workspace: Path | None = None
    backend: object = None  # an Ibis backend URL such as pyspark://, or a connected Ibis backend
    model: str = "auto"
    memory_limit: str = DEFAULT_MEMORY_LIMIT
    churn_days: int = 90
    top_k: int = 10
    actions_config: Path | None = None
    shop_name: str | None = None
    growth: bool = True  # churn, recommendations, next best actions and messages after the CLV models

    def validated(self) -> AnalysisSettings:
        check_time_unit(self.time_unit)
        parse_horizon(self.horizon, self.time_unit)
        # Named as the CLI options, since operators read these messages.
        check_range("--discount-rate", self.discount_rate, low=0.0, high=1.0)
        check_range("--margin", self.margin, low=0.0, high=1.0, low_inclusive=False)
        check_range("--max-invalid", self.max_invalid_share, low=0.0, high=1.0)
        check_range("--churn-days", self.churn_days, low=1)
        check_range("--top-k", self.top_k, low=1)
        detect_language(self.language)
        if self.model not in MODEL_CHOICES:
            raise ConfigError(message_id="errors.unknown_model", value=repr(self.model),
                              choices=", ".join(MODEL_CHOICES))
        if self.tz is not None:
            _check_time_zone(self.tz)
        check_memory_limit(self.memory_limit)
        if self.date_format is not None:
            _check_date_format(self.date_format)
        if self.actions_config is not None:
            from revopt.actions import load_action_config

            load_action_config(self.actions_config)  # a bad file stops the run before any work
        return self


def _check_date_format(date_format: str) -> None:
    """Raise ConfigError unless DuckDB accepts ``date_format`` as a strptime format."""
    import duckdb

    try:
        duckdb.connect().execute("SELECT try_strptime('2024-01-01', ?)", [date_format]).fetchall()
    except duckdb.Error as error:
        raise ConfigError(message_id="errors.bad_date_format", value=repr(date_format),
                          detail=str(error).splitlines()[0]) from error


def _check_time_zone(tz: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ConfigError(message_id="errors.bad_time_zone", tz=repr(tz)) from error


@dataclass
class AnalysisResult:
    """Outputs of ``analyze``: the output folder, the fitted models and the summaries behind the files."""

    out_dir: Path
    customers: pd.DataFrame
    model: dict
    kpis: dict
    ingest: dict
    tracking: pd.DataFrame | None
    timings: dict = field(default_factory=dict)
    purchase_model: object | None = None
    gamma_gamma: GammaGammaModel | None = None
    selection: PurchaseModelChoice | None = None


class _StepTimer:
    """Log each step with its duration; pass a progress callback to show steps to an operator."""

    def __init__(self, progress: Callable[[str], None] | None) -> None:
        self.progress = progress
        self.timings: dict[str, float] = {}

    def __call__(self, step: str):
        timer = self

        class _Step:
            def __enter__(self):
                if timer.progress:
                    timer.progress(step)
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                elapsed = time.perf_counter() - self.start
                timer.timings[step] = elapsed
                log.info("event=step_done step=%s seconds=%.3f", step, elapsed)

        return _Step()


def analyze(
    orders: str | Path | None,
    out_dir: str | Path,
    settings: AnalysisSettings = AnalysisSettings(),
    *,
    progress: Callable[[str], None] | None = None,
) -> AnalysisResult:
    """Run the main job on ``orders`` and write every output file into ``out_dir``.

    With ``orders=None`` the job runs on the orders stored in ``settings.workspace`` by
    :func:`revopt.store.add_orders` (incremental daily loads).

    Raises
    ------
    InputError, ConfigError
        Bad input or options; nothing is written into ``out_dir``.
    """
    settings = settings.validated()
    language = detect_language(settings.language)
    if orders is None and settings.workspace is None:
        raise ConfigError(message_id="errors.no_orders_no_workspace")
    if orders is None and not (Path(settings.workspace) / DATABASE_NAME).is_file():
        # Checked before the workspace is opened, which would create it.
        raise InputError(message_id="errors.empty_workspace", workspace=settings.workspace)
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(message_id="errors.bad_out_dir", path=out_dir, detail=error.strerror or error) from error
    step = _StepTimer(progress)
    scratch = Path(tempfile.mkdtemp(prefix=".revopt-", dir=out_dir))
    temporary_workspace = settings.workspace is None
    workspace = scratch / "workspace" if temporary_workspace else Path(settings.workspace)
    try:
        try:
            result = _run(orders, scratch, workspace, settings, language, step)
        except duckdb.OutOfMemoryException as error:
            raise ConfigError(message_id="errors.engine_out_of_memory", limit=settings.memory_limit,
                              source=orders if orders is not None else settings.workspace,
                              detail=str(error).strip().splitlines()[0]) from error
        for name in OUTPUT_FILES:
            (scratch / name).replace(out_dir / name)
        result.out_dir = out_dir
        return result
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(orders, scratch: Path, workspace: Path, settings: AnalysisSettings, language: str, step) -> AnalysisResult:
    con = open_workspace(workspace, memory_limit=settings.memory_limit)
    with step("ingest"):
        if orders is None:
            tables = stored_tables(con, workspace)
            orders = workspace
        else:
            tables, _, _ = load_orders(
                orders, con=con, staging_dir=workspace / "staging", column_map=list(settings.column_map),
                dayfirst=settings.dayfirst, date_format=settings.date_format, tz=settings.tz,
                duplicates=settings.duplicates, max_invalid_share=settings.max_invalid_share,
                # Without the growth step only the models' and KPIs' columns are read.
                line_columns=LINE_COLUMNS if settings.growth else CORE_LINE_COLUMNS,
            )
    ingest = dict(tables.stats)
    log.info("event=ingest_done rows_read=%d rows_kept=%d rows_rejected=%d purchases=%d", ingest["rows_read"],
             ingest["rows_kept"], ingest["rows_rejected"], ingest["purchases"])

    lines, purchases = tables.lines, tables.purchases
    if settings.backend:
        lines, purchases = _move_to_backend(settings.backend, lines, purchases)

    observation_end = to_date(purchases.order_date.max().execute())
    if observation_end is None:
        raise InputError(message_id="errors.no_purchases", source=orders)
    calibration_end = settings.calibration_end or observation_end
    first_date = to_date(purchases.order_date.min().execute())
    if not first_date < calibration_end <= observation_end:
        raise ConfigError(message_id="errors.calibration_outside", calibration_end=calibration_end,
                          first=first_date, last=observation_end)
    holdout = calibration_end < observation_end

    with step("kpis"):
        kpis = compute_kpis(lines, purchases, period="month")
        kpis["currency"] = settings.currency

    # Model warnings are collected, so that model.json and the report list them, then passed on.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        customers, model, tracking, selection, gamma_gamma, purchase_model = _fit_and_score(
            purchases, lines, settings, language, step, first_date=first_date, calibration_end=calibration_end,
            observation_end=observation_end, holdout=holdout,
        )
        growth = None
        if settings.growth:
            # Imported here: the growth step loads scikit-learn and LightGBM (about 60 MiB), which
            # a run without it does not need.
            from revopt.growth import GrowthSettings, grow_customers

            growth = grow_customers(
                lines, purchases, customers, observation_end=observation_end, step=step, clv_margin=settings.margin,
                settings=GrowthSettings(churn_days=settings.churn_days, top_k=settings.top_k,
                                        actions_config=settings.actions_config, shop_name=settings.shop_name,
                                        currency=settings.currency),
                recommendations_path=scratch / "recommendations.csv",
            )
    if growth is not None:
        customers = customers.merge(growth.columns, on="customer_id", how="left", validate="one_to_one")
        model.update(growth.summary)
    else:
        model.update({"churn": None, "recommendations": None, "actions": None})
    model["language"] = language
    model["growth"] = settings.growth
    model["warnings"] = [
        {"en": warning.message.localized("en"), "zh-CN": warning.message.localized("zh-CN")}
        for warning in caught if isinstance(warning.message, RevoptWarning)
    ]
    for warning in caught:  # shown to the caller too, for example the CLI
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)

    with step("write"):
        _write_outputs(scratch, customers, model, kpis, tables.rejected, language)
        if growth is None:  # with growth, grow_customers wrote the file chunk by chunk
            pd.DataFrame(columns=["customer_id"]).to_csv(scratch / "recommendations.csv", index=False,
                                                         encoding="utf-8-sig")
        from revopt.report import ReportData, write_report

        ingest_for_report = {key: value for key, value in ingest.items() if key != "columns"}
        report = ReportData(
            language=language,
            settings=_report_settings(settings, orders, calibration_end, observation_end, holdout),
            kpis=kpis,
            model=model,
            customers=_with_labels(customers, language),
            segments_table=seg.segment_table(language),
            ingest=ingest_for_report,
            tracking=tracking,
        )
        write_report(report, scratch / "report.html")
    return AnalysisResult(scratch, customers, model, kpis, ingest, tracking, step.timings, purchase_model,
                          gamma_gamma, selection)


def _fit_and_score(purchases, lines, settings: AnalysisSettings, language: str, step, *, first_date, calibration_end,
                   observation_end, holdout: bool):
    """Fit the models on the calibration period, choose the purchase model, score and validate."""
    with step("fit"):
        # Computed once: the fits, the checks and (without a holdout) the scoring all read it.
        calibration = customer_summary(purchases, calibration_end=calibration_end, time_unit=settings.time_unit).cache()
        if calibration.frequency.max().execute() < 1:
            if settings.calibration_end is None:
                raise InputError(message_id="errors.no_repeat_purchases_at_all", first=first_date,
                                 last=calibration_end)
            raise ConfigError(message_id="errors.no_repeat_purchases", first=first_date,
                              calibration_end=calibration_end)
        stats = compressed_statistics(calibration).to_pandas()
        fitted, failures = fit_purchase_models(stats, time_unit=settings.time_unit, choice=settings.model)
        gamma_gamma, spend_excluded = _fit_spend(calibration)

    validation = None
    if holdout:
        with step("holdout"):
            validation = holdout_validation(calibration, purchases, fitted, calibration_end, observation_end,
                                            settings.time_unit)
    selection = choose(fitted, failures, n_customers=float(stats["count"].sum()), choice=settings.model,
                       holdout=validation and validation["pairs"])
    purchase_model = selection.model
    log.info("event=purchase_model_chosen model=%s reason=%s", selection.chosen, selection.reason("en"))
    _warn_one_time_buyers(stats, purchase_model, auto=settings.model == "auto")
    n_customers = int(stats["count"].sum())
    if n_customers < FEW_CUSTOMERS:
        warnings.warn(DataQualityWarning(message_id="warnings.few_customers", count=n_customers), stacklevel=2)

    with step("score"):
        customers = _score_customers(
            purchases, lines, purchase_model, gamma_gamma, observation_end=observation_end, settings=settings,
            history=None if holdout else calibration,
        )
        _check_finite(customers, purchase_model, gamma_gamma)
        _warn_no_dropout(customers, selection.chosen)
        customers = _add_segments(customers, observation_end, language)
    model = _model_json(selection, gamma_gamma, settings, calibration_end, observation_end, spend_excluded)
    model["rfm_edges"] = customers.attrs.pop("rfm_edges")

    tracking = None
    model["holdout"] = None
    model["intervals"] = customers.attrs.pop("intervals")
    if holdout:
        with step("diagnostics"):
            model["holdout"], model["diagnostics"] = holdout_report(
                validation, selection, gamma_gamma, calibration_end, observation_end
            )
            tracking = tracking_series(calibration, purchases, purchase_model, calibration_end, observation_end,
                                       settings.time_unit)

    return customers, model, tracking, selection, gamma_gamma, purchase_model


def _move_to_backend(backend, lines: ibis.Table, purchases: ibis.Table):
    """Copy the clean tables to another Ibis backend (a URL or a connected backend), where summaries and KPIs run."""
    if isinstance(backend, str):
        url = backend
        backend = connect_backend(url)
        log.info("event=backend_connected url=%s", masked_url(url))
    return _upload(backend, "revopt_lines", lines), _upload(backend, "revopt_purchases", purchases)


def _upload(backend, name: str, table: ibis.Table) -> ibis.Table:
    arrow = table.to_pyarrow()
    if backend.name == "pyspark":
        # NOTE: ibis 12.0.0 create_table on PySpark 4.0.1 turns NULL strings into the text "NaN"
        # (it goes through pandas), so guests would become one customer; Spark's own Arrow path keeps NULLs.
        backend._session.createDataFrame(arrow).createOrReplaceTempView(name)
        return backend.table(name)
    return backend.create_table(name, arrow, overwrite=True)


def _fit_spend(calibration: ibis.Table):
    """Fit Gamma-Gamma on compressed (x, mean spend) rows of customers with positive repeat spend."""
    repeat = calibration.filter(calibration.frequency > 0)
    usable = repeat.monetary_value > MIN_SPEND
    excluded = repeat.filter(~usable)
    spend_excluded = {
        "count": int(excluded.count().execute()),
        "example_ids": excluded.order_by("customer_id").customer_id.to_pandas().head(5).tolist(),
    }
    if spend_excluded["count"]:
        log.info("event=spend_excluded customers=%d reason=repeat purchases net to zero or less examples=%s",
                 spend_excluded["count"], spend_excluded["example_ids"])
    spend = repeat.filter(usable).group_by(["frequency", "monetary_value"]).aggregate(count=_.count()).to_pandas()
    gamma_gamma = GammaGammaModel().fit(
        spend.frequency.to_numpy(float), spend.monetary_value.to_numpy(float), weights=spend["count"].to_numpy(float)
    )
    return gamma_gamma, spend_excluded


def _score_customers(purchases, lines, purchase_model, gamma_gamma, *, observation_end: dt.date,
                     settings: AnalysisSettings, history: ibis.Table | None = None):
    """Score every customer on their whole history: predictions per distinct (x, t_x, T), joined back in the engine.

    ``history`` is the customer summary up to ``observation_end`` when the caller has it already.
    """
    unit = settings.time_unit
    days = DAYS_PER_UNIT[unit]
    horizon = parse_horizon(settings.horizon, unit)
    if history is None:
        history = customer_summary(purchases, calibration_end=observation_end, time_unit=unit).cache()
    keys = compressed_statistics(history).to_pandas()
    x = keys.frequency.to_numpy(float)
    t_x = keys.recency_days.to_numpy(float) / days
    T = keys.T_days.to_numpy(float) / days
    predictions = pd.DataFrame({
        "frequency": keys.frequency.to_numpy(),
        "recency_days": keys.recency_days.to_numpy(),
        "T_days": keys.T_days.to_numpy(),
        "probability_alive": purchase_model.probability_alive(x, t_x, T),
        "expected_purchases": purchase_model.expected_purchases(horizon, x, t_x, T),
        # Discounted expected purchases: CLV per unit of spend and margin.
        "discounted_purchases": customer_lifetime_value(
            purchase_model, np.ones_like(x), x, t_x, T, horizon=horizon, discount_rate=settings.discount_rate,
            margin=1.0, time_unit=unit,
        ),
    })
    intervals = _add_uncertainty(predictions, purchase_model, horizon, x, t_x, T, days_per_unit=days)
    scored = history.join(ibis.memtable(predictions), ["frequency", "recency_days", "T_days"])

    p, q, gamma = (gamma_gamma.params_[name] for name in ("p", "q", "gamma"))
    population_mean = p * gamma / (q - 1) if q > 1 else float("nan")
    usable = (scored.frequency > 0) & (scored.monetary_value > MIN_SPEND)
    expected_value = ibis.ifelse(
        usable, p * (gamma + scored.frequency * scored.monetary_value) / (p * scored.frequency + q - 1),
        population_mean,
    )
    totals = lines.filter(lines.customer_id.notnull()).group_by("customer_id").aggregate(
        total_revenue=_.amount.sum(), orders=_.order_id.nunique(where=~_.is_return),
    )
    scored = scored.join(totals, "customer_id", how="left").select(
        "customer_id", "first_purchase", "last_purchase", "frequency", "recency", "T", "monetary_value",
        "total_revenue", "orders", "probability_alive", "expected_purchases", "expected_purchases_low",
        "expected_purchases_high",
        expected_average_value=expected_value,
        clv=scored.discounted_purchases * expected_value * settings.margin,
        clv_low=scored.discounted_purchases_low * expected_value * settings.margin,
        clv_high=scored.discounted_purchases_high * expected_value * settings.margin,
        next_purchase_days_early=scored.next_purchase_days_early,
        next_purchase_days=scored.next_purchase_days,
        next_purchase_days_late=scored.next_purchase_days_late,
    ).order_by("customer_id")
    # Arrow buffers are released column by column as pandas takes them over, so the customer table
    # is not held twice while it is converted (10 million customers are about 2 GB).
    customers = scored.to_pyarrow().to_pandas(self_destruct=True, split_blocks=True,
                                              types_mapper={pa.date32(): ARROW_DATE}.get)
    customers.attrs["intervals"] = intervals
    for days_column, date_column in (("next_purchase_days_early", "next_purchase_date_early"),
                                     ("next_purchase_days", "next_purchase_date"),
                                     ("next_purchase_days_late", "next_purchase_date_late")):
        waits = pd.to_timedelta(customers.pop(days_column), unit="D")
        # Arrow dates take 4 bytes a customer, where datetime.date objects take about 30.
        customers[date_column] = (pd.Timestamp(observation_end) + waits).dt.ceil("D").astype(ARROW_DATE)
    # Day numbers straight from the Arrow dates; pandas would convert them to timestamps one by one.
    last_day = pa.array(customers.last_purchase).cast(pa.int32()).to_numpy()
    customers["recency_days_since_last"] = (observation_end - dt.date(1970, 1, 1)).days - last_day.astype(np.int64)
    return customers


# Intervals for expected purchases and CLV: 90%, from the parameters' uncertainty by the delta method
# on the log scale (nine evaluations of the model for four parameters, whatever the number of
# customers); on CDNOW its bounds agree with the quantiles of 20,000 parameter draws to 3%.
INTERVAL_LEVEL = 0.9
INTERVAL_METHOD = "delta_log"
# Probability of having bought again by the date -> the column holding the days until then: the
# median, and an 80% interval around it.
NEXT_PURCHASE_QUANTILES = {0.1: "next_purchase_days_early", 0.5: "next_purchase_days", 0.9: "next_purchase_days_late"}


def _add_uncertainty(predictions: pd.DataFrame, model, horizon: float, x, t_x, T, *, days_per_unit: float) -> dict:
    """Add 90% intervals from parameter uncertainty, and the median days to the next purchase.

    The next purchase date is the day by which the customer has bought again with probability 0.5;
    it is empty where that probability is not reached within the horizon (P(alive) at most 0.5, or a
    slow buyer).

    The interval for expected purchases comes from the purchase model's parameter covariance by
    the delta method (:func:`revopt.diagnostics.delta_interval`). The CLV interval scales
    discounted purchases by the same ratio as the interval of expected purchases over the horizon.
    That approximation leaves out the spend model's uncertainty. Where the covariance is undefined
    the bounds are NaN.
    """
    point = predictions["expected_purchases"].to_numpy(float)
    status = {"available": True, "level": INTERVAL_LEVEL, "method": INTERVAL_METHOD, "reason": None}
    try:
        interval = diagnostics.delta_interval(
            model, lambda params: diagnostics.with_params(model, params).expected_purchases(horizon, x, t_x, T),
            level=INTERVAL_LEVEL,
        )
        low, high = interval["lower"], interval["upper"]
    except FitError as error:
        log.info("event=interval_skipped reason=%s", error)
        low = high = np.full_like(point, np.nan)
        status.update(available=False, reason=str(error))
    predictions["expected_purchases_low"] = low
    predictions["expected_purchases_high"] = high
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_low = np.where(point > 0, low / point, 0.0)
        ratio_high = np.where(point > 0, high / point, 0.0)
    predictions["discounted_purchases_low"] = predictions["discounted_purchases"] * ratio_low
    predictions["discounted_purchases_high"] = predictions["discounted_purchases"] * ratio_high

    for column in NEXT_PURCHASE_QUANTILES.values():
        predictions[column] = np.nan
    if model.name in ("bg_nbd", "mbg_nbd", "pareto_nbd"):
        times = diagnostics.next_purchase_time(model, x, t_x, T, quantiles=tuple(NEXT_PURCHASE_QUANTILES))
        for quantile, column in NEXT_PURCHASE_QUANTILES.items():
            waits = times[f"time_p{round(quantile * 100)}"].to_numpy(float)
            # A wait beyond the horizon is no date to plan around, so it stays empty.
            predictions[column] = np.where(waits <= horizon, waits * days_per_unit, np.nan)
    return status


# Fewer calibration customers than this get a warning: a rough floor, since the published CDNOW fits
# use 2,357 customers and simulated fits of 4 parameters need several hundred to land within a few
# standard errors of the truth.
FEW_CUSTOMERS = 100
# A fit in which this share of customers has P(alive) above NO_DROPOUT_ALIVE has found no dropout.
NO_DROPOUT_SHARE = 0.99
NO_DROPOUT_ALIVE = 0.99


def _warn_no_dropout(customers: pd.DataFrame, model_option: str) -> None:
    """Warn when the purchase model (named as its --model option) considers nearly every customer alive."""
    share = float((customers.probability_alive > NO_DROPOUT_ALIVE).mean())
    if share >= NO_DROPOUT_SHARE:
        warnings.warn(DataQualityWarning(message_id="warnings.no_dropout", model=model_option,
                                         share=f"{share:.1%}", threshold=f"{NO_DROPOUT_ALIVE:.0%}"), stacklevel=2)


# Above this share of one-time buyers, BG/NBD's P(alive) = 1 for all of them drives most scores.
ONE_TIME_SHARE_WARNING = 0.5


def _warn_one_time_buyers(stats: pd.DataFrame, purchase_model, *, auto: bool) -> None:
    """Warn when BG/NBD scores a base of mostly one-time buyers, whom it always considers alive.

    When ``--model auto`` chose BG/NBD, the warning names the other models rather than auto again.
    """
    share = float(stats["count"][stats.frequency == 0].sum() / stats["count"].sum())
    if purchase_model.name == "bg_nbd" and share > ONE_TIME_SHARE_WARNING:
        message_id = "warnings.mostly_one_time_auto" if auto else "warnings.mostly_one_time"
        warnings.warn(DataQualityWarning(message_id=message_id, share=f"{share:.0%}"), stacklevel=3)


def _check_finite(customers: pd.DataFrame, purchase_model, gamma_gamma) -> None:
    """Raise FitError when a model gives NaN or infinite predictions, rather than writing them out."""
    predictions = customers[["probability_alive", "expected_purchases"]].to_numpy(float)
    broken = int((~np.isfinite(predictions)).any(axis=1).sum())
    if broken:
        params = ", ".join(f"{name}={value:.4g}" for name, value in purchase_model.params_.items())
        raise FitError(message_id="errors.predictions_not_finite", model=purchase_model.name, params=params,
                       count=broken)
    undefined = int((~np.isfinite(customers.clv.to_numpy(float))).sum())
    if undefined:
        raise FitError(message_id="errors.spend_undefined", q=f"{gamma_gamma.params_['q']:.4g}", count=undefined)


def _add_segments(customers: pd.DataFrame, observation_end: dt.date, language: str) -> pd.DataFrame:
    scores = seg.score_rfm(
        customers.pop("recency_days_since_last").to_numpy(), customers.frequency.to_numpy() + 1,
        customers.total_revenue.to_numpy(),
    )
    customers["r_score"], customers["f_score"], customers["m_score"] = scores.r_score, scores.f_score, scores.m_score
    segment = seg.assign_segments(scores)
    tiers = seg.assign_value_tiers(customers.clv.fillna(0.0).to_numpy())
    # Codes and labels stay categorical: a few distinct texts, one byte per customer each, where text
    # columns would take about 110 MB per million customers. The files hold them as plain text.
    for column, codes in (("segment", segment), ("value_tier", tiers)):
        customers[column] = codes
        for suffix, code_language in (("zh", "zh-CN"), ("en", "en")):
            labels = [seg.label(code, code_language) for code in codes.categories]
            customers[f"{column}_{suffix}"] = codes.rename_categories(labels)
    customers.attrs["rfm_edges"] = scores.edges_to_dict()
    return customers


def _with_labels(customers: pd.DataFrame, language: str) -> pd.DataFrame:
    suffix = "zh" if language == "zh-CN" else "en"
    return customers.assign(
        segment_label=customers[f"segment_{suffix}"], value_tier_label=customers[f"value_tier_{suffix}"]
    )


def _model_json(selection: PurchaseModelChoice, gamma_gamma, settings, calibration_end, observation_end,
                spend_excluded) -> dict:
    models = {model.name: model.to_dict() for model in selection.models.values()}
    return {
        "time_unit": settings.time_unit,
        "calibration_end": calibration_end.isoformat(),
        "observation_end": observation_end.isoformat(),
        "horizon": settings.horizon,
        "horizon_units": parse_horizon(settings.horizon, settings.time_unit),
        "discount_rate_annual": settings.discount_rate,
        "margin": settings.margin,
        "purchase_model": selection.model.name,
        "selection": {
            "requested": settings.model,
            "chosen": selection.chosen,
            "reason": selection.reason("en"),
            "reason_zh": selection.reason("zh-CN"),
            "comparison": comparison_records(selection),
        },
        "models": models | {"gamma_gamma": gamma_gamma.to_dict()},
        "spend_excluded": spend_excluded,
    }


def _write_outputs(folder: Path, customers: pd.DataFrame, model: dict, kpis: dict, rejected, language: str) -> None:
    _write_customer_files(folder, customers)
    for name, content in (("model.json", model), ("kpis.json", kpis)):
        text = json.dumps(_without_nan(content), ensure_ascii=False, indent=2, default=_json_default, allow_nan=False)
        (folder / name).write_text(text, encoding="utf-8")
    _write_rejected(folder / "rejected.csv", rejected, language)


# Customers converted to Arrow at once when writing the customer files; the memory of writing grows
# with this, not with the shop.
WRITE_CHUNK_ROWS = 500_000


def _write_customer_files(folder: Path, customers: pd.DataFrame) -> None:
    """Write customers.parquet and customers.csv (UTF-8 with BOM, for Excel) a chunk of rows at a time.

    Arrow's writers stream each chunk in C++, so a file of millions of customers is fast and needs
    no second full copy of the table in memory.
    """
    # pandas' own metadata is left out, so the files do not depend on how pandas held the columns.
    schema = pa.schema([_file_field(field) for field in pa.Schema.from_pandas(customers, preserve_index=False)])
    with pq.ParquetWriter(folder / "customers.parquet", schema) as parquet, \
            open(folder / "customers.csv", "wb") as sink:
        sink.write(codecs.BOM_UTF8)
        with pacsv.CSVWriter(sink, schema) as csv_writer:
            for start in range(0, max(len(customers), 1), WRITE_CHUNK_ROWS):
                chunk = pa.Table.from_pandas(customers.iloc[start:start + WRITE_CHUNK_ROWS],
                                             preserve_index=False).cast(schema, safe=False)
                parquet.write_table(chunk)
                csv_writer.write_table(chunk)


def _file_field(field: pa.Field) -> pa.Field:
    """Return the type a customer column has in the files: categories as text, day columns as dates.

    A column without any value (no names in the export) is text, and a ``*_date`` timestamp (a
    replenishment due date) is cut to its day, like the other date columns.
    """
    if pa.types.is_dictionary(field.type):
        return field.with_type(field.type.value_type)
    if pa.types.is_null(field.type):
        return field.with_type(pa.string())
    if field.name.endswith("_date") and pa.types.is_timestamp(field.type):
        return field.with_type(pa.date32())
    return field


def _write_rejected(path: Path, rejected, language: str) -> None:
    """Write the rejected rows with a reason text in ``language``, from the engine, as UTF-8 with BOM.

    The rows go from the engine to the file without passing through pandas, since a large export can
    reject millions of rows (closed orders).
    """
    from revopt.i18n import message

    codes = rejected.select("reason").distinct().to_pandas().reason.tolist()
    texts = ibis.memtable({"reason": codes, "reason_text": [message(f"ingest.reason.{code}", language)
                                                            for code in codes]},
                          schema={"reason": "string", "reason_text": "string"})
    columns = list(rejected.columns)
    ordered = columns[:3] + ["reason_text"] + columns[3:]
    table = rejected.left_join(texts, "reason").select(*ordered).order_by(["source_file", "source_row"])
    body = path.with_name(path.name + ".body")
    table.to_csv(body)
    with open(path, "wb") as sink, open(body, "rb") as source:
        sink.write(codecs.BOM_UTF8)
        shutil.copyfileobj(source, sink, length=16 * 1024 * 1024)
    body.unlink()


def _without_nan(value):
    """Replace NaN and infinities by None, since JSON has no such numbers (strict parsers reject them)."""
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(item) for item in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    return value


def _json_default(value):
    if isinstance(value, (dt.date, pd.Timestamp)):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _report_settings(settings: AnalysisSettings, orders, calibration_end, observation_end, holdout: bool) -> dict:
    return {
        "source": str(orders),
        "generated_at": dt.datetime.now().isoformat(timespec="seconds"),
        "time_unit": settings.time_unit,
        "horizon": settings.horizon,
        "horizon_units": parse_horizon(settings.horizon, settings.time_unit),
        "discount_rate": settings.discount_rate,
        "margin": settings.margin,
        "currency": settings.currency,
        "tz": settings.tz,
        "calibration_end": calibration_end.isoformat() if holdout else None,
        "holdout_end": observation_end.isoformat() if holdout else None,
    }


RECOMMEND_FILES = ("recommendations.csv", "recommendation_evaluation.csv")


def recommend_orders(orders: str | Path, out_dir: str | Path, settings: AnalysisSettings = AnalysisSettings(), *,
                     k: int = 10, method: str = "auto", basket: str = "order", customers: tuple[str, ...] = (),
                     progress: Callable[[str], None] | None = None):
    """Read ``orders`` and write the top ``k`` products per customer, with reasons, into ``out_dir``.

    Unlike :func:`analyze`, an export without amounts (baskets only) is accepted. Writes
    recommendations.csv (one row per customer and rank, reasons in zh-CN and en) and
    recommendation_evaluation.csv (the time-split metrics of each method), both UTF-8 with BOM.

    Returns
    -------
    revopt.recommend.RecommendationResult
        ``items``, ``upsell`` and ``replenishment`` of the requested ``customers``, ``items`` as
        written (reasons in zh-CN and en). Only the file contains every customer's rows, written a
        chunk of customers at a time. In ``stats`` the number of customers recommended
        to and which of ``customers`` got no recommendation (not in the export, or every purchase
        returned).

    Raises
    ------
    InputError
        If the export has no product column or one of ``customers`` is not in it (ids are compared
        as text), among the errors of :func:`revopt.recommend.recommend`.
    """
    from revopt.growth import bought_products, recommendation_table, write_recommendations
    from revopt.recommend import RecommendSettings, fit_recommendations

    settings = settings.validated()
    out_dir = Path(out_dir)
    step = _StepTimer(progress)
    with tempfile.TemporaryDirectory(prefix=".revopt-") as scratch:
        workspace = Path(settings.workspace) if settings.workspace else Path(scratch) / "workspace"
        con = open_workspace(workspace, memory_limit=settings.memory_limit)
        with step("ingest"):
            tables, _, _ = load_orders(
                orders, con=con, staging_dir=workspace / "staging", column_map=list(settings.column_map),
                dayfirst=settings.dayfirst, date_format=settings.date_format, tz=settings.tz,
                duplicates=settings.duplicates, max_invalid_share=settings.max_invalid_share, require_amount=False,
            )
        if not {"product_id", "product_name"} & set(tables.stats["columns"]):
            raise InputError(message_id="errors.no_product_column")
        if customers:
            lines = tables.lines
            known = set(lines.filter(lines.customer_id.isin(list(customers))).customer_id.to_pandas())
            unknown = [customer for customer in customers if customer not in known]
            if unknown:
                raise InputError(message_id="errors.unknown_customers", count=len(unknown),
                                 examples=", ".join(unknown[:5]))
        with step("recommend"):
            model = fit_recommendations(tables.lines, k=k, method=method, settings=RecommendSettings(basket=basket))
            out_dir.mkdir(parents=True, exist_ok=True)
            _, recommended = write_recommendations(model, tables.lines, out_dir / RECOMMEND_FILES[0])
        result = model.recommend(list(customers))
        lines = tables.lines
        requested = lines.filter(lines.customer_id.isin(list(customers)) if customers else ibis.literal(False))
        items = recommendation_table(result, bought_products(requested))
        missing = sorted(set(customers) - set(items.customer_id))
        if missing:
            log.info("event=customers_without_recommendations count=%d examples=%s", len(missing), missing[:5])
        evaluation = result.evaluation.reset_index() if result.evaluation is not None else pd.DataFrame()
        evaluation.to_csv(out_dir / RECOMMEND_FILES[1], index=False, encoding="utf-8-sig")
    stats = {**result.stats, "customers_recommended": recommended, "customers_without_recommendations": missing}
    result = dataclasses.replace(result, items=items, stats=stats)
    log.info("event=recommend_done customers=%d method=%s", recommended, result.method)
    return result
