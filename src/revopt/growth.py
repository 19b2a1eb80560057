"""Grow each customer: churn risk, recommendations, the next best action and its message.

``grow_customers`` runs after the CLV models have scored the customers. It fits the churn model
(:mod:`revopt.churn`) on the shop's own history, recommends products (:mod:`revopt.recommend`),
chooses each customer's next best action by expected value (:mod:`revopt.actions`) and writes the
message in both languages (:mod:`revopt.messages`). A part that the data cannot support (a history
too short for the churn labels, an export without product ids) is skipped with a warning, and the
rest still runs, since the CLV scores stand on their own.

The actions weigh money as margin. CLV from the main job counts ``margin`` of revenue (1 by
default, that is revenue), so it is rescaled to the action config's ``margin_rate`` first.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import ibis
import numpy as np
import pandas as pd

from revopt.actions import ActionConfig, action_label, choose_actions, load_action_config
from revopt.churn import ChurnSettings, churn_reason, fit_churn
from revopt.errors import DataQualityWarning, FitError, InputError
from revopt.i18n import message
from revopt.messages import CNY_ALIASES, render_messages
from revopt.recommend import reason_text, recommend

__all__ = ["GrowthResult", "GrowthSettings", "grow_customers", "bought_products", "recommendation_table",
           "ACTION_COLUMNS"]

log = logging.getLogger(__name__)

LANGUAGE_SUFFIXES = {"zh-CN": "zh", "en": "en"}
# Recommendations per customer kept in customers.parquet. The long table keeps all k.
TOP_IN_CUSTOMER_TABLE = 3
ACTION_COLUMNS = ("next_best_action", "action_value", "coupon_value", "action_product")
_REASON_SEPARATOR = {"zh-CN": "；", "en": "; "}
# Churn reasons are written only for customers at least this likely to churn: for a customer likely
# to stay, the features that push churn up a little read as alarms that the probability does not support.
REASONS_MIN_PROBABILITY = 0.5
MONEY_DECIMALS = 2
OFFER_COLUMNS = (
    *(f"recommendation_{rank}" for rank in range(1, TOP_IN_CUSTOMER_TABLE + 1)),
    "cross_sell_product_name", "cross_sell_price", "cross_sell_score", "upsell_product_name", "upsell_price",
    "upsell_from_product_name", "upsell_from_price", "replenish_product_name", "replenish_price",
    "replenish_due_date",
)


@dataclass(frozen=True)
class GrowthSettings:
    """Options of the growth step; the CLI maps ``--churn-days``, ``--top-k``, ``--actions`` onto them."""

    churn_days: int = 90
    top_k: int = 10
    actions_config: Path | None = None
    shop_name: str | None = None
    currency: str = "CNY"


@dataclass
class GrowthResult:
    """Per-customer columns to add, the long recommendation table, and what the report and model.json show."""

    columns: pd.DataFrame
    recommendations: pd.DataFrame
    summary: dict = field(default_factory=dict)


def grow_customers(lines: ibis.Table, purchases: ibis.Table, customers: pd.DataFrame, *, observation_end: dt.date,
                   settings: GrowthSettings, clv_margin: float, step) -> GrowthResult:
    """Churn, recommendations, next best action and messages for every scored customer.

    Parameters
    ----------
    lines, purchases : ibis.Table
        The clean tables of the run.
    customers : pandas.DataFrame
        The scored customers (customer_id, probability_alive, expected_purchases, clv, segment).
    observation_end : datetime.date
        The last order day; actions are planned for the day after.
    settings : GrowthSettings
    clv_margin : float
        The share of revenue that ``customers.clv`` counts (``--margin``).
    step : callable
        The pipeline's step timer.

    Returns
    -------
    GrowthResult
        ``columns`` is indexed by customer_id, in the order of ``customers``.
    """
    config = load_action_config(settings.actions_config)
    currency = settings.currency.strip().upper()
    if settings.actions_config is None and CNY_ALIASES.get(currency, currency) != "CNY":
        warnings.warn(DataQualityWarning(message_id="warnings.actions_in_cny", currency=settings.currency),
                      stacklevel=2)
    frame = customers[["customer_id"]].copy()
    summary: dict = {"churn": None, "recommendations": None, "actions": None}

    with step("churn"):
        churn = _churn(lines, purchases, observation_end, settings)
    if churn is not None:
        scores, summary["churn"] = churn
        frame = frame.merge(scores, on="customer_id", how="left")
    else:
        frame["churn_probability"] = np.nan

    with step("recommend"):
        recs = _recommendations(lines, observation_end, settings)
    long_table = pd.DataFrame(columns=["customer_id", "rank", "product_id", "product_name", "category", "unit_price",
                                       "score", "method", "bought_before", "reason_zh", "reason_en"])
    if recs is not None:
        result, summary["recommendations"] = recs
        frame = frame.merge(_offers(result, lines), on="customer_id", how="left")
        long_table = recommendation_table(result, bought_products(lines))
    # The same columns whatever the export holds, so that files of different shops line up.
    for column in OFFER_COLUMNS:
        if column not in frame:
            frame[column] = np.nan

    with step("actions"):
        profile = _profiles(lines)
        inputs = frame.merge(profile, on="customer_id", how="left").merge(
            customers[["customer_id", "segment", "probability_alive", "expected_purchases", "clv"]],
            on="customer_id", how="left",
        )
        inputs = inputs.rename(columns={"probability_alive": "p_alive"})
        inputs["clv"] = inputs["clv"] / clv_margin * config.margin_rate
        chosen = _choose(inputs, config, observation_end)
        messages = {suffix: render_messages(chosen, language, shop_name=settings.shop_name,
                                            currency=settings.currency)
                    for language, suffix in LANGUAGE_SUFFIXES.items()}
    columns = frame.drop(columns=[c for c in frame.columns if c.startswith("_")])
    for name in [c for c in columns.columns if c.endswith("_price")]:
        columns[name] = columns[name].round(MONEY_DECIMALS)
    columns["customer_name"] = inputs["customer_name"].to_numpy()
    columns["gender"] = inputs["gender"].to_numpy()
    columns["next_best_action"] = chosen["next_best_action"].to_numpy()
    for language, suffix in LANGUAGE_SUFFIXES.items():
        labels = {code: action_label(code, language) for code in chosen["next_best_action"].unique()}
        columns[f"next_best_action_{suffix}"] = chosen["next_best_action"].map(labels).to_numpy()
    columns["action_value"] = chosen["action_value"].round(MONEY_DECIMALS).to_numpy()
    columns["coupon_value"] = chosen["coupon_value"].round(MONEY_DECIMALS).to_numpy()
    columns["action_product"] = chosen["action_product_name"].to_numpy()
    for suffix, texts in messages.items():
        columns[f"message_{suffix}"] = texts.to_numpy()
    summary["actions"] = _action_summary(columns, customers)
    return GrowthResult(columns=columns, recommendations=long_table, summary=summary)


def _warn_skipped(part: str, error: Exception) -> None:
    """Warn that one part was skipped; a revopt error as the detail shows in the warning's language."""
    warnings.warn(DataQualityWarning(message_id=f"warnings.{part}_skipped", detail=error), stacklevel=3)


