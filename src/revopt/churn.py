"""Churn propensity: which customers will not buy again within a horizon, and why.

A customer observed at a cut-off date ``c`` is *churned* when they bought on or before ``c`` but make
no purchase in ``(c, c + N]``, with ``N`` the horizon in days. The model is a LightGBM classifier on
per-customer features computed at ``c`` (recency, frequency, gaps between purchase days, spend trend,
returns, habits, and the BG/NBD model's P(alive) and expected purchases), with probabilities
calibrated by scikit-learn.

Two cut-offs are taken from the end of the data ``E`` (the last order date):

- ``c1 = E - 2N``: features at ``c1``, labels from ``(c1, c1 + N]``; the training rows;
- ``c2 = E - N``: features at ``c2``, labels from ``(c2, E]``; the evaluation rows. There the model
  is compared with two BG/NBD baselines, ``1 - P(alive)`` and the probability of no purchase in the
  next ``N`` days.

The training rows also pool a few earlier cut-offs (``c1 - 30``, ``c1 - 60`` days by default), whose
labels all end by ``c2``, so the evaluation stays out of sample. Pooling gives the model more rows
and more than one season to learn from. The model that scores customers as of ``E`` is then
refitted in the same way on the rows ending at ``c2``. Every aggregate over order lines is an Ibis expression, so it runs in the engine that stores
the tables. Only the per-customer feature table is brought into pandas for LightGBM.

References
----------
.. [1] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). "Counting your customers" the easy way:
   an alternative to the Pareto/NBD model. Marketing Science 24(2), 275-284.
.. [2] Ke, G. et al. (2017). LightGBM: a highly efficient gradient boosting decision tree. NIPS 30.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import asdict, dataclass, field

import ibis
import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from revopt.errors import ConfigError, InputError, check_range
from revopt.i18n import message
from revopt.sampling import customer_sample
from revopt.models.bgnbd import BetaGeoModel
from revopt.summary import MIN_SPEND, customer_summary, to_date
from revopt.timeunits import DAYS_PER_UNIT

__all__ = [
    "CALIBRATION_METHODS",
    "DEFAULT_HORIZON_DAYS",
    "ChurnSettings",
    "CalibrationBin",
    "ScoreMetrics",
    "ChurnEvaluation",
    "ChurnModel",
    "churn_labels",
    "churn_features",
    "bgnbd_probability_no_purchase",
    "fit_churn",
    "churn_reason",
]

log = logging.getLogger(__name__)

DEFAULT_HORIZON_DAYS = 90
CALIBRATION_METHODS = ("isotonic", "sigmoid")

# Purchase counts in these trailing windows (days before the cut-off) are features of their own:
# a month and a quarter are the spans in which shops usually review activity.
RECENT_WINDOWS_DAYS = (30, 90)

# History needed before the first cut-off, in horizons: the features at c1 then look back over at
# least the span that the labels look forward over.
MIN_HISTORY_HORIZONS = 1

# Fewer customers than this at a cut-off give a model and an evaluation that mostly reflect noise.
MIN_CUSTOMERS = 50

# Each class needs this many customers, so that every calibration fold has both classes in its
# training part and in its held-out part (10 per class leaves 3 per fold at 3 folds).
MIN_PER_CLASS = 10

# Share of customers ranked highest that the lift and capture rate look at.
TOP_SHARE = 0.1
CALIBRATION_BINS = 10

# Reasons listed per customer: the features whose LightGBM contribution raises churn most.
REASONS_PER_CUSTOMER = 3

# The BG/NBD model is fitted in weeks, as for the CLV scores.
BGNBD_TIME_UNIT = "week"

# Saturday and Sunday in Ibis's day-of-week index (Monday = 0).
_FIRST_WEEKEND_DAY = 5
_MINUTES_PER_HOUR = 60.0

# DuckDB adds floating-point amounts in parallel, in an order that changes between runs, so a sum
# can differ in its last bits from one query to the next. Money sums and mean hours are rounded to
# this many decimals (far below a cent or a second), so that repeated fits see the same features.
_SUM_DECIMALS = 6

# Leaves with fewer customers than this are not split further; with modest trees this keeps the
# model from fitting the few customers with extreme histories.
_MIN_CHILD_SAMPLES = 40


@dataclass(frozen=True)
class ChurnSettings:
    """Settings of the churn model.

    Parameters
    ----------
    horizon_days : int, default 90
        ``N``: a customer who makes no purchase within this many days after the cut-off is churned.
    seed : int, default 0
        Seed of LightGBM's row and column sampling and of the calibration folds.
    training_cutoffs : int, default 3
        Cut-offs pooled into the training rows: the latest one and ``training_cutoffs - 1`` earlier
        ones, ``cutoff_step_days`` apart. Earlier cut-offs with less than one horizon of history
        before them are left out.
    cutoff_step_days : int, default 30
        Days between pooled cut-offs.
    calibration : {"isotonic", "sigmoid"}, default "isotonic"
        How scikit-learn's ``CalibratedClassifierCV`` maps LightGBM scores to probabilities.
    folds : int, default 3
        Cross-validation folds of the calibration on the training rows. The folds split by
        customer, so the rows of one customer at pooled cut-offs stay in one fold.
    n_estimators : int, default 100
        Boosting rounds of LightGBM.
    learning_rate : float, default 0.05
        Shrinkage of each boosting round.
    num_leaves : int, default 4
        Maximum leaves per tree.
    max_depth : int, default 2
        Maximum depth of a tree. Besides regularising, it bounds the cost of the per-customer
        contributions, which grows with the square of the depth.
    n_jobs : int, default 2
        Threads LightGBM uses.
    max_training_customers : int, default 200,000
        Above this many customers, training and evaluation use a fixed sample of about this many
        (chosen by a hash of the customer id, the same in every run on one engine); every customer
        is still scored. The sample bounds the time and memory of training on large shops.
    score_chunk_customers : int, default 500,000
        Customers scored at once; the memory of scoring grows with this, not with the shop.
    """

    horizon_days: int = DEFAULT_HORIZON_DAYS
    seed: int = 0
    training_cutoffs: int = 3
    cutoff_step_days: int = 30
    calibration: str = "isotonic"
    folds: int = 3
    n_estimators: int = 100
    learning_rate: float = 0.05
    num_leaves: int = 4
    max_depth: int = 2
    n_jobs: int = 2
    max_training_customers: int = 200_000
    score_chunk_customers: int = 500_000

    def __post_init__(self) -> None:
        for name in ("horizon_days", "seed", "training_cutoffs", "cutoff_step_days", "folds", "n_estimators",
                     "num_leaves", "max_depth", "n_jobs", "max_training_customers", "score_chunk_customers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(message_id="churn.errors.not_whole", name=name, value=repr(value))
        check_range("horizon_days", self.horizon_days, low=1)
        check_range("seed", self.seed, low=0)
        check_range("training_cutoffs", self.training_cutoffs, low=1)
        check_range("cutoff_step_days", self.cutoff_step_days, low=1)
        check_range("folds", self.folds, low=2)
        check_range("n_estimators", self.n_estimators, low=1)
        check_range("num_leaves", self.num_leaves, low=2)
        check_range("max_depth", self.max_depth, low=1)
        check_range("n_jobs", self.n_jobs, low=1)
        check_range("max_training_customers", self.max_training_customers, low=MIN_CUSTOMERS)
        check_range("score_chunk_customers", self.score_chunk_customers, low=1)
        check_range("learning_rate", self.learning_rate, low=0.0, low_inclusive=False, high=1.0)
        if self.calibration not in CALIBRATION_METHODS:
            raise ConfigError(message_id="churn.errors.bad_calibration", value=repr(self.calibration),
                              choices=", ".join(CALIBRATION_METHODS))


# --- labels ---------------------------------------------------------------------------------------


def churn_labels(purchases: ibis.Table, *, cutoff: dt.date, horizon_days: int = DEFAULT_HORIZON_DAYS) -> ibis.Table:
    """Label each customer who bought on or before ``cutoff`` as churned or not.

    Parameters
    ----------
    purchases : ibis.Table
        customer_id, order_date (date), one row per customer per purchase day.
    cutoff : datetime.date
        The cut-off ``c``; the population is every customer with a purchase on or before it.
    horizon_days : int, default 90
        ``N``; the label looks at purchases in ``(c, c + N]``.

    Returns
    -------
    ibis.Table
        customer_id, churned (int8): 1 when the customer has no purchase in ``(c, c + N]``, else 0.

    Notes
    -----
    The caller makes sure the data run to at least ``c + N``, because a horizon that reaches past the
    data labels every customer who did not buy before the data end as churned.
    """
    cutoff = _as_date(cutoff, "cutoff")
    check_range("horizon_days", horizon_days, low=1)
    horizon_end = cutoff + dt.timedelta(days=int(horizon_days))

    seen = purchases.filter(purchases.order_date <= ibis.date(horizon_end))
    after_cutoff = seen.order_date > ibis.date(cutoff)
    per_customer = seen.group_by("customer_id").aggregate(
        first_purchase=seen.order_date.min(),
        purchases_after=after_cutoff.sum(),
    )
    population = per_customer.filter(per_customer.first_purchase <= ibis.date(cutoff))
    return population.select(
        "customer_id",
        churned=ibis.ifelse(population.purchases_after == 0, 1, 0).cast("int8"),
    )


# --- features -------------------------------------------------------------------------------------


def churn_features(
    lines: ibis.Table, purchases: ibis.Table, *, cutoff: dt.date, horizon_days: int = DEFAULT_HORIZON_DAYS
) -> ibis.Table:
    """Compute each customer's behavioural features at ``cutoff`` from the data on or before it.

    Parameters
    ----------
    lines : ibis.Table
        Clean order lines: customer_id, order_id, order_time, order_date, amount, is_return, and the
        optional product_id, category and discount.
    purchases : ibis.Table
        customer_id, order_date, amount; one row per customer per purchase day.
    cutoff : datetime.date
        Last day of the data the features may see.
    horizon_days : int, default 90
        ``N``; the spend trend compares the last ``N`` days with the ``N`` days before.

    Returns
    -------
    ibis.Table
        One row per customer with a purchase on or before ``cutoff``: customer_id and float64 columns

        - recency_days, frequency (purchase days), tenure_days (days since the first purchase);
        - spend_total (net spend of all lines, returns included), spend_mean (per purchase day);
        - gap_mean, gap_std, gap_last (days between consecutive purchase days), gap_trend
          (gap_last / gap_mean), recency_gap_ratio (recency_days / gap_mean), all null for a
          single purchase day; gap_std also needs three purchase days;
        - spend_recent, spend_previous (net spend in the last ``N`` days and the ``N`` days before),
          spend_trend (spend_recent / spend_previous, null unless spend_previous is above
          :data:`revopt.summary.MIN_SPEND`: purchases and returns that cancel out leave a sum of
          about 1e-13, and dividing by it gives noise);
        - purchases_30d, purchases_90d (purchase days in those trailing windows);
        - distinct_categories, or distinct_products when no line has a category (only when one of
          them has values);
        - return_line_share (share of lines that are returns), return_amount_share (returned amount
          over the amount bought, null when the amount bought is not above MIN_SPEND);
        - discount_share (share of lines with a discount above 0; only when discounts have values);
        - weekend_share (share of purchase days on Saturday or Sunday);
        - mean_hour (mean time of day of the orders other than returns, in hours; only when some
          order time is not midnight, since date-only exports carry no time of day).

    Notes
    -----
    The optional features are chosen by one aggregate query over ``lines``; features that turn out
    constant for the data set are dropped later, by :func:`fit_churn`.
    """
    cutoff = _as_date(cutoff, "cutoff")
    check_range("horizon_days", horizon_days, low=1)
    end = ibis.date(cutoff)
    days_before = {days: ibis.date(cutoff - dt.timedelta(days=days)) for days in (*RECENT_WINDOWS_DAYS, horizon_days,
                                                                                   2 * horizon_days)}

    past = purchases.filter(purchases.order_date <= end)
    by_date = ibis.window(group_by=past.customer_id, order_by=past.order_date)
    past = past.mutate(gap=past.order_date.delta(past.order_date.lag().over(by_date), unit="day").cast("float64"))
    is_weekend = past.order_date.day_of_week.index() >= _FIRST_WEEKEND_DAY
    timing = past.group_by("customer_id").aggregate(
        first_purchase=past.order_date.min(),
        last_purchase=past.order_date.max(),
        frequency=past.count().cast("float64"),
        gap_mean=past.gap.mean(),
        gap_std=past.gap.std(how="sample"),
        gap_last=past.gap.argmax(past.order_date),
        weekend_days=is_weekend.sum().cast("float64"),
        **{
            f"purchases_{days}d": (past.order_date > days_before[days]).sum().cast("float64")
            for days in RECENT_WINDOWS_DAYS
        },
    )

    spend = _line_aggregates(lines, cutoff=cutoff, horizon_start=days_before[horizon_days],
                             previous_start=days_before[2 * horizon_days])
    joined = timing.left_join(spend, "customer_id")
    recency = end.delta(joined.last_purchase, unit="day").cast("float64")
    features = joined.select(
        customer_id=timing.customer_id,
        recency_days=recency,
        frequency=joined.frequency,
        tenure_days=end.delta(joined.first_purchase, unit="day").cast("float64"),
        spend_total=joined.spend_total,
        spend_mean=joined.spend_total / joined.frequency,
        gap_mean=joined.gap_mean,
        gap_std=joined.gap_std,
        gap_last=joined.gap_last,
        gap_trend=joined.gap_last / joined.gap_mean,
        recency_gap_ratio=recency / joined.gap_mean,
        spend_recent=joined.spend_recent,
        spend_previous=joined.spend_previous,
        spend_trend=ibis.ifelse(joined.spend_previous > MIN_SPEND, joined.spend_recent / joined.spend_previous, None),
        **{f"purchases_{days}d": joined[f"purchases_{days}d"] for days in RECENT_WINDOWS_DAYS},
        **{name: joined[name] for name in spend.columns if name in _OPTIONAL_LINE_FEATURES},
        return_line_share=joined.return_lines / joined.line_count,
        return_amount_share=ibis.ifelse(joined.bought_amount > MIN_SPEND, joined.returned_amount / joined.bought_amount,
                                        None),
        weekend_share=joined.weekend_days / joined.frequency,
    )
    if _has_time_of_day(lines, cutoff):
        features = features.left_join(_mean_order_hour(lines, cutoff), "customer_id").drop("customer_id_right")
    return features


_OPTIONAL_LINE_FEATURES = ("distinct_categories", "distinct_products", "discount_share")


def _line_aggregates(lines: ibis.Table, *, cutoff: dt.date, horizon_start, previous_start) -> ibis.Table:
    """Aggregate each customer's order lines on or before ``cutoff``: spend, returns, breadth, discounts."""
    seen = lines.filter(lines.customer_id.notnull() & (lines.order_date <= ibis.date(cutoff)))
    bought = ~seen.is_return
    in_previous = (seen.order_date > previous_start) & (seen.order_date <= horizon_start)
    metrics = {
        "spend_total": seen.amount.sum().round(_SUM_DECIMALS),
        "spend_recent": seen.amount.sum(where=seen.order_date > horizon_start).round(_SUM_DECIMALS),
        "spend_previous": seen.amount.sum(where=in_previous).round(_SUM_DECIMALS),
        "line_count": seen.count().cast("float64"),
        "return_lines": seen.is_return.sum().cast("float64"),
        "returned_amount": (-seen.amount).sum(where=seen.is_return).round(_SUM_DECIMALS),
        "bought_amount": seen.amount.sum(where=bought).round(_SUM_DECIMALS),
    }
    present = _columns_with_values(seen, ("category", "product_id", "discount"))
    if "category" in present:
        metrics["distinct_categories"] = seen.category.nunique(where=bought).cast("float64")
    elif "product_id" in present:
        metrics["distinct_products"] = seen.product_id.nunique(where=bought).cast("float64")
    if "discount" in present:
        metrics["discount_share"] = (seen.discount > 0).fill_null(False).mean()
    spend = seen.group_by("customer_id").aggregate(**metrics)
    # A filtered sum is null when no line matches, but no line in a window means a spend of 0.
    return spend.mutate(returned_amount=spend.returned_amount.fill_null(0.0),
                        spend_recent=spend.spend_recent.fill_null(0.0),
                        spend_previous=spend.spend_previous.fill_null(0.0))


