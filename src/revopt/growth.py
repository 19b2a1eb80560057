"""Grow each customer: churn risk, recommendations, the next best action and its message.

``grow_customers`` runs after the CLV models have scored the customers. It fits the churn model
(:mod:`revopt.churn`) on the shop's own history, recommends products (:mod:`revopt.recommend`),
chooses each customer's next best action by expected value (:mod:`revopt.actions`) and writes the
message in both languages (:mod:`revopt.messages`). A part that the data cannot support (a history
too short for the churn labels, an export without product ids) is skipped with a warning, and the
rest still runs, since the CLV scores stand on their own.

The actions weigh money as margin. CLV from the main job counts ``margin`` of revenue (1 by
default, that is revenue), so it is rescaled to the action config's ``margin_rate`` first.

The models are fitted once. Recommendations, offers, actions and messages are then made for
:data:`CHUNK_CUSTOMERS` customers at a time, in customer_id order, and the long recommendation
table is appended to its file chunk by chunk. Only the per-customer columns are kept, so the
memory of this part grows with the chunk size and the number of customers, not with customers x k.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
import warnings
from collections import Counter
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
from revopt.recommend import RecommendationModel, fit_recommendations, reason_text

__all__ = ["GrowthResult", "GrowthSettings", "grow_customers", "bought_products", "recommendation_table",
           "write_recommendations", "ACTION_COLUMNS", "CHUNK_CUSTOMERS", "RECOMMENDATION_COLUMNS"]

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
# Columns of recommendations.csv, one row per customer and rank.
RECOMMENDATION_COLUMNS = ("customer_id", "rank", "product_id", "product_name", "category", "unit_price", "score",
                          "method", "bought_before", "reason_zh", "reason_en")
# Customers whose recommendations, offers, actions and messages are made at once. The memory of
# that work grows with this number: with k = 10 and 125 products, one chunk of 100,000 customers
# raised the peak by about 0.7 GB over chunks of 20,000, and the run took as long. Tests lower it
# to run several chunks on small data.
CHUNK_CUSTOMERS = 100_000


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
    """Per-customer columns to add, the rows written to recommendations.csv, and what the report and model.json show."""

    columns: pd.DataFrame
    recommendation_rows: int
    summary: dict = field(default_factory=dict)


def grow_customers(lines: ibis.Table, purchases: ibis.Table, customers: pd.DataFrame, *, observation_end: dt.date,
                   settings: GrowthSettings, clv_margin: float, step, recommendations_path: Path) -> GrowthResult:
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
        The pipeline's step timer. Steps: ``churn``, ``recommend`` (choosing and fitting the
        method) and ``actions`` (recommendations, offers, actions and messages, chunk by chunk).
    recommendations_path : pathlib.Path
        Where the long recommendation table is written: UTF-8 with BOM, columns
        :data:`RECOMMENDATION_COLUMNS`, sorted by customer_id and rank. Without recommendations
        the file contains only the header.

    Returns
    -------
    GrowthResult
        ``columns`` has one row per customer, in the order of ``customers``, and customer_id as a
        column.
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
        fitted = _recommendations(lines, observation_end, settings)
    model = None
    if fitted is not None:
        model, summary["recommendations"] = fitted

    with step("actions"):
        grown = _ChunkedGrowth(lines, customers, frame, model, config=config, settings=settings,
                               clv_margin=clv_margin, as_of=observation_end + dt.timedelta(days=1))
        columns, rows = grown.run(recommendations_path)
    summary["actions"] = _action_summary(columns, customers)
    return GrowthResult(columns=columns, recommendation_rows=rows, summary=summary)


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
        # A library warning raised once per fold or tree (pandas' infer_string notice) is logged once, with its count.
        repeats = Counter(str(warning.message) for warning in caught)
        for text, count in repeats.items():
            log.info("event=churn_feature_warning count=%d message=%s", count, text)
    except (InputError, FitError) as error:
        log.info("event=churn_skipped reason=%s", error)
        _warn_skipped("churn", error)
        return None
    scores = model.score(lines, purchases, as_of=observation_end)
    for language, suffix in LANGUAGE_SUFFIXES.items():
        scores[f"churn_reasons_{suffix}"] = _reason_texts(scores, language, settings.churn_days)
    keep = ["customer_id", "churn_probability", "churn_reasons_zh", "churn_reasons_en"]
    summary = model.evaluation.to_dict() | {"horizon_days": settings.churn_days, "features": list(model.features)}
    return scores[keep], summary


def _reason_texts(scores: pd.DataFrame, language: str, horizon_days: int) -> np.ndarray:
    """Join the up to three churn reasons of each customer likely to churn into one line; "" for the others.

    Each distinct (feature, value) is written once per rank, and the parts are joined with array
    operations, so the cost grows with the distinct values rather than with the customers.
    """
    texts = np.full(len(scores), "", dtype=object)
    likely = scores.churn_probability.to_numpy() >= REASONS_MIN_PROBABILITY
    if not likely.any():
        return texts
    chosen = scores[likely]
    parts = [_reason_column(chosen[f"churn_reason_{rank}"].to_numpy(dtype=object),
                            chosen[f"churn_reason_{rank}_value"].to_numpy(dtype=float), language, horizon_days)
             for rank in (1, 2, 3)]

    # Two features can have the same explanation (a missing value with one known cause), and
    # "only one purchase day" already implies "fewer than three purchase days".
    one_day_text = message("churn.reason.one_purchase_day", language)
    few_days_text = message("churn.reason.few_purchase_days", language)
    has_one_day = np.logical_or.reduce([part == one_day_text for part in parts])
    separator = _REASON_SEPARATOR[language]
    joined = np.full(len(chosen), "", dtype=object)
    for position, part in enumerate(parts):
        keep = (part != "") & ~(has_one_day & (part == few_days_text))
        for earlier in parts[:position]:
            keep &= part != earlier
        joined = np.where(keep & (joined != ""), joined + separator + part, np.where(keep, part, joined))
    texts[likely] = joined
    return texts


def _reason_column(features: np.ndarray, values: np.ndarray, language: str, horizon_days: int) -> np.ndarray:
    """Write one rank's reason per customer, "" where the rank has no feature, each distinct pair once."""
    # Values are grouped by their bits, so 0.0 and -0.0 stay apart as the formatted texts do.
    pairs = pd.DataFrame({"feature": features, "bits": values.view(np.int64)})
    codes = pairs.groupby(["feature", "bits"], dropna=False, sort=False).ngroup().to_numpy()
    _, first = np.unique(codes, return_index=True)
    distinct = [churn_reason(feature, value, language, horizon_days=horizon_days) if isinstance(feature, str) else ""
                for feature, value in zip(features[first], values[first])]
    return np.asarray(distinct, dtype=object)[codes]


