"""Recommendation methods behind one interface: ``fit(training_data)`` then ``recommend(k)``.

Every method returns, per customer, at most ``k`` products with a score and a reason, and obeys
the same two rules, enforced here for all of them:

* only catalogue products (sold within the catalogue window) are recommended;
* a product the customer bought within the recent window is not recommended again, unless it is
  a replenishment item that is due, and a product the customer returned in full is not
  recommended at all (see :class:`~revopt.recommend.baskets.TrainingData`).

Scores rank products within one method and one customer. They are not comparable across methods.

Methods and their reasons:

* :class:`CoOccurrence` ranks product ``j`` by the sum, over the customer's products ``i``, of
  the recency weight of ``i`` times confidence(i -> j), or times confidence times lift. The
  reason names the product ``i`` that contributes most ("often bought with X").
* :class:`ImplicitALS` is collaborative filtering with implicit's alternating least squares for
  implicit feedback, on the customer x product matrix of purchase days ("customers like you
  bought this").
* :class:`Popularity` ranks products by distinct buyers in the popularity window ("popular now").
* :class:`Upsell` offers the most popular catalogue product of the same category priced above a
  product the customer bought ("a step up from X"). It needs categories and prices.
* :class:`Replenishment` offers the customer's due replenishment items ("time to restock X").
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from revopt.errors import ConfigError, NotFittedError, check_range
from revopt.recommend.baskets import TrainingData
from revopt.recommend.rules import AssociationRules, association_rules

__all__ = [
    "ITEM_COLUMNS",
    "METHODS",
    "CoOccurrence",
    "ImplicitALS",
    "Popularity",
    "Recommender",
    "Replenishment",
    "Upsell",
    "fill_up",
    "make_method",
]

logger = logging.getLogger(__name__)

ITEM_COLUMNS = ("customer_id", "rank", "product_id", "score", "reason_id", "reason_product_id")

# Customers scored per block. A block of dense scores takes rows x products x 8 bytes, for
# example 1,024 x 4,000 products = 33 MB.
_BLOCK_ROWS = 1024
# Joined (customer, candidate) rows per upsell block, about 100 MB of pandas columns.
_UPSELL_JOIN_ROWS = 2_000_000


class Recommender(ABC):
    """A recommendation method: the constructor stores settings, ``fit`` learns, ``recommend`` ranks."""

    name: ClassVar[str]

    def fit(self, data: TrainingData) -> Recommender:
        """Learn from ``data`` and return ``self``."""
        self.data_ = data
        self._fit(data)
        return self

    def is_applicable(self, data: TrainingData) -> bool:
        """Return whether the data has what this method needs (for example categories and prices)."""
        return True

    def recommend(self, k: int, *, customers: Sequence[str] | None = None) -> pd.DataFrame:
        """Return up to ``k`` products per customer, best first.

        Parameters
        ----------
        k : int
            Products per customer, at least 1.
        customers : sequence of str, optional
            Customer ids to recommend for; default every customer of the training data. Ids that
            are not in the training data get no rows.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`ITEM_COLUMNS`; ``rank`` starts at 1, ``reason_product_id`` is null for
            reasons that name no product.
        """
        if not hasattr(self, "data_"):
            raise NotFittedError(message_id="recommend.error.not_fitted", model=type(self).__name__)
        check_range("k", k, low=1)
        rows = np.arange(len(self.data_.customers))
        if customers is not None:
            rows = self.data_.customers.get_indexer(pd.Index(customers).unique())
            rows = np.sort(rows[rows >= 0])
        items = self._recommend(rows, k)
        return _ranked(items, k)

    @abstractmethod
    def _fit(self, data: TrainingData) -> None: ...

    @abstractmethod
    def _recommend(self, rows: np.ndarray, k: int) -> pd.DataFrame:
        """Return columns customer_id, product_id, score, reason_id, reason_product_id for matrix ``rows``."""


def _ranked(items: pd.DataFrame, k: int) -> pd.DataFrame:
    """Sort by customer and descending score (ties by product id), keep ``k`` per customer and number them."""
    if items.empty:
        return pd.DataFrame({name: pd.Series(dtype="object") for name in ITEM_COLUMNS})
    items = items.sort_values(["customer_id", "score", "product_id"], ascending=[True, False, True], kind="stable")
    items = items.drop_duplicates(["customer_id", "product_id"])
    items["rank"] = items.groupby("customer_id").cumcount() + 1
    items = items[items["rank"] <= k]
    return items[list(ITEM_COLUMNS)].reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# Methods that score every catalogue product for every customer
# ---------------------------------------------------------------------------------------


class _MatrixRecommender(Recommender):
    """A method that produces a dense score per product for a block of customers."""

    # Whether a product needs a positive score to be recommended (False when scores can be negative).
    positive_only: ClassVar[bool] = True

    @abstractmethod
    def _scores(self, rows: np.ndarray) -> np.ndarray:
        """Return a float array, customers ``rows`` x products."""

    @abstractmethod
    def _reasons(self, rows: np.ndarray, cols: np.ndarray) -> tuple[str, np.ndarray]:
        """Return the reason id and, per (row, col), the product column the reason names (-1 for none)."""

    def _recommend(self, rows: np.ndarray, k: int) -> pd.DataFrame:
        data = self.data_
        parts = []
        for block, scores in self._block_scores(rows):
            allowed = data.catalogue_mask[None, :] & ~data.blocked[block].toarray()
            if self.positive_only:
                allowed &= scores > 0
            row_in_block, cols, values = _top_k(np.where(allowed, scores, -np.inf), k)
            reason_id, reason_cols = self._reasons(block[row_in_block], cols)
            parts.append(pd.DataFrame({
                "customer_id": data.customers[block[row_in_block]],
                "product_id": data.products.product_id.to_numpy()[cols],
                "score": values,
                "reason_id": reason_id,
                "reason_product_id": _product_ids(data, reason_cols),
            }))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(ITEM_COLUMNS))

    def _block_scores(self, rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield the sorted ``rows`` a block at a time, with their scores.

        Scores are computed for whole blocks of matrix rows ``[b * _BLOCK_ROWS, (b + 1) *
        _BLOCK_ROWS)``, whichever of their rows were requested. A BLAS matrix product can differ in
        the last bit with the shape of its operands (OpenBLAS 0.3.31 does), and a customer's
        scores must not depend on the other customers of the request.
        """
        if len(rows) == 0:
            return
        n_rows = len(self.data_.customers)
        starts = np.flatnonzero(np.diff(rows // _BLOCK_ROWS)) + 1
        for block in np.split(rows, starts):
            first = block[0] - block[0] % _BLOCK_ROWS
            whole = np.arange(first, min(first + _BLOCK_ROWS, n_rows))
            yield block, np.asarray(self._scores(whole), dtype=float)[block - first]


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (row, column, score) of the ``k`` highest finite scores in each row."""
    n_rows, n_cols = scores.shape
    if n_rows == 0 or n_cols == 0:
        empty = np.array([], dtype=int)
        return empty, empty, np.array([], dtype=float)
    k = min(k, n_cols)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, top, axis=1)
    rows = np.repeat(np.arange(n_rows), k)
    cols = top.ravel()
    values = values.ravel()
    finite = np.isfinite(values)
    return rows[finite], cols[finite], values[finite]


def _product_ids(data: TrainingData, cols: np.ndarray) -> np.ndarray:
    ids = data.products.product_id.to_numpy(dtype=object)
    return np.where(cols >= 0, ids[np.maximum(cols, 0)], None)


class CoOccurrence(_MatrixRecommender):
    """Cross-sell from association rules between single products.

    Parameters
    ----------
    weighting : {"confidence", "lift"}, default "confidence"
        The rule weight: confidence(i -> j), or confidence(i -> j) x lift(i -> j), which favours
        products that are rarely bought without ``i``.
    half_life_days : float, default 30
        A product the customer bought ``d`` days before the as-of date weighs ``0.5 ** (d /
        half_life_days)``, so recent purchases drive the recommendations.

    Attributes
    ----------
    rules_ : AssociationRules
        The rules mined from the training baskets.
    """

    name = "co_occurrence"
    weightings = ("confidence", "lift")

    def __init__(self, *, weighting: str = "confidence", half_life_days: float = 30.0) -> None:
        if weighting not in self.weightings:
            raise ConfigError(message_id="recommend.error.unknown_option", name="weighting", value=repr(weighting),
                              choices=", ".join(self.weightings))
        check_range("half_life_days", half_life_days, low=0.0, low_inclusive=False)
        self.weighting = weighting
        self.half_life_days = half_life_days

    def _fit(self, data: TrainingData) -> None:
        settings = data.settings
        baskets = data.sales.filter(data.sales.basket_id.notnull())
        if not settings.guest_baskets:
            baskets = baskets.filter(baskets.customer_id.notnull())
        self.rules_: AssociationRules = association_rules(
            baskets, min_pair_count=settings.min_pair_count, max_basket_items=settings.max_basket_items)
        rules = self.rules_.table
        products = pd.Index(data.products.product_id)
        weight = rules.confidence if self.weighting == "confidence" else rules.confidence * rules.lift
        shape = (len(products), len(products))
        self.rule_matrix_ = sp.csr_matrix(
            (weight.to_numpy(float), (products.get_indexer(rules.antecedent), products.get_indexer(rules.consequent))),
            shape=shape)
        self.rule_columns_ = self.rule_matrix_.T.tocsr()

        age_days = (pd.Timestamp(data.as_of) - data.customer_items.last_date).dt.days.to_numpy(float)
        recency = np.power(0.5, age_days / self.half_life_days)
        items = data.customer_items
        self.seeds_ = sp.csr_matrix((recency, (items.row, items.col)), shape=data.counts.shape)
        logger.info("event=rules_mined baskets=%d rules=%d capped_baskets=%d capped_lines=%d",
                    self.rules_.baskets, len(rules), self.rules_.capped_baskets, self.rules_.capped_lines)

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        return (self.seeds_[rows] @ self.rule_matrix_).toarray()

    def _reasons(self, rows: np.ndarray, cols: np.ndarray) -> tuple[str, np.ndarray]:
        # Contribution of each seed product i to (row, j): seed weight(row, i) x rule weight(i, j).
        contributions = self.seeds_[rows].multiply(self.rule_columns_[cols]).tocsr()
        best = np.full(len(rows), -1)
        has_any = np.diff(contributions.indptr) > 0
        if has_any.any():
            best[has_any] = np.asarray(contributions[has_any].argmax(axis=1)).ravel()
        return "bought_with", best


class ImplicitALS(_MatrixRecommender):
    """Collaborative filtering on implicit feedback with ``implicit.cpu.als.AlternatingLeastSquares``.

    The preference matrix holds, per customer and product, the number of distinct days the
    customer bought the product; implicit turns it into confidence ``1 + alpha * days``.

    Parameters
    ----------
    factors : int, default 64
        Latent factors per customer and product.
    regularization : float, default 0.05
        L2 penalty on the factors.
    alpha : float, default 1.0
        Confidence scale of a purchase day.
    iterations : int, default 15
        ALS sweeps.
    random_state : int, default 0
        Seed of the initial factors, so repeated fits agree.
    num_threads : int, default 2
        Threads for implicit's solver.
    """

    name = "als"
    positive_only = False

    def __init__(self, *, factors: int = 64, regularization: float = 0.05, alpha: float = 1.0, iterations: int = 15,
                 random_state: int = 0, num_threads: int = 2) -> None:
        check_range("factors", factors, low=1)
        check_range("regularization", regularization, low=0.0)
        check_range("alpha", alpha, low=0.0, low_inclusive=False)
        check_range("iterations", iterations, low=1)
        check_range("num_threads", num_threads, low=1)
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.random_state = random_state
        self.num_threads = num_threads

    def _fit(self, data: TrainingData) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        # implicit runs its own threads and warns unless BLAS runs single-threaded.
        with threadpool_limits(limits=1, user_api="blas"):
            self.model_ = AlternatingLeastSquares(
                factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                iterations=self.iterations, random_state=self.random_state, num_threads=self.num_threads)
            self.model_.fit(data.counts.astype(np.float32), show_progress=False)

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        return self.model_.user_factors[rows] @ self.model_.item_factors.T

    def _reasons(self, rows: np.ndarray, cols: np.ndarray) -> tuple[str, np.ndarray]:
        return "similar_customers", np.full(len(rows), -1)


class Popularity(_MatrixRecommender):
    """Baseline: distinct buyers in the popularity window, ties broken by orders, then product id."""

    name = "popularity"

    def _fit(self, data: TrainingData) -> None:
        products = data.products
        # A single score that sorts by buyers, then orders: the order share is below 1.
        self.scores_ = products.buyers.to_numpy(float) + products.orders.to_numpy(float) / (products.orders.max() + 1)

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.scores_, (len(rows), len(self.scores_)))

    def _reasons(self, rows: np.ndarray, cols: np.ndarray) -> tuple[str, np.ndarray]:
        return "popular", np.full(len(rows), -1)


# ---------------------------------------------------------------------------------------
# Methods that pick from short candidate lists
# ---------------------------------------------------------------------------------------


class Upsell(Recommender):
    """A higher-priced product of the same category as one the customer bought, the most popular first.

    A candidate ``j`` qualifies for a customer who bought a product ``i`` of the same category
    with a lower median unit price. Candidates are ranked by distinct buyers in the popularity
    window. The reason names the most recently bought qualifying ``i``. The method needs at least
    one product with both a category and a price.
    """

    name = "upsell"

    def is_applicable(self, data: TrainingData) -> bool:
        products = data.products
        return bool((products.category.notna() & products.unit_price.notna()).any())

    def _fit(self, data: TrainingData) -> None:
        products = data.products.assign(col=np.arange(len(data.products)))
        self.priced_ = products[products.category.notna() & products.unit_price.notna()]

    def _recommend(self, rows: np.ndarray, k: int) -> pd.DataFrame:
        data = self.data_
        columns = ["customer_id", "product_id", "score", "reason_id", "reason_product_id"]
        priced = self.priced_
        if priced.empty or len(rows) == 0:
            return pd.DataFrame(columns=columns)
        bought = data.customer_items[data.customer_items.row.isin(rows)]
        bought = bought.merge(priced[["product_id", "category", "unit_price"]], on="product_id")
        floor = bought.groupby(["customer_id", "category"], as_index=False).unit_price.min()
        candidates = priced[priced.in_catalogue][["product_id", "category", "unit_price", "buyers", "col"]]

        # Each (customer, category) pair joins every catalogue product of the category, so customers
        # are processed in blocks of about _UPSELL_JOIN_ROWS joined rows.
        join_rows = floor.category.map(candidates.category.value_counts()).fillna(0)
        per_customer = join_rows.groupby(floor.customer_id).sum()
        block_of = (per_customer.cumsum() // _UPSELL_JOIN_ROWS).rename("block")
        floor = floor.join(block_of, on="customer_id")
        parts = [self._offers(block_floor, candidates, bought, k) for _, block_floor in floor.groupby("block")]
        offers = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
        return offers[columns] if len(offers) else pd.DataFrame(columns=columns)

    def _offers(self, floor: pd.DataFrame, candidates: pd.DataFrame, bought: pd.DataFrame, k: int) -> pd.DataFrame:
        """Return the top-k offers of the customers in ``floor`` (their cheapest price per category)."""
        data = self.data_
        offers = floor.merge(candidates, on="category", suffixes=("_floor", ""))
        offers = offers[offers.unit_price > offers.unit_price_floor]
        offers = offers.assign(row=data.customers.get_indexer(offers.customer_id))
        if len(offers):  # SciPy returns a sparse matrix, not an array, for an empty index
            offers = offers[~np.asarray(data.blocked[offers.row.to_numpy(), offers.col.to_numpy()]).ravel()]
        offers = offers.sort_values(["customer_id", "buyers", "product_id"], ascending=[True, False, True])
        offers = offers.groupby("customer_id").head(k)

        # The reason: the most recently bought product of the category priced below the offer.
        stepped = offers[["customer_id", "product_id", "category", "unit_price"]].merge(
            bought[["customer_id", "category", "product_id", "unit_price", "last_date"]],
            on=["customer_id", "category"], suffixes=("", "_from"))
        stepped = stepped[stepped.unit_price_from < stepped.unit_price]
        stepped = stepped.sort_values(["last_date", "unit_price_from", "product_id_from"], ascending=False)
        reason = stepped.drop_duplicates(["customer_id", "product_id"])[["customer_id", "product_id", "product_id_from"]]
        offers = offers.merge(reason, on=["customer_id", "product_id"], how="left")
        return pd.DataFrame({
            "customer_id": offers.customer_id, "product_id": offers.product_id,
            "score": offers.buyers.astype(float), "reason_id": "step_up", "reason_product_id": offers.product_id_from,
        })


class Replenishment(Recommender):
    """The customer's replenishment items that are due, by the share of the product's buyers who rebuy it."""

    name = "replenishment"

    def is_applicable(self, data: TrainingData) -> bool:
        return not data.cycles.empty

    def _fit(self, data: TrainingData) -> None:
        due = data.due
        self.due_ = due[data.catalogue_mask[due.col.to_numpy(int)]] if len(due) else due

    def _recommend(self, rows: np.ndarray, k: int) -> pd.DataFrame:
        due = self.due_[self.due_.row.isin(rows)]
        return pd.DataFrame({
            "customer_id": due.customer_id, "product_id": due.product_id,
            "score": due.repeat_share.astype(float), "reason_id": "restock", "reason_product_id": due.product_id,
        })


METHODS: dict[str, type[Recommender]] = {
    method.name: method for method in (CoOccurrence, ImplicitALS, Popularity, Upsell, Replenishment)
}


def make_method(name: str) -> Recommender:
    """Return a new recommender of the method ``name`` with default settings."""
    if name not in METHODS:
        raise ConfigError(message_id="recommend.error.unknown_option", name="method", value=repr(name),
                          choices=", ".join(METHODS))
    return METHODS[name]()


def fill_up(items: pd.DataFrame, fallback: pd.DataFrame, k: int, *, method: str) -> pd.DataFrame:
    """Append ``fallback`` products to customers with fewer than ``k`` items and label each row's method.

    ``items`` and ``fallback`` have the columns :data:`ITEM_COLUMNS`. Fallback rows (popularity)
    keep their own score and reason, and come after the method's own products. ``fallback``
    needs ``2 k`` products per customer to fill every list, because up to ``k`` of them can
    already be among the method's products.
    """
    own = items.assign(method=method, _source=0)
    extra = fallback.assign(method=Popularity.name, _source=1)
    extra = extra.merge(own[["customer_id", "product_id"]], on=["customer_id", "product_id"], how="left",
                        indicator=True)
    extra = extra[extra["_merge"] == "left_only"].drop(columns="_merge")
    combined = pd.concat([own, extra], ignore_index=True)
    combined = combined.sort_values(["customer_id", "_source", "rank"], kind="stable")
    combined["rank"] = combined.groupby("customer_id").cumcount() + 1
    combined = combined[combined["rank"] <= k].drop(columns="_source")
    return combined.reset_index(drop=True)