def _churn(lines, purchases, observation_end: dt.date, settings: GrowthSettings):
    try:
        # The BG/NBD fits behind the churn features warn about their own fits (a flat likelihood). The
        # churn model's evaluation already measures how good those features are, so they are logged only.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = fit_churn(lines, purchases, ChurnSettings(horizon_days=settings.churn_days),
                              end=observation_end)
        for warning in caught:
            log.info("event=churn_feature_warning message=%s", warning.message)
    except (InputError, FitError) as error:
        log.info("event=churn_skipped reason=%s", error)
        _warn_skipped("churn", error)
        return None
    scores = model.score(lines, purchases, as_of=observation_end)
    likely = scores.churn_probability.to_numpy() >= REASONS_MIN_PROBABILITY
    for language, suffix in LANGUAGE_SUFFIXES.items():
        texts = _reason_texts(scores, language, settings.churn_days)
        scores[f"churn_reasons_{suffix}"] = np.where(likely, texts, "")
    keep = ["customer_id", "churn_probability", "churn_reasons_zh", "churn_reasons_en"]
    summary = model.evaluation.to_dict() | {"horizon_days": settings.churn_days, "features": list(model.features)}
    return scores[keep], summary


def _reason_texts(scores: pd.DataFrame, language: str, horizon_days: int) -> list[str]:
    """Join each customer's up to three churn reasons into one line of text."""
    texts = []
    separator = _REASON_SEPARATOR[language]
    one_day_text = message("churn.reason.one_purchase_day", language)
    few_days_text = message("churn.reason.few_purchase_days", language)
    columns = [(f"churn_reason_{rank}", f"churn_reason_{rank}_value") for rank in (1, 2, 3)]
    for row in scores[[name for pair in columns for name in pair]].itertuples(index=False):
        parts = [churn_reason(feature, value, language, horizon_days=horizon_days)
                 for feature, value in zip(row[0::2], row[1::2]) if isinstance(feature, str)]
        # Two features can have the same explanation (a missing value with one known cause), and
        # "only one purchase day" already implies "fewer than three purchase days".
        if one_day_text in parts:
            parts = [part for part in parts if part != few_days_text]
        texts.append(separator.join(dict.fromkeys(parts)))
    return texts