def _recommendations(lines: ibis.Table, observation_end: dt.date, settings: GrowthSettings):
    has_products = lines.aggregate(n=lines.product_id.count()).to_pandas().n.iloc[0] > 0
    if not has_products:
        log.info("event=recommend_skipped reason=no product ids")
        _warn_skipped("recommend", InputError(message_id="errors.no_product_column"))
        return None
    try:
        model = fit_recommendations(lines, k=settings.top_k, as_of=observation_end + dt.timedelta(days=1))
    except (InputError, FitError) as error:
        log.info("event=recommend_skipped reason=%s", error)
        _warn_skipped("recommend", error)
        return None
    evaluation = None if model.evaluation is None else model.evaluation.reset_index().to_dict(orient="records")
    summary = {"method": model.method, "k": settings.top_k, "split_date": model.split_date,
               "as_of": model.as_of, "evaluation": evaluation,
               "evaluation_sample_share": model.evaluation_sample_share, "stats": model.stats}
    return model, summary


# --- chunks of customers ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Chunk:
    """Scored customers handled together, and the customer_id range they cover in the engine.

    The range is ``low < customer_id <= high``, open below for the first chunk and above for the
    last. Together the ranges cover every id, so ids with recommendations but no score are
    written too. Python and DuckDB (1.x and 2.x, binary collation) compare strings by code point,
    so a range of ids sorted in pandas selects the same ids in the engine.
    """

    positions: np.ndarray
    low: str | None
    high: str | None

    def of_index(self, ids: pd.Index) -> pd.Index:
        """Return the ids of the sorted index ``ids`` inside the chunk's range."""
        start = 0 if self.low is None else ids.searchsorted(self.low, side="right")
        stop = len(ids) if self.high is None else ids.searchsorted(self.high, side="right")
        return ids[start:stop]

    def of_table(self, table: ibis.Table) -> ibis.Table:
        """Filter ``table`` to the rows whose customer_id is inside the chunk's range."""
        if self.low is not None:
            table = table.filter(table.customer_id > self.low)
        if self.high is not None:
            table = table.filter(table.customer_id <= self.high)
        return table