def _columns_with_values(table: ibis.Table, names: tuple[str, ...]) -> set[str]:
    """Return the optional columns among ``names`` that exist in ``table`` and have a non-null value."""
    existing = [name for name in names if name in table.columns]
    if not existing:
        return set()
    counts = table.aggregate(**{name: table[name].count() for name in existing}).to_pandas().iloc[0]
    return {name for name in existing if counts[name] > 0}


def _has_time_of_day(lines: ibis.Table, cutoff: dt.date) -> bool:
    """Return whether any order time on or before ``cutoff`` is not midnight (date-only exports are all midnight)."""
    seen = lines.filter(lines.customer_id.notnull() & (lines.order_date <= ibis.date(cutoff)))
    not_midnight = (seen.order_time.hour() != 0) | (seen.order_time.minute() != 0)
    return bool(not_midnight.any().execute())


def _mean_order_hour(lines: ibis.Table, cutoff: dt.date) -> ibis.Table:
    """Return each customer's mean time of day over their orders (not lines, and not returns), in hours."""
    seen = lines.filter(lines.customer_id.notnull() & ~lines.is_return & (lines.order_date <= ibis.date(cutoff)))
    orders = seen.group_by(["customer_id", "order_id"]).aggregate(order_time=seen.order_time.min())
    hour = orders.order_time.hour().cast("float64") + orders.order_time.minute().cast("float64") / _MINUTES_PER_HOUR
    # NOTE: an arithmetic mean, so orders just before and after midnight average to midday; shops
    # with much night-time trade would need a circular mean.
    return orders.group_by("customer_id").aggregate(mean_hour=hour.mean().round(_SUM_DECIMALS))