def _recommendations(lines: ibis.Table, observation_end: dt.date, settings: GrowthSettings):
    has_products = lines.aggregate(n=lines.product_id.count()).to_pandas().n.iloc[0] > 0
    if not has_products:
        log.info("event=recommend_skipped reason=no product ids")
        _warn_skipped("recommend", InputError(message_id="errors.no_product_column"))
        return None
    try:
        result = recommend(lines, k=settings.top_k, as_of=observation_end + dt.timedelta(days=1))
    except (InputError, FitError) as error:
        log.info("event=recommend_skipped reason=%s", error)
        _warn_skipped("recommend", error)
        return None
    evaluation = None if result.evaluation is None else result.evaluation.reset_index().to_dict(orient="records")
    summary = {"method": result.method, "k": settings.top_k, "split_date": result.split_date,
               "as_of": result.as_of, "evaluation": evaluation, "stats": result.stats}
    return result, summary


def _offers(result, lines: ibis.Table) -> pd.DataFrame:
    """Build one row per customer: the top recommendations, the cross-sell, upsell and replenishment offers.

    The cross-sell offer is the best-ranked recommendation that the customer has never bought: a
    product bought before is a repeat purchase, which the replenishment reminder covers.
    """
    items = result.items.sort_values(["customer_id", "rank"])
    top = items[items["rank"] <= TOP_IN_CUSTOMER_TABLE].pivot(index="customer_id", columns="rank",
                                                               values="product_name")
    top.columns = [f"recommendation_{rank}" for rank in top.columns]
    bought = bought_products(lines)
    new_to_customer = items.merge(bought, on=["customer_id", "product_id"], how="left", indicator=True)
    new_to_customer = new_to_customer[new_to_customer["_merge"] == "left_only"]
    first = new_to_customer.groupby("customer_id", sort=False).head(1).set_index("customer_id")
    # The chosen method's measured hit rate: the chance that one recommended product is bought in
    # the test window, the same for every customer, since the methods' scores are not probabilities.
    hit_rate = _hit_rate(result)
    offers = top.join(pd.DataFrame({
        "cross_sell_product_name": first.product_name,
        "cross_sell_price": first.unit_price,
        "cross_sell_score": hit_rate,
    }), how="outer")

    upsell = result.upsell.sort_values(["customer_id", "rank"]).groupby("customer_id", sort=False).head(1)
    if len(upsell):
        prices = _product_prices(lines)
        upsell = upsell.set_index("customer_id")
        offers = offers.join(pd.DataFrame({
            "upsell_product_name": upsell.product_name,
            "upsell_price": upsell.unit_price,
            "upsell_from_product_name": upsell.reason_product_name,
            "upsell_from_price": upsell.reason_product_name.map(prices),
        }), how="outer")
    due = result.replenishment.sort_values(["customer_id", "rank"]).groupby("customer_id", sort=False).head(1)
    if len(due):
        due = due.set_index("customer_id")
        offers = offers.join(pd.DataFrame({
            "replenish_product_name": due.product_name,
            "replenish_price": due.unit_price,
            "replenish_due_date": due.due_date,
        }), how="outer")
    return offers.rename_axis("customer_id").reset_index()