def _customer_chunks(customer_ids: pd.Series, size: int) -> tuple[np.ndarray, list[_Chunk]]:
    """Split the customers into chunks of ``size`` in customer_id order, and return that order and the chunks."""
    count = len(customer_ids)
    if customer_ids.is_monotonic_increasing:
        order = np.arange(count)
    else:
        order = np.asarray(customer_ids.argsort(kind="stable"))
    ids = customer_ids.to_numpy()
    n_chunks = max(1, math.ceil(count / size))
    chunks = []
    for number in range(n_chunks):
        start, stop = number * size, min((number + 1) * size, count)
        low = ids[order[start - 1]] if number > 0 else None
        high = ids[order[stop - 1]] if number < n_chunks - 1 else None
        chunks.append(_Chunk(positions=order[start:stop], low=low, high=high))
    return order, chunks


class _ChunkedGrowth:
    """Recommendations, offers, actions and messages of the scored customers, one chunk at a time."""

    def __init__(self, lines: ibis.Table, customers: pd.DataFrame, frame: pd.DataFrame,
                 model: RecommendationModel | None, *, config: ActionConfig, settings: GrowthSettings,
                 clv_margin: float, as_of: dt.date) -> None:
        self.lines = lines
        self.customers = customers
        self.frame = frame
        self.model = model
        self.config = config
        self.settings = settings
        self.clv_margin = clv_margin
        self.as_of = as_of

    def run(self, path: Path) -> tuple[pd.DataFrame, int]:
        """Write the long recommendation table to ``path`` and return the per-customer columns and its row count."""
        order, chunks = _customer_chunks(self.frame.customer_id, CHUNK_CUSTOMERS)
        # The lookups that read every order line are computed once in the engine, then read a chunk at a time.
        profiles = _profiles(self.lines).cache()
        bought = _bought_pairs(self.lines).cache() if self.model is not None else None
        self.prices = _product_prices(self.lines) if self.model is not None else None
        self.dtypes = _offer_dtypes(self.model)
        parts, present = [], set()
        try:
            with _RecommendationFile(path) as file:
                for number, chunk in enumerate(chunks, start=1):
                    started = time.perf_counter()
                    part, chunk_present, table = self._chunk(chunk, profiles, bought)
                    if table is not None:
                        file.write(table)
                    parts.append(part)
                    present |= chunk_present
                    log.info("event=growth_chunk chunk=%d chunks=%d customers=%d recommendation_rows=%d seconds=%.2f",
                             number, len(chunks), len(chunk.positions), 0 if table is None else len(table),
                             time.perf_counter() - started)
        finally:
            profiles.release()
            if bought is not None:
                bought.release()
        return self._columns(parts, order, present), file.rows

    def _chunk(self, chunk: _Chunk, profiles: ibis.Table, bought_pairs: ibis.Table | None):
        """Return one chunk's per-customer values, the offer columns that had rows, and its recommendation rows."""
        base = self.frame.iloc[chunk.positions].reset_index(drop=True)
        table, present = None, set()
        if self.model is None:
            offers = pd.DataFrame({column: np.full(len(base), np.nan) for column in OFFER_COLUMNS})
        else:
            result = self.model.recommend(chunk.of_index(self.model.customers))
            bought = chunk.of_table(bought_pairs).to_pandas()
            offers, present = _offers(result, bought, self.prices, _hit_rate(self.model), pd.Index(base.customer_id),
                                      self.dtypes)
            table = recommendation_table(result, bought)

        inputs = pd.concat([base, offers], axis=1)
        inputs = inputs.merge(chunk.of_table(profiles).to_pandas(), on="customer_id", how="left")
        scored = self.customers.iloc[chunk.positions][["segment", "probability_alive", "expected_purchases", "clv"]]
        inputs = pd.concat([inputs, scored.reset_index(drop=True)], axis=1).rename(
            columns={"probability_alive": "p_alive"})
        inputs["clv"] = inputs["clv"] / self.clv_margin * self.config.margin_rate
        chosen = choose_actions(inputs, self.config, as_of=self.as_of)
        # Texts are kept in Arrow storage until every chunk is done: a short name takes about 20 bytes
        # there and about 80 as a Python string.
        part = {
            "offers": offers,
            "customer_name": pd.array(inputs["customer_name"], dtype="str"),
            "gender": pd.array(inputs["gender"], dtype="str"),
            "next_best_action": chosen["next_best_action"].to_numpy(),
            "action_value": chosen["action_value"].round(MONEY_DECIMALS).to_numpy(),
            "coupon_value": chosen["coupon_value"].round(MONEY_DECIMALS).to_numpy(),
            "action_product": pd.array(chosen["action_product_name"], dtype="str"),
        }
        for language, suffix in LANGUAGE_SUFFIXES.items():
            texts = render_messages(chosen, language, shop_name=self.settings.shop_name,
                                    currency=self.settings.currency)
            part[f"message_{suffix}"] = pd.array(texts, dtype="str")
        return part, present, table

    def _columns(self, parts: list[dict], order: np.ndarray, present: set[str]) -> pd.DataFrame:
        """Join the chunks' values into the per-customer columns, in the order of the scored customers."""
        # Chunks come in customer_id order, and ``inverse`` puts the rows back in the order of ``customers``.
        inverse = None
        if not np.array_equal(order, np.arange(len(order))):
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))

        def joined(name: str) -> np.ndarray:
            values = np.concatenate([part[name] for part in parts])
            return values if inverse is None else values[inverse]

        def joined_text(name: str, missing: object):
            # Pandas stores a column without any text as objects (``missing``: NaN, or NA for the
            # messages) and a column with text as str, so the joined chunks are stored the same way.
            values = pd.concat([pd.Series(part[name]) for part in parts], ignore_index=True)
            if inverse is not None:
                values = values.take(inverse)
            if not values.notna().any():
                return np.full(len(values), missing, dtype=object)
            return values.array

        offers = pd.concat([part["offers"] for part in parts], ignore_index=True)
        if inverse is not None:
            offers = offers.iloc[inverse].reset_index(drop=True)
        # Offer columns that no customer has (an export without categories has no upsell) come last and
        # are all NaN, whichever their type, so that the files of different shops have the same columns.
        missing = [column for column in OFFER_COLUMNS if column not in present]
        for column in missing:
            offers[column] = np.nan
        offers = offers[[column for column in OFFER_COLUMNS if column in present] + missing]

        columns = self.frame.drop(columns=[c for c in self.frame.columns if c.startswith("_")])
        columns = pd.concat([columns, offers.set_axis(columns.index)], axis=1)
        for name in [c for c in columns.columns if c.endswith("_price")]:
            columns[name] = columns[name].round(MONEY_DECIMALS)
        columns["customer_name"] = joined_text("customer_name", np.nan)
        columns["gender"] = joined_text("gender", np.nan)
        actions = joined("next_best_action")
        columns["next_best_action"] = actions
        for language, suffix in LANGUAGE_SUFFIXES.items():
            labels = {code: action_label(code, language) for code in pd.unique(actions)}
            columns[f"next_best_action_{suffix}"] = pd.Series(actions).map(labels).to_numpy()
        columns["action_value"] = joined("action_value")
        columns["coupon_value"] = joined("coupon_value")
        columns["action_product"] = joined_text("action_product", np.nan)
        for suffix in LANGUAGE_SUFFIXES.values():
            columns[f"message_{suffix}"] = joined_text(f"message_{suffix}", pd.NA)
        return columns