# --- BG/NBD outputs -------------------------------------------------------------------------------


def bgnbd_probability_no_purchase(model: BetaGeoModel, t, frequency, recency, T) -> np.ndarray:
    """Return the BG/NBD probability that each customer makes no purchase in ``(T, T + t]``.

    ``1 - P(alive) (1 - ((alpha + T) / (alpha + T + t))^(r + x))``. Under the BG/NBD assumptions of
    [1]_ a customer can drop out only right after a purchase, so one alive at ``T`` stays alive until
    the next purchase, and makes none in ``(T, T + t]`` with probability ``exp(-lambda t)``. Given
    the history and being alive, ``lambda`` is ``Gamma(r + x, alpha + T)``; the expectation of
    ``exp(-lambda t)`` over it is the power above. A customer who has dropped out makes no purchase.

    Parameters
    ----------
    model : BetaGeoModel
        A fitted model.
    t : float
        Length of the period, in the time unit the model was fitted in; non-negative.
    frequency, recency, T : array_like, shape (n,)
        As in :meth:`BetaGeoModel.fit`.

    Returns
    -------
    numpy.ndarray, shape (n,)
        Values in [0, 1].

    References
    ----------
    .. [1] Fader, Hardie and Lee (2005), Marketing Science 24(2), section 2.
    """
    check_range("t", float(t), low=0.0)
    alive = model.probability_alive(frequency, recency, T)
    r, alpha = model.params_["r"], model.params_["alpha"]
    x = np.asarray(frequency, dtype=float)
    big_t = np.asarray(T, dtype=float)

    # 1 - ((alpha + T) / (alpha + T + t))^(r + x) as -expm1, which keeps its digits for small t
    buys_if_alive = -np.expm1(-(r + x) * np.log1p(t / (alpha + big_t)))
    return 1.0 - alive * buys_if_alive