def bought_products(lines: ibis.Table) -> pd.DataFrame:
    """Distinct (customer, product) pairs of every purchase line, over the whole history."""
    bought = lines.filter(lines.customer_id.notnull() & lines.product_id.notnull() & ~lines.is_return)
    return bought.select("customer_id", "product_id").distinct().to_pandas()


def _hit_rate(result) -> float:
    if result.evaluation is None or result.evaluation.empty:
        return np.nan
    table = result.evaluation
    if result.method not in table.index or "precision@10" not in table.columns:
        return np.nan
    return float(table.loc[result.method, "precision@10"])


def _product_prices(lines: ibis.Table) -> pd.Series:
    """Median unit price per product name, over purchase lines."""
    sold = lines.filter(~lines.is_return & lines.unit_price.notnull() & lines.product_name.notnull())
    prices = sold.group_by("product_name").aggregate(price=sold.unit_price.median()).to_pandas()
    return prices.set_index("product_name").price


def recommendation_table(result, bought: pd.DataFrame) -> pd.DataFrame:
    """Return the chosen method's top-k rows per customer, with the reason written out in zh-CN and en.

    ``bought_before`` marks a product the customer has bought: a repeat purchase, not a cross-sell.
    """
    table = result.items.sort_values(["customer_id", "rank"]).reset_index(drop=True)
    table["bought_before"] = pd.MultiIndex.from_frame(table[["customer_id", "product_id"]]).isin(
        pd.MultiIndex.from_frame(bought[["customer_id", "product_id"]]))
    # Reasons are written once per distinct (reason, product) and joined back: a shop's rows repeat a
    # few hundred reasons, so the text does not cost one call per customer and rank.
    keys = ["reason_id", "reason_product_name"]
    reasons = table[keys].drop_duplicates().reset_index(drop=True)
    for language, suffix in LANGUAGE_SUFFIXES.items():
        reasons[f"reason_{suffix}"] = [reason_text(row, language) for row in reasons.to_dict("records")]
    table = table.merge(reasons, on=keys, how="left", validate="many_to_one")
    return table.drop(columns=keys)


def _profiles(lines: ibis.Table) -> pd.DataFrame:
    """Return each customer's latest known name and gender, one row per customer, picked in the engine."""
    known = lines.filter(lines.customer_id.notnull())
    profile = known.group_by("customer_id").aggregate(
        customer_name=known.customer_name.argmax(known.order_time, where=known.customer_name.notnull()),
        gender=known.gender.argmax(known.order_time, where=known.gender.notnull()),
    )
    return profile.to_pandas()


def _choose(inputs: pd.DataFrame, config: ActionConfig, observation_end: dt.date) -> pd.DataFrame:
    return choose_actions(inputs, config, as_of=observation_end + dt.timedelta(days=1))


def _action_summary(columns: pd.DataFrame, customers: pd.DataFrame) -> dict:
    """Customers and expected value per action, overall and by segment."""
    joined = columns[["customer_id", "next_best_action", "action_value"]].merge(
        customers[["customer_id", "segment"]], on="customer_id", how="left")
    by_action = joined.groupby("next_best_action").agg(customers=("customer_id", "size"),
                                                        value=("action_value", "sum")).reset_index()
    by_segment = joined.groupby(["segment", "next_best_action"], observed=True).agg(
        customers=("customer_id", "size"), value=("action_value", "sum")).reset_index()
    return {"by_action": by_action.to_dict(orient="records"), "by_segment": by_segment.to_dict(orient="records")}