def _offer_dtypes(model: RecommendationModel | None) -> dict:
    """Return the type of each offer column, for chunks in which no customer has that offer."""
    dtypes = {column: np.dtype(float) for column in OFFER_COLUMNS}
    if model is None:
        return dtypes
    name = model.data.products.product_name.dtype
    for column in OFFER_COLUMNS:
        if column.startswith("recommendation_") or column.endswith("_product_name"):
            dtypes[column] = name
    if "due_date" in model.data.due:
        dtypes["replenish_due_date"] = model.data.due.due_date.dtype
    return dtypes


def _offers(result, bought: pd.DataFrame, prices: pd.Series, hit_rate: float, customer_ids: pd.Index,
            dtypes: dict) -> tuple[pd.DataFrame, set[str]]:
    """Build the offer columns of ``customer_ids``: top recommendations, cross-sell, upsell and replenishment.

    The cross-sell offer is the best-ranked recommendation that the customer has never bought: a
    product bought before is a repeat purchase, which the replenishment reminder covers.

    Returns
    -------
    offers : pandas.DataFrame
        Columns :data:`OFFER_COLUMNS`, one row per id of ``customer_ids`` in its order, NaN where
        the customer has no such offer.
    present : set of str
        The columns that ``result`` fills for at least one customer, including customers that are
        not in ``customer_ids``.
    """
    values: dict[str, pd.Series] = {}
    items = result.items.sort_values(["customer_id", "rank"])
    top = items[items["rank"] <= TOP_IN_CUSTOMER_TABLE].pivot(index="customer_id", columns="rank",
                                                               values="product_name")
    for rank in top.columns:
        values[f"recommendation_{rank}"] = top[rank]
    new_to_customer = items.merge(bought, on=["customer_id", "product_id"], how="left", indicator=True)
    new_to_customer = new_to_customer[new_to_customer["_merge"] == "left_only"]
    first = new_to_customer.groupby("customer_id", sort=False).head(1).set_index("customer_id")
    # The chosen method's measured hit rate: the chance that one recommended product is bought in
    # the test window, the same for every customer, since the methods' scores are not probabilities.
    values["cross_sell_product_name"] = first.product_name
    values["cross_sell_price"] = first.unit_price
    values["cross_sell_score"] = pd.Series(hit_rate, index=first.index, dtype=float)

    upsell = result.upsell.sort_values(["customer_id", "rank"]).groupby("customer_id", sort=False).head(1)
    if len(upsell):
        upsell = upsell.set_index("customer_id")
        values["upsell_product_name"] = upsell.product_name
        values["upsell_price"] = upsell.unit_price
        values["upsell_from_product_name"] = upsell.reason_product_name
        values["upsell_from_price"] = upsell.reason_product_name.map(prices)
    due = result.replenishment.sort_values(["customer_id", "rank"]).groupby("customer_id", sort=False).head(1)
    if len(due):
        due = due.set_index("customer_id")
        values["replenish_product_name"] = due.product_name
        values["replenish_price"] = due.unit_price
        values["replenish_due_date"] = due.due_date

    offers = pd.DataFrame({
        column: (values[column].reindex(customer_ids).array if column in values
                 else pd.Series(index=customer_ids, dtype=dtypes[column]).array)
        for column in OFFER_COLUMNS
    })
    return offers, set(values)