def _bgnbd_at(purchases: ibis.Table, cutoff: dt.date, horizon_days: int) -> pd.DataFrame:
    """Fit BG/NBD on the purchases up to ``cutoff`` and return its per-customer outputs there.

    Returns customer_id, p_alive, expected_purchases (in the next ``horizon_days``) and
    no_purchase (the probability of no purchase in that span).
    """
    summary = customer_summary(purchases, calibration_end=cutoff, time_unit=BGNBD_TIME_UNIT)
    stats = summary.select("customer_id", "frequency", "recency", "T").order_by("customer_id").to_pandas()
    if stats.empty or stats.frequency.max() < 1:
        raise InputError(message_id="churn.errors.no_repeat_purchases", cutoff=cutoff)
    x, t_x, big_t = (stats[name].to_numpy(dtype=float) for name in ("frequency", "recency", "T"))
    model = BetaGeoModel().fit(x, t_x, big_t)
    span = horizon_days / DAYS_PER_UNIT[BGNBD_TIME_UNIT]
    log.info("event=churn_bgnbd_fitted cutoff=%s customers=%d r=%.4g alpha=%.4g a=%.4g b=%.4g", cutoff, len(stats),
             *(model.params_[name] for name in ("r", "alpha", "a", "b")))
    return pd.DataFrame({
        "customer_id": stats.customer_id.to_numpy(),
        "p_alive": model.probability_alive(x, t_x, big_t),
        "expected_purchases": model.expected_purchases(span, x, t_x, big_t),
        "no_purchase": bgnbd_probability_no_purchase(model, span, x, t_x, big_t),
    })


def _frame_at(lines: ibis.Table, purchases: ibis.Table, cutoff: dt.date, horizon_days: int) -> pd.DataFrame:
    """Return features and BG/NBD outputs at ``cutoff``, one row per customer, sorted by customer_id."""
    features = churn_features(lines, purchases, cutoff=cutoff, horizon_days=horizon_days)
    return _with_bgnbd(features.to_pandas(), _bgnbd_at(purchases, cutoff, horizon_days))


def _with_bgnbd(features: pd.DataFrame, bgnbd: pd.DataFrame) -> pd.DataFrame:
    """Join the BG/NBD outputs to the features of the same customers; sorted by customer_id."""
    frame = features.merge(bgnbd, on="customer_id", how="left", validate="one_to_one")
    return frame.sort_values("customer_id", ignore_index=True)


# --- the classifier -------------------------------------------------------------------------------

# Columns of the frame that are not model features: the id, and the baseline that the model is
# compared with (its information is already in p_alive and expected_purchases).
_NOT_FEATURES = ("customer_id", "cutoff", "no_purchase", "churned")


