"""The public entry points: recommendations for every customer, with the evaluation behind the choice.

:func:`recommend` returns every customer's lists at once. :func:`fit_recommendations` chooses and
fits the methods once and returns a :class:`RecommendationModel`, whose
:meth:`~RecommendationModel.recommend` serves any set of customers, so that a large shop can be
served a chunk of customers at a time. :func:`recommend` returns that model's lists for every customer.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import ibis
import pandas as pd

from revopt.errors import ConfigError, InputError, check_range
from revopt.i18n import message
from revopt.recommend.baskets import RecommendSettings, TrainingData, prepare_training, with_optional_columns
from revopt.recommend.evaluate import DEFAULT_METHODS, MAX_EVALUATION_CUSTOMERS, choose, evaluate
from revopt.recommend.methods import (
    METHODS,
    CoOccurrence,
    Popularity,
    Recommender,
    Replenishment,
    Upsell,
    fill_up,
    make_method,
)

__all__ = ["AUTO", "ITEM_TABLE_COLUMNS", "RecommendationModel", "RecommendationResult", "fit_recommendations",
           "reason_text", "recommend"]

logger = logging.getLogger(__name__)

AUTO = "auto"
ITEM_TABLE_COLUMNS = ("customer_id", "rank", "product_id", "product_name", "category", "unit_price", "score",
                      "method", "reason_id", "reason_product_name")
# Reasons whose text names a product.
_REASONS_WITH_PRODUCT = frozenset({"bought_with", "step_up", "restock"})


@dataclass(frozen=True)
class RecommendationResult:
    """Recommendations for every customer on one as-of date.

    Attributes
    ----------
    items : pandas.DataFrame
        The chosen method's top-k list per customer, filled up with popular products where the
        method found fewer than k. Columns :data:`ITEM_TABLE_COLUMNS`. ``method`` is the method
        that produced the row. ``reason_product_name`` is the product a reason names, its id
        where the name is unknown, and null for reasons that name no product. Turn a row into
        text with :func:`reason_text`.
    evaluation : pandas.DataFrame or None
        The time-split metrics per method (see :class:`~revopt.recommend.evaluate.Evaluation`);
        None when the method was given and no split date was.
    method : str
        The method behind ``items``.
    upsell : pandas.DataFrame
        Up to k upsell offers per customer, columns as ``items``; empty without categories and prices.
    replenishment : pandas.DataFrame
        Due replenishment items per customer, columns as ``items`` plus ``last_date``,
        ``cycle_days`` and ``due_date``.
    as_of : datetime.date
        The day the recommendations are for; lines before it were used.
    split_date : datetime.date or None
        First day of the evaluation's test window.
    stats : dict
        Line counts of the training data (see :class:`~revopt.recommend.baskets.TrainingData`).
        With the co-occurrence method also ``rules``, ``rule_baskets`` (baskets counted),
        ``capped_baskets`` and ``capped_lines`` (baskets over the size limit, left out of rules).
    """

    items: pd.DataFrame
    evaluation: pd.DataFrame | None
    method: str
    upsell: pd.DataFrame
    replenishment: pd.DataFrame
    as_of: dt.date
    split_date: dt.date | None
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RecommendationModel:
    """The chosen method, the popularity fallback, upsell and replenishment, fitted once on one as-of date.

    Made by :func:`fit_recommendations`. :meth:`recommend` returns the recommendations of any set
    of customers. A customer's rows do not depend on which other customers are requested in the
    same call, so serving a shop in chunks of customers gives the same rows as one call.

    Attributes
    ----------
    method : str
        The method behind the lists.
    k : int
        Products per customer.
    data : TrainingData
        The training data on ``as_of``.
    recommender : Recommender
        The fitted ``method``.
    fallback : Popularity
        Fills lists where the method finds fewer than ``k`` products.
    upsell : Upsell or None
        None when the data has no product with both a category and a price.
    replenishment : Replenishment
    evaluation : pandas.DataFrame or None
        As in :class:`RecommendationResult`.
    split_date : datetime.date or None
        First day of the evaluation's test window.
    stats : dict
        As in :class:`RecommendationResult`.
    evaluation_sample_share : float or None
        Share of the test-window customers the evaluation scored (see
        :attr:`~revopt.recommend.evaluate.Evaluation.sample_share`); None when no evaluation ran.
    """

    method: str
    k: int
    data: TrainingData
    recommender: Recommender
    fallback: Popularity
    upsell: Upsell | None
    replenishment: Replenishment
    evaluation: pd.DataFrame | None
    split_date: dt.date | None
    stats: dict = field(default_factory=dict)
    evaluation_sample_share: float | None = None

    @property
    def as_of(self) -> dt.date:
        """The day the recommendations are for."""
        return self.data.as_of

    @property
    def customers(self) -> pd.Index:
        """Customer ids that get recommendations, sorted."""
        return self.data.customers

    def recommend(self, customers: Sequence[str] | None = None) -> RecommendationResult:
        """Return the recommendations of ``customers``, default every customer.

        Parameters
        ----------
        customers : sequence of str, optional
            Customer ids; ids that are not in :attr:`customers` get no rows.

        Returns
        -------
        RecommendationResult
            Rows of the requested customers, sorted by customer_id and rank.
        """
        k, data = self.k, self.data
        own = self.recommender.recommend(k, customers=customers)
        fallback = self.fallback.recommend(2 * k, customers=customers)
        items = fill_up(own, fallback, k, method=self.method)
        upsell = self.upsell.recommend(k, customers=customers) if self.upsell is not None else _empty_items()
        replenishment = self.replenishment.recommend(k, customers=customers)
        due = data.due
        if customers is not None:
            rows = data.customers.get_indexer(pd.Index(customers).unique())
            due = due[due.row.isin(rows[rows >= 0])]
        replenishment = _describe(replenishment.assign(method=Replenishment.name), data).merge(
            due[["customer_id", "product_id", "last_date", "cycle_days", "due_date"]],
            on=["customer_id", "product_id"], how="left")
        return RecommendationResult(
            items=_describe(items, data), evaluation=self.evaluation, method=self.method,
            upsell=_describe(upsell.assign(method=Upsell.name), data), replenishment=replenishment,
            as_of=self.as_of, split_date=self.split_date, stats=self.stats,
        )


def recommend(
    lines: ibis.Table,
    *,
    k: int = 10,
    method: str | Recommender = AUTO,
    as_of: dt.date | None = None,
    split_date: dt.date | None = None,
    test_days: int = 30,
    candidates: Sequence[str | Recommender] = DEFAULT_METHODS,
    settings: RecommendSettings | None = None,
    exclude: Mapping[str, Sequence[str]] | None = None,
    max_customers: int | None = MAX_EVALUATION_CUSTOMERS,
) -> RecommendationResult:
    """Recommend ``k`` products to every customer, choosing the method on a time split when asked.

    The same as ``fit_recommendations(lines, ...).recommend()``; see :func:`fit_recommendations`
    for the parameters and errors.

    Returns
    -------
    RecommendationResult
    """
    return fit_recommendations(lines, k=k, method=method, as_of=as_of, split_date=split_date, test_days=test_days,
                               candidates=candidates, settings=settings, exclude=exclude,
                               max_customers=max_customers).recommend()


def fit_recommendations(
    lines: ibis.Table,
    *,
    k: int = 10,
    method: str | Recommender = AUTO,
    as_of: dt.date | None = None,
    split_date: dt.date | None = None,
    test_days: int = 30,
    candidates: Sequence[str | Recommender] = DEFAULT_METHODS,
    settings: RecommendSettings | None = None,
    exclude: Mapping[str, Sequence[str]] | None = None,
    max_customers: int | None = MAX_EVALUATION_CUSTOMERS,
) -> RecommendationModel:
    """Choose the method on a time split when asked, and fit it, upsell and replenishment once.

    Parameters
    ----------
    lines : ibis.Table
        Clean order lines (``CleanTables.lines``).
    k : int, default 10
        Products per customer.
    method : str or Recommender, default "auto"
        ``"auto"`` evaluates ``candidates`` against popularity and uses the best on recall@10
        (popularity unless one beats it). Otherwise one of ``co_occurrence``, ``als``,
        ``popularity``, ``upsell``, ``replenishment``, or a configured instance.
    as_of : datetime.date, optional
        The day to recommend for; lines dated on or after it are ignored. Default: the day after
        the last order day.
    split_date : datetime.date, optional
        First day of the evaluation's test window. Default for ``"auto"``: ``as_of - test_days``.
        With an explicit method the evaluation runs only when this is given.
    test_days : int, default 30
        Length of the test window in days (the window ends no later than ``as_of``).
    candidates : sequence of str or Recommender, default DEFAULT_METHODS
        Methods compared with popularity.
    settings : RecommendSettings, optional
        Data rules (windows, basket definition, rule thresholds).
    exclude : mapping of str to sequence of str, optional
        Extra non-product patterns by column, added to ``NON_PRODUCT_PATTERNS``.
    max_customers : int or None, default MAX_EVALUATION_CUSTOMERS (100,000)
        Maximum number of test-window customers the evaluation scores. When more qualify, it
        scores a fixed sample of about this many, chosen by the MD5 of the customer id. The
        methods are still fitted on every training customer. None scores them all.

    Returns
    -------
    RecommendationModel

    Raises
    ------
    ConfigError
        For an unknown method, a split date outside the data, or ``k``, ``test_days`` or
        ``max_customers`` below 1.
    InputError
        If required columns are missing, if no customer bought a product before the as-of or
        split date, or if no training customer bought a product in the test window.
    """
    check_range("k", k, low=1)
    check_range("test_days", test_days, low=1)
    if max_customers is not None:
        check_range("max_customers", max_customers, low=1)
    if isinstance(method, str) and method != AUTO and method not in METHODS:
        raise ConfigError(message_id="recommend.error.unknown_option", name="method", value=repr(method),
                          choices=", ".join((AUTO, *METHODS)))
    settings = settings or RecommendSettings()
    lines = with_optional_columns(lines)
    first_day, last_day = _date_range(lines)
    as_of = as_of or last_day + dt.timedelta(days=1)

    evaluation = None
    sample_share = None
    chosen = method if isinstance(method, str) else method.name
    if method == AUTO or split_date is not None:
        split_date = split_date or as_of - dt.timedelta(days=test_days)
        if not first_day < split_date < as_of:
            raise ConfigError(message_id="recommend.error.bad_split", split_date=split_date.isoformat(),
                              first=first_day.isoformat(), as_of=as_of.isoformat())
        window = min(test_days, (as_of - split_date).days)
        compared = candidates if method == AUTO else [method]
        scored = evaluate(lines, split_date=split_date, test_days=window, k_values=sorted({5, 10, k}),
                          methods=compared, settings=settings, exclude=exclude, max_customers=max_customers)
        evaluation, sample_share = scored.table, scored.sample_share
        if method == AUTO:
            chosen = choose(evaluation)
        logger.info("event=method_chosen method=%s split_date=%s", chosen, split_date)

    data = prepare_training(lines, as_of=as_of, settings=settings, exclude=exclude)
    model = method if isinstance(method, Recommender) else make_method(chosen)
    model.fit(data)
    stats = dict(data.stats)
    if isinstance(model, CoOccurrence):
        rules = model.rules_
        stats.update(rules=len(rules.table), rule_baskets=rules.baskets, capped_baskets=rules.capped_baskets,
                     capped_lines=rules.capped_lines)
    upsell = Upsell()
    return RecommendationModel(
        method=chosen, k=k, data=data, recommender=model, fallback=Popularity().fit(data),
        upsell=upsell.fit(data) if upsell.is_applicable(data) else None, replenishment=Replenishment().fit(data),
        evaluation=evaluation, split_date=split_date, stats=stats, evaluation_sample_share=sample_share,
    )


def reason_text(row, language: str) -> str:
    """Return the reason of one recommendation row in ``language`` ("zh-CN" or "en").

    ``row`` is anything indexable by ``"reason_id"`` and ``"reason_product_name"``, such as a row
    of ``RecommendationResult.items`` or a dict.
    """
    reason_id = row["reason_id"]
    if reason_id in _REASONS_WITH_PRODUCT:
        return message(f"recommend.reason.{reason_id}", language, product=row["reason_product_name"])
    return message(f"recommend.reason.{reason_id}", language)


def _date_range(lines: ibis.Table) -> tuple[dt.date, dt.date]:
    row = lines.aggregate(first=lines.order_date.min(), last=lines.order_date.max()).to_pandas().iloc[0]
    if pd.isna(row["last"]):
        raise InputError(message_id="recommend.error.no_lines")
    return pd.Timestamp(row["first"]).date(), pd.Timestamp(row["last"]).date()


def _empty_items() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype="object") for name in
                         ("customer_id", "rank", "product_id", "score", "reason_id", "reason_product_id")})


def _describe(items: pd.DataFrame, data: TrainingData) -> pd.DataFrame:
    """Add product names, categories and prices, and the name of the product each reason refers to."""
    products = data.products
    names = products.product_name.where(products.product_name.notna(), products.product_id)
    name_of = dict(zip(products.product_id, names))
    described = items.merge(products[["product_id", "product_name", "category", "unit_price"]], on="product_id",
                            how="left")
    described["reason_product_name"] = described.reason_product_id.map(name_of)
    return described[list(ITEM_TABLE_COLUMNS)].reset_index(drop=True)