class _RecommendationFile:
    """recommendations.csv opened for appending chunks: UTF-8 with BOM (for Excel), header written once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0

    def __enter__(self) -> _RecommendationFile:
        self.sink = open(self.path, "w", encoding="utf-8-sig", newline="")
        pd.DataFrame(columns=list(RECOMMENDATION_COLUMNS)).to_csv(self.sink, index=False)
        return self

    def write(self, table: pd.DataFrame) -> None:
        table[list(RECOMMENDATION_COLUMNS)].to_csv(self.sink, index=False, header=False)
        self.rows += len(table)

    def __exit__(self, *exc) -> None:
        self.sink.close()


def write_recommendations(model: RecommendationModel, lines: ibis.Table, path: Path) -> tuple[int, int]:
    """Write the recommendations of every customer of ``model`` to ``path``, a chunk of customers at a time.

    Parameters
    ----------
    model : RecommendationModel
        The fitted recommenders.
    lines : ibis.Table
        The clean order lines, for ``bought_before``.
    path : pathlib.Path
        The file: UTF-8 with BOM, columns :data:`RECOMMENDATION_COLUMNS`, sorted by customer_id
        and rank, :data:`CHUNK_CUSTOMERS` customers at a time.

    Returns
    -------
    rows : int
        Rows written.
    customers : int
        Customers with at least one row.
    """
    _, chunks = _customer_chunks(pd.Series(model.customers), CHUNK_CUSTOMERS)
    bought = _bought_pairs(lines).cache()
    recommended = 0
    try:
        with _RecommendationFile(path) as file:
            for chunk in chunks:
                result = model.recommend(model.customers[chunk.positions])
                file.write(recommendation_table(result, chunk.of_table(bought).to_pandas()))
                recommended += result.items.customer_id.nunique()
    finally:
        bought.release()
    return file.rows, recommended


def bought_products(lines: ibis.Table) -> pd.DataFrame:
    """Distinct (customer, product) pairs of every purchase line, over the whole history."""
    return _bought_pairs(lines).to_pandas()


def _bought_pairs(lines: ibis.Table) -> ibis.Table:
    bought = lines.filter(lines.customer_id.notnull() & lines.product_id.notnull() & ~lines.is_return)
    return bought.select("customer_id", "product_id").distinct()


def _hit_rate(model) -> float:
    if model.evaluation is None or model.evaluation.empty:
        return np.nan
    table = model.evaluation
    if model.method not in table.index or "precision@10" not in table.columns:
        return np.nan
    return float(table.loc[model.method, "precision@10"])


def _product_prices(lines: ibis.Table) -> pd.Series:
    """Median unit price per product name, over purchase lines."""
    sold = lines.filter(~lines.is_return & lines.unit_price.notnull() & lines.product_name.notnull())
    prices = sold.group_by("product_name").aggregate(price=sold.unit_price.median()).to_pandas()
    return prices.set_index("product_name").price


def recommendation_table(result, bought: pd.DataFrame) -> pd.DataFrame:
    """Return the chosen method's top-k rows per customer, with the reason written out in zh-CN and en.

    ``bought_before`` marks a product the customer has bought: a repeat purchase, not a cross-sell.
    ``bought`` needs the (customer_id, product_id) pairs of the customers in ``result`` only.
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


def _profiles(lines: ibis.Table) -> ibis.Table:
    """Return each customer's latest known name and gender, one row per customer, as an engine expression."""
    known = lines.filter(lines.customer_id.notnull())
    return known.group_by("customer_id").aggregate(
        customer_name=known.customer_name.argmax(known.order_time, where=known.customer_name.notnull()),
        gender=known.gender.argmax(known.order_time, where=known.gender.notnull()),
    )


def _action_summary(columns: pd.DataFrame, customers: pd.DataFrame) -> dict:
    """Customers and expected value per action, overall and by segment."""
    joined = columns[["customer_id", "next_best_action", "action_value"]].merge(
        customers[["customer_id", "segment"]], on="customer_id", how="left")
    by_action = joined.groupby("next_best_action").agg(customers=("customer_id", "size"),
                                                        value=("action_value", "sum")).reset_index()
    by_segment = joined.groupby(["segment", "next_best_action"], observed=True).agg(
        customers=("customer_id", "size"), value=("action_value", "sum")).reset_index()
    return {"by_action": by_action.to_dict(orient="records"), "by_segment": by_segment.to_dict(orient="records")}