@dataclass(frozen=True)
class _Classifier:
    """A calibrated LightGBM classifier and the feature columns it was fitted on, in order."""

    features: tuple[str, ...]
    calibrated: CalibratedClassifierCV

    def probability(self, frame: pd.DataFrame) -> np.ndarray:
        return self.calibrated.predict_proba(self._matrix(frame))[:, 1]

    def contributions(self, frame: pd.DataFrame) -> np.ndarray:
        """Return each feature's contribution to the churn log-odds, averaged over the calibration folds.

        Shape (n, len(features)); LightGBM's SHAP values (``pred_contrib=True``) without the bias column.
        """
        matrix = self._matrix(frame)
        per_fold = [fold.estimator.booster_.predict(matrix, pred_contrib=True)[:, :-1]
                    for fold in self.calibrated.calibrated_classifiers_]
        return np.mean(per_fold, axis=0)

    def _matrix(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [name for name in self.features if name not in frame.columns]
        if missing:
            raise InputError(message_id="churn.errors.missing_features", features=", ".join(missing))
        return frame[list(self.features)].to_numpy(dtype=float)


def _fit_classifier(frame: pd.DataFrame, settings: ChurnSettings) -> _Classifier:
    """Fit LightGBM with cross-validated calibration on the non-constant feature columns of ``frame``.

    ``frame`` contains the label in ``churned`` and the cut-off of each row in ``cutoff``.
    """
    candidates = [name for name in frame.columns if name not in _NOT_FEATURES]
    features = tuple(name for name in candidates if frame[name].nunique(dropna=False) > 1)
    dropped = sorted(set(candidates) - set(features))
    log.info("event=churn_features kept=%s dropped_constant=%s", ",".join(features), ",".join(dropped))

    booster = LGBMClassifier(
        n_estimators=settings.n_estimators,
        learning_rate=settings.learning_rate,
        num_leaves=settings.num_leaves,
        max_depth=settings.max_depth,
        min_child_samples=_MIN_CHILD_SAMPLES,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        random_state=settings.seed,
        n_jobs=settings.n_jobs,
        # Column-wise histograms chosen up front, so LightGBM does not time both layouts on every
        # fit. deterministic keeps repeated fits identical whatever the thread scheduling.
        force_col_wise=True,
        deterministic=True,
        verbose=-1,
    )
    matrix = frame[list(features)].to_numpy(dtype=float)
    labels = frame.churned.to_numpy()
    calibrated = CalibratedClassifierCV(booster, method=settings.calibration, cv=_customer_folds(frame, settings))
    calibrated.fit(matrix, labels)
    return _Classifier(features=features, calibrated=calibrated)


def _customer_folds(frame: pd.DataFrame, settings: ChurnSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split the rows into calibration folds by customer, stratified by the label at the latest cut-off.

    A customer's rows at the pooled cut-offs are near copies of each other, so they must not be on
    both sides of a split. Every customer of an earlier cut-off also bought before the latest one,
    so folding the latest cut-off's customers places every row.
    """
    latest = frame[frame.cutoff == frame.cutoff.max()]
    splitter = StratifiedKFold(n_splits=settings.folds, shuffle=True, random_state=settings.seed)
    fold_of_customer = pd.Series(-1, index=latest.customer_id.to_numpy())
    for fold, (_, held_out) in enumerate(splitter.split(latest, latest.churned)):
        fold_of_customer.iloc[held_out] = fold
    row_fold = frame.customer_id.map(fold_of_customer).to_numpy()
    return [(np.flatnonzero(row_fold != fold), np.flatnonzero(row_fold == fold)) for fold in range(settings.folds)]


# --- evaluation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationBin:
    """One bin of a calibration curve: customers whose predicted probability falls in (lower, upper].

    The first bin includes 0. ``mean_predicted`` and ``observed_rate`` are None for an empty bin.
    """

    lower: float
    upper: float
    count: int
    mean_predicted: float | None
    observed_rate: float | None


@dataclass(frozen=True)
class ScoreMetrics:
    """Metrics of one churn score on the evaluation rows: ranking, accuracy and calibration.

    Attributes
    ----------
    roc_auc : float
        Area under the ROC curve.
    pr_auc : float
        Average precision of the churned class.
    brier : float
        Mean squared difference between the score and the 0/1 label.
    top_decile_lift : float
        Churn rate among the 10 % of customers with the highest score over the overall churn rate.
    top_decile_capture : float
        Share of all churned customers found in that top 10 %.
    calibration : tuple of CalibrationBin
        Ten equal-width bins of the score.
    """

    roc_auc: float
    pr_auc: float
    brier: float
    top_decile_lift: float
    top_decile_capture: float
    calibration: tuple[CalibrationBin, ...]


@dataclass(frozen=True)
class ChurnEvaluation:
    """The learned model against the BG/NBD baselines on the evaluation cut-off.

    Attributes
    ----------
    horizon_days : int
        ``N``.
    train_cutoff, eval_cutoff, end : datetime.date
        ``c1``, ``c2`` and the last order date.
    train_cutoffs : tuple of datetime.date
        Every cut-off pooled into the training rows, latest (``c1``) first.
    train_rows, eval_customers : int
        Training rows (customers times pooled cut-offs) and customers at ``c2``.
    train_churn_rate, eval_churn_rate : float
        Share of churned rows in the training rows and at ``c2``.
    features : tuple of str
        Features of the model fitted on the training rows.
    scores : dict of str to ScoreMetrics
        ``model`` (the calibrated LightGBM probability), ``bgnbd_p_alive`` (1 - P(alive)) and
        ``bgnbd_no_purchase`` (the BG/NBD probability of no purchase in the next ``N`` days).
    beats_baseline : bool
        Whether the model's ROC AUC and PR AUC are both above the better of the two baselines.
    sample_share : float
        Share of customers that training and evaluation used (1.0 unless the shop has more than
        ``max_training_customers``).
    """

    horizon_days: int
    train_cutoff: dt.date
    eval_cutoff: dt.date
    end: dt.date
    train_cutoffs: tuple[dt.date, ...]
    train_rows: int
    eval_customers: int
    train_churn_rate: float
    eval_churn_rate: float
    features: tuple[str, ...]
    scores: dict[str, ScoreMetrics] = field(default_factory=dict)
    beats_baseline: bool = False
    sample_share: float = 1.0

    def to_dict(self) -> dict:
        """Return a JSON-ready dict: dates as ISO strings, tuples as lists."""
        result = asdict(self)
        for key in ("train_cutoff", "eval_cutoff", "end"):
            result[key] = getattr(self, key).isoformat()
        result["train_cutoffs"] = [cutoff.isoformat() for cutoff in self.train_cutoffs]
        result["features"] = list(self.features)
        for metrics in result["scores"].values():
            metrics["calibration"] = list(metrics["calibration"])
        return result


BASELINES = ("bgnbd_p_alive", "bgnbd_no_purchase")


def _score_metrics(labels: np.ndarray, score: np.ndarray) -> ScoreMetrics:
    """Compute the metrics of one score against 0/1 labels (churned = 1)."""
    lift, capture = _top_share_lift(labels, score, TOP_SHARE)
    return ScoreMetrics(
        roc_auc=float(roc_auc_score(labels, score)),
        pr_auc=float(average_precision_score(labels, score)),
        brier=float(brier_score_loss(labels, score)),
        top_decile_lift=lift,
        top_decile_capture=capture,
        calibration=_calibration_bins(labels, score, CALIBRATION_BINS),
    )


def _top_share_lift(labels: np.ndarray, score: np.ndarray, share: float) -> tuple[float, float]:
    """Return the lift and capture rate of the ``share`` of customers with the highest score.

    The top group has ``ceil(share * n)`` customers. Customers tied with the last one in the group
    count in proportion (the expected value over random tie-breaking), so that a score with many ties,
    such as ``1 - P(alive) = 0`` for every one-time buyer, is not credited with an arbitrary order.
    """
    labels = np.asarray(labels, dtype=float)
    score = np.asarray(score, dtype=float)
    size = math.ceil(share * labels.size)
    threshold = np.sort(score)[::-1][size - 1]
    above = score > threshold
    tied = score == threshold
    weight = above + tied * (size - above.sum()) / tied.sum()
    churned_in_top = float(np.sum(weight * labels))
    total_churned = float(labels.sum())
    lift = (churned_in_top / size) / (total_churned / labels.size)
    return lift, churned_in_top / total_churned


def _calibration_bins(labels: np.ndarray, score: np.ndarray, bins: int) -> tuple[CalibrationBin, ...]:
    """Split [0, 1] into ``bins`` equal bins and compare the mean score with the churn rate in each.

    The binning is that of ``sklearn.calibration.calibration_curve(strategy="uniform")``, which
    drops empty bins and reports no counts; here every bin is kept with its count.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges[1:-1], score)
    result = []
    for position in range(bins):
        members = index == position
        count = int(members.sum())
        result.append(CalibrationBin(
            lower=float(edges[position]),
            upper=float(edges[position + 1]),
            count=count,
            mean_predicted=float(score[members].mean()) if count else None,
            observed_rate=float(labels[members].mean()) if count else None,
        ))
    return tuple(result)


# --- fitting and scoring --------------------------------------------------------------------------


class ChurnModel:
    """A churn model fitted by :func:`fit_churn`.

    Attributes
    ----------
    settings : ChurnSettings
    evaluation : ChurnEvaluation
        The model fitted on the rows ending at ``c1``, against the BG/NBD baselines at ``c2``.
    end : datetime.date
        The last order date of the training data; :meth:`score` scores as of this day by default.
    features : tuple of str
        Features of the final model, fitted on the pooled rows ending at ``c2``.
    """

    def __init__(self, settings: ChurnSettings, evaluation: ChurnEvaluation, classifier: _Classifier,
                 end: dt.date) -> None:
        self.settings = settings
        self.evaluation = evaluation
        self.end = end
        self._classifier = classifier

    @property
    def features(self) -> tuple[str, ...]:
        return self._classifier.features

    def score(self, lines: ibis.Table, purchases: ibis.Table, *, as_of: dt.date | None = None) -> pd.DataFrame:
        """Score every customer with a purchase on or before ``as_of``.

        Parameters
        ----------
        lines, purchases : ibis.Table
            As in :func:`fit_churn`; usually the same tables.
        as_of : datetime.date, optional
            The day the features are computed at; default :attr:`end`.

        Returns
        -------
        pandas.DataFrame
            customer_id, churn_probability (of no purchase in the next ``horizon_days``), and for
            k = 1, 2, 3 churn_reason_k (a feature id, see :func:`churn_reason`) and churn_reason_k_value
            (the customer's value of it). Reasons are the features with the largest positive
            contribution to the churn log-odds. Fewer than three features may push a customer's churn
            up. The remaining reasons are then None, with NaN values.

        Raises
        ------
        InputError
            If no customer bought on or before ``as_of``, or the tables lack a feature the model uses.
        """
        as_of = self.end if as_of is None else _as_date(as_of, "as_of")
        horizon = self.settings.horizon_days
        bgnbd = _bgnbd_at(purchases, as_of, horizon)
        features = churn_features(lines, purchases, cutoff=as_of, horizon_days=horizon)
        chunks = math.ceil(len(bgnbd) / self.settings.score_chunk_customers)
        if chunks <= 1:
            parts = [self._score_frame(_with_bgnbd(features.to_pandas(), bgnbd))]
        else:
            # Features are computed once in the engine, then scored a chunk of customers at a time.
            bucketed = features.mutate(_chunk=_customer_bucket(features.customer_id, chunks)).cache()
            parts = [self._score_frame(_with_bgnbd(bucketed.filter(bucketed._chunk == chunk).drop("_chunk")
                                                   .to_pandas(), bgnbd))
                     for chunk in range(chunks)]
            bucketed.release()
        return pd.concat(parts, ignore_index=True).sort_values("customer_id", ignore_index=True)

    def _score_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        probability = self._classifier.probability(frame)
        contributions = self._classifier.contributions(frame)

        result = pd.DataFrame({"customer_id": frame.customer_id.to_numpy(), "churn_probability": probability})
        order = np.argsort(-contributions, axis=1, kind="stable")[:, :REASONS_PER_CUSTOMER]
        rows = np.arange(len(frame))[:, None]
        pushes_up = contributions[rows, order] > 0
        names = np.asarray(self.features, dtype=object)
        values = frame[list(self.features)].to_numpy(dtype=float)
        for rank in range(order.shape[1]):
            column = order[:, rank]
            up = pushes_up[:, rank]
            result[f"churn_reason_{rank + 1}"] = np.where(up, names[column], None)
            result[f"churn_reason_{rank + 1}_value"] = np.where(up, values[rows[:, 0], column], np.nan)
        return result


def fit_churn(lines: ibis.Table, purchases: ibis.Table, settings: ChurnSettings | None = None, *,
              end: dt.date | None = None) -> ChurnModel:
    """Fit, evaluate and refit the churn model on two cut-offs before the end of the data.

    Parameters
    ----------
    lines : ibis.Table
        Clean order lines (see :func:`churn_features`).
    purchases : ibis.Table
        customer_id, order_date, amount; one row per customer per purchase day.
    settings : ChurnSettings, optional
        Default ``ChurnSettings()``.
    end : datetime.date, optional
        The day up to which labels are observed; default the last order date in ``purchases``.

    Returns
    -------
    ChurnModel
        With :attr:`ChurnModel.evaluation` from the model fitted on the rows ending at ``end - 2N``
        and scored at ``end - N``, and a final classifier refitted on the rows ending at ``end - N``.

    Raises
    ------
    InputError
        If the history before ``end - 2N`` is shorter than one horizon, or fewer than 50 customers
        bought before ``end - 2N`` or ``end - N``. Also if either class has fewer than 10 customers
        there, or no customer has a repeat purchase before a cut-off, so BG/NBD cannot be fitted.
        Earlier pooled cut-offs that fall short are left out instead.
    """
    settings = ChurnSettings() if settings is None else settings
    horizon = settings.horizon_days
    span = purchases.aggregate(first=purchases.order_date.min(), last=purchases.order_date.max()).to_pandas().iloc[0]
    first = to_date(span["first"])
    if first is None:
        raise InputError(message_id="churn.errors.no_purchases")
    end = to_date(span["last"]) if end is None else _as_date(end, "end")
    train_cutoff = end - dt.timedelta(days=2 * horizon)
    eval_cutoff = end - dt.timedelta(days=horizon)
    needed = (2 + MIN_HISTORY_HORIZONS) * horizon
    if (end - first).days < needed:
        raise InputError(message_id="churn.errors.short_history", first=first, last=end,
                         days=(end - first).days, needed=needed, horizon=horizon)

    lines, purchases, sample_share = _training_sample(lines, purchases, settings)
    train, train_cutoffs = _pooled_rows(lines, purchases, train_cutoff, first=first, settings=settings)
    held_out = _labelled_frame(lines, purchases, eval_cutoff, horizon, required=True)
    eval_labels = held_out.churned.to_numpy()

    classifier = _fit_classifier(train, settings)
    scores = {
        "model": _score_metrics(eval_labels, classifier.probability(held_out)),
        "bgnbd_p_alive": _score_metrics(eval_labels, 1.0 - held_out.p_alive.to_numpy()),
        "bgnbd_no_purchase": _score_metrics(eval_labels, held_out.no_purchase.to_numpy()),
    }
    best_roc = max(scores[name].roc_auc for name in BASELINES)
    best_pr = max(scores[name].pr_auc for name in BASELINES)
    evaluation = ChurnEvaluation(
        horizon_days=horizon,
        train_cutoff=train_cutoff,
        eval_cutoff=eval_cutoff,
        end=end,
        train_cutoffs=train_cutoffs,
        train_rows=len(train),
        eval_customers=len(held_out),
        train_churn_rate=float(train.churned.mean()),
        eval_churn_rate=float(eval_labels.mean()),
        features=classifier.features,
        scores=scores,
        beats_baseline=bool(scores["model"].roc_auc > best_roc and scores["model"].pr_auc > best_pr),
        sample_share=sample_share,
    )
    log.info("event=churn_evaluated cutoff=%s roc_auc=%.4f pr_auc=%.4f baseline_roc_auc=%.4f baseline_pr_auc=%.4f "
             "beats_baseline=%s", eval_cutoff, scores["model"].roc_auc, scores["model"].pr_auc, best_roc, best_pr,
             evaluation.beats_baseline)

    final_rows, _ = _pooled_rows(lines, purchases, eval_cutoff, first=first, settings=settings, latest_rows=held_out)
    return ChurnModel(settings, evaluation, _fit_classifier(final_rows, settings), end)


def _customer_bucket(customer_id: ibis.StringValue, buckets: int) -> ibis.IntegerValue:
    """Return a bucket in [0, buckets) from a hash of the id, the same for one id on one engine."""
    return ((customer_id.hash() % buckets) + buckets) % buckets


def _training_sample(lines: ibis.Table, purchases: ibis.Table, settings: ChurnSettings):
    """Return lines and purchases of a fixed sample of about ``max_training_customers`` customers, and its share."""
    customers = int(purchases.customer_id.nunique().execute())
    sample = customer_sample(customers, settings.max_training_customers)
    if not sample.sampled:
        return lines, purchases, 1.0
    log.info("event=churn_training_sample customers=%d share=%.4f", customers, sample.share)
    return sample.apply(lines), sample.apply(purchases), sample.share


def _pooled_rows(lines: ibis.Table, purchases: ibis.Table, latest: dt.date, *, first: dt.date,
                 settings: ChurnSettings, latest_rows: pd.DataFrame | None = None
                 ) -> tuple[pd.DataFrame, tuple[dt.date, ...]]:
    """Return the labelled rows of ``latest`` and of the earlier pooled cut-offs, and those cut-offs.

    ``latest`` must pass the checks of :func:`_labelled_frame`. An earlier cut-off with less than one
    horizon of history, or too few customers of either class, is left out. ``latest_rows`` are the
    rows of ``latest`` when the caller has them already.
    """
    horizon = settings.horizon_days
    if latest_rows is None:
        latest_rows = _labelled_frame(lines, purchases, latest, horizon, required=True)
    frames = [latest_rows]
    cutoffs = [latest]
    for step in range(1, settings.training_cutoffs):
        cutoff = latest - dt.timedelta(days=step * settings.cutoff_step_days)
        if (cutoff - first).days < MIN_HISTORY_HORIZONS * horizon:
            break
        frame = _labelled_frame(lines, purchases, cutoff, horizon, required=False)
        if frame is None:
            break
        frames.append(frame)
        cutoffs.append(cutoff)
    log.info("event=churn_training_rows cutoffs=%s rows=%s", ",".join(map(str, cutoffs)),
             ",".join(str(len(frame)) for frame in frames))
    return pd.concat(frames, ignore_index=True), tuple(cutoffs)


def _labelled_frame(lines: ibis.Table, purchases: ibis.Table, cutoff: dt.date, horizon_days: int, *,
                    required: bool) -> pd.DataFrame | None:
    """Return features and the churn label at ``cutoff``, after checking there is enough to fit on.

    When the labels fall short, raise :class:`InputError` if ``required``, else return None.
    """
    labels = churn_labels(purchases, cutoff=cutoff, horizon_days=horizon_days).to_pandas()
    customers = len(labels)
    churned = int(labels.churned.sum())
    if customers < MIN_CUSTOMERS:
        if not required:
            return None
        raise InputError(message_id="churn.errors.few_customers", count=customers, cutoff=cutoff,
                         minimum=MIN_CUSTOMERS)
    if min(churned, customers - churned) < MIN_PER_CLASS:
        if not required:
            return None
        raise InputError(message_id="churn.errors.one_class", cutoff=cutoff, churned=churned, count=customers,
                         horizon=horizon_days, minimum=MIN_PER_CLASS)
    frame = _frame_at(lines, purchases, cutoff, horizon_days)
    frame = frame.merge(labels, on="customer_id", how="inner", validate="one_to_one")
    return frame.assign(cutoff=cutoff)


def _as_date(value, name: str) -> dt.date:
    """Convert a date-like value to ``datetime.date``, raising :class:`ConfigError` naming ``name`` if it is not one."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        converted = to_date(value)
    except (TypeError, ValueError) as error:
        raise ConfigError(message_id="churn.errors.not_a_date", name=name, value=repr(value)) from error
    if converted is None:
        raise ConfigError(message_id="churn.errors.not_a_date", name=name, value=repr(value))
    return converted


# --- reasons --------------------------------------------------------------------------------------

# Format of each feature's value in a reason: days and counts as whole numbers, shares as percents,
# money and ratios with two decimals, the hour as HH:MM.
_FEATURE_KINDS = {
    "recency_days": "days",
    "frequency": "count",
    "tenure_days": "days",
    "spend_total": "money",
    "spend_mean": "money",
    "gap_mean": "days",
    "gap_std": "days",
    "gap_last": "days",
    "gap_trend": "ratio",
    "recency_gap_ratio": "ratio",
    "spend_recent": "money",
    "spend_previous": "money",
    "spend_trend": "share",
    **{f"purchases_{days}d": "count" for days in RECENT_WINDOWS_DAYS},
    "distinct_categories": "count",
    "distinct_products": "count",
    "return_line_share": "share",
    "return_amount_share": "share",
    "discount_share": "share",
    "weekend_share": "share",
    "mean_hour": "hour",
    "p_alive": "share",
    "expected_purchases": "ratio",
}

# The message used when a feature is null, where null has one known cause.
_MISSING_REASONS = {
    "gap_mean": "churn.reason.one_purchase_day",
    "gap_last": "churn.reason.one_purchase_day",
    "gap_trend": "churn.reason.one_purchase_day",
    "recency_gap_ratio": "churn.reason.one_purchase_day",
    "gap_std": "churn.reason.few_purchase_days",
    "spend_trend": "churn.reason.no_previous_spend",
}


def churn_reason(feature: str, value: float | None, language: str, *,
                 horizon_days: int = DEFAULT_HORIZON_DAYS) -> str:
    """Write one churn reason for an operator, such as "45 days since the last purchase".

    Parameters
    ----------
    feature : str
        A feature id from :meth:`ChurnModel.score` (churn_reason_1, 2, 3).
    value : float or None
        The customer's value of it (churn_reason_k_value); None or NaN when the feature is null.
    language : {"zh-CN", "en"}
    horizon_days : int, default 90
        The model's horizon, named in the spend-trend and BG/NBD reasons.

    Returns
    -------
    str

    Raises
    ------
    ConfigError
        If ``feature`` is not a feature of the churn model, or the language is not supported.
    """
    if feature not in _FEATURE_KINDS:
        raise ConfigError(message_id="churn.errors.unknown_feature", feature=repr(feature),
                          choices=", ".join(_FEATURE_KINDS))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if feature in _MISSING_REASONS:
            return message(_MISSING_REASONS[feature], language, horizon=horizon_days)
        return message("churn.reason.missing", language, feature=message(f"churn.feature.{feature}", language))
    fields = {"value": _format_value(_FEATURE_KINDS[feature], float(value)), "horizon": horizon_days}
    if feature.startswith("purchases_") and feature.endswith("d"):
        fields["days"] = int(feature.removeprefix("purchases_").removesuffix("d"))
        return message("churn.reason.purchases_window", language, **fields)
    return message(f"churn.reason.{feature}", language, **fields)


def _format_value(kind: str, value: float) -> str:
    if kind in ("days", "count"):
        return f"{round(value):,}"
    if kind == "share":
        return f"{value:.0%}"
    if kind == "money":
        # Adding 0.0 turns a -0.0 left by rounding into 0.0, so a net of -1e-13 reads "0.00", not "-0.00".
        return f"{round(value, 2) + 0.0:,.2f}"
    if kind == "hour":
        hours, minutes = divmod(round(value * _MINUTES_PER_HOUR), round(_MINUTES_PER_HOUR))
        return f"{hours:02d}:{minutes:02d}"
    return f"{value:.2f}"
