"""Time-split evaluation of the recommendation methods, and the choice between them.

Every method is trained on the lines dated before the split date and recommends for that day.
A customer's relevant items are the products they bought in the test window, from the split
date up to ``test_days`` later. Only customers with purchases before the split date and at least
one product bought in the test window are scored. When more than ``max_customers`` customers
qualify, a fixed sample of about that many is scored, chosen in the engine by the MD5 of the
customer id (:mod:`revopt.sampling`). Every method is still fitted on all training customers.

A method that returns fewer than ``k`` products is filled up with popular products, as in the
delivered lists. The table reports the share of list slots that were filled.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import ibis
import pandas as pd

from revopt.errors import InputError, check_range
from revopt.recommend.baskets import RecommendSettings, TrainingData, prepare_training, purchase_lines
from revopt.recommend.methods import Popularity, Recommender, fill_up, make_method
from revopt.recommend.metrics import catalogue_coverage, ranking_metrics
from revopt.sampling import customer_sample

__all__ = ["DEFAULT_METHODS", "MAX_EVALUATION_CUSTOMERS", "SELECTION_METRIC", "Evaluation", "choose", "evaluate"]

logger = logging.getLogger(__name__)

DEFAULT_METHODS = ("co_occurrence", "als", "upsell", "replenishment")
SELECTION_METRIC = "recall@10"
# Maximum number of test-window customers scored. Scoring keeps every scored customer's lists of
# each method in pandas, so its memory grows with the customers scored. A sample of 100,000 still
# measures recall@10 with a standard error below 0.0016, namely 0.5 / sqrt(100,000), because each
# customer's recall lies in [0, 1] and so has a variance of at most 1/4.
MAX_EVALUATION_CUSTOMERS = 100_000


@dataclass(frozen=True)
class Evaluation:
    """The metrics of each method on one time split.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per method (index ``method``), popularity included. Columns: ``precision@k``,
        ``recall@k``, ``map@k`` and ``ndcg@k`` for each k, ``coverage``, ``filled_share``,
        ``customers`` and ``seconds``. ``coverage`` is the share of the catalogue recommended to
        at least one scored customer, and ``filled_share`` the share of list slots filled with
        popular products. ``customers`` counts the scored customers, and ``seconds`` is the
        fit and recommend time.
    split_date, test_end : datetime.date
        The test window is ``[split_date, test_end)``.
    relevant_items : int
        (customer, product) pairs bought in the test window by scored customers.
    sample_share : float, default 1.0
        Expected share of the qualifying test-window customers that were scored: 1.0 unless more
        than ``max_customers`` qualified and a fixed sample was scored.
    """

    table: pd.DataFrame
    split_date: dt.date
    test_end: dt.date
    relevant_items: int
    sample_share: float = 1.0


def evaluate(
    lines: ibis.Table,
    *,
    split_date: dt.date,
    test_days: int = 30,
    k_values: Sequence[int] = (5, 10),
    methods: Sequence[str | Recommender] = DEFAULT_METHODS,
    settings: RecommendSettings | None = None,
    exclude: Mapping[str, Sequence[str]] | None = None,
    training: TrainingData | None = None,
    max_customers: int | None = MAX_EVALUATION_CUSTOMERS,
) -> Evaluation:
    """Train each method on lines before ``split_date`` and score its top-k lists on the next ``test_days``.

    Parameters
    ----------
    lines : ibis.Table
        Clean order lines.
    split_date : datetime.date
        First day of the test window; training uses the lines dated before it.
    test_days : int, default 30
        Length of the test window in days.
    k_values : sequence of int, default (5, 10)
        List lengths to score; the longest is the length recommended.
    methods : sequence of str or Recommender, default DEFAULT_METHODS
        Methods to compare with popularity, by name or as configured instances. Methods whose
        data needs are not met (upsell without categories, replenishment without repeat buyers)
        are left out of the table.
    settings : RecommendSettings, optional
        Data rules; default ``RecommendSettings()``.
    exclude : mapping, optional
        Extra non-product patterns, as in :func:`~revopt.recommend.baskets.purchase_lines`.
    training : TrainingData, optional
        Training data already prepared for ``split_date`` with the same settings.
    max_customers : int or None, default MAX_EVALUATION_CUSTOMERS (100,000)
        Maximum number of test-window customers to score. When more qualify, a fixed sample of
        about this many is scored: the customers whose id's MD5 falls in the first buckets (see
        :func:`revopt.sampling.customer_sample`). None scores every qualifying customer.

    Returns
    -------
    Evaluation

    Raises
    ------
    ConfigError
        If ``test_days`` or ``max_customers`` is below 1.
    InputError
        If no training customer bought a product in the test window.
    """
    check_range("test_days", test_days, low=1)
    if max_customers is not None:
        check_range("max_customers", max_customers, low=1)
    settings = settings or RecommendSettings()
    max_k = max(k_values)
    data = training or prepare_training(lines, as_of=split_date, settings=settings, exclude=exclude)
    test_end = split_date + dt.timedelta(days=test_days)
    relevant, sample_share = _test_items(lines, data, split_date=split_date, test_end=test_end, settings=settings,
                                         exclude=exclude, max_customers=max_customers)
    if relevant.empty:
        raise InputError(message_id="recommend.error.no_test_purchases", start=split_date.isoformat(),
                         end=(test_end - dt.timedelta(days=1)).isoformat())
    customers = relevant.customer_id.unique()
    catalogue = data.products.product_id[data.products.in_catalogue]

    popularity = Popularity().fit(data)
    fallback = popularity.recommend(2 * max_k, customers=customers)
    rows = {}
    for method in [popularity, *[make_method(m) if isinstance(m, str) else m for m in methods]]:
        if not method.is_applicable(data):
            logger.info("event=method_skipped method=%s reason=data_not_available", method.name)
            continue
        start = time.perf_counter()
        items = method.fit(data).recommend(max_k, customers=customers)
        items = fill_up(items, fallback, max_k, method=method.name)
        seconds = time.perf_counter() - start
        row = ranking_metrics(items, relevant, k_values=k_values)
        row["coverage"] = catalogue_coverage(items.product_id, catalogue)
        row["filled_share"] = float((items.method != method.name).sum() / (max_k * len(customers)))
        row["seconds"] = seconds
        rows[method.name] = row
        logger.info("event=method_evaluated method=%s %s=%.4f seconds=%.2f", method.name, SELECTION_METRIC,
                    row.get(SELECTION_METRIC, float("nan")), seconds)

    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    table["customers"] = table.customers.astype(int)
    return Evaluation(table=table, split_date=split_date, test_end=test_end, relevant_items=len(relevant),
                      sample_share=sample_share)


def choose(table: pd.DataFrame, *, metric: str = SELECTION_METRIC) -> str:
    """Return the method with the highest ``metric``; popularity unless another method beats it.

    Ties go to the method listed first in ``table``.
    """
    baseline = table.loc[Popularity.name, metric]
    others = table.drop(index=Popularity.name)[metric].dropna()
    if others.empty or others.max() <= baseline:
        return Popularity.name
    return str(others.idxmax())


def _test_items(lines, data: TrainingData, *, split_date, test_end, settings, exclude,
                max_customers) -> tuple[pd.DataFrame, float]:
    """Return the (customer_id, product_id) pairs bought in the test window, and the share of customers kept.

    Only training customers count. When more than ``max_customers`` of them bought in
    ``[split_date, test_end)``, only a fixed sample's pairs are returned.
    """
    window = lines.filter((lines.order_date >= ibis.date(split_date)) & (lines.order_date < ibis.date(test_end)))
    bought = purchase_lines(window, basket=settings.basket, exclude=exclude)
    bought = bought.filter(bought.customer_id.notnull()).select("customer_id", "product_id").distinct()
    # Training customers are those with a purchase line before the split (as in TrainingData.customers).
    trained = data.sales.filter(data.sales.customer_id.notnull()).select("customer_id").distinct()
    bought = bought.semi_join(trained, "customer_id")

    share = 1.0
    if max_customers is not None:
        customers = int(bought.customer_id.nunique().execute())
        sample = customer_sample(customers, max_customers)
        if sample.sampled:
            bought = sample.apply(bought)
            share = sample.share
    relevant = bought.to_pandas()
    if share < 1.0:
        # The share is the hash bound's, so the number scored varies around share * customers.
        logger.info("event=recommend_evaluation_sample customers=%d scored=%d share=%.4f", customers,
                    relevant.customer_id.nunique(), share)
    return relevant.sort_values(["customer_id", "product_id"]).reset_index(drop=True), share
