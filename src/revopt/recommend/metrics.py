"""Top-k ranking metrics for recommendation lists, with binary relevance.

For one customer, let ``rel_i`` be 1 when the item at rank ``i`` (1-based) is relevant, ``R`` the
number of relevant items and ``hits@k = sum(rel_i for i <= k)``:

* precision@k = hits@k / k. The denominator is always ``k``, so a list shorter than ``k`` is
  scored as if its empty slots were misses.
* recall@k = hits@k / R.
* AP@k = sum(precision@i * rel_i for i <= k) / min(k, R). MAP@k is its mean over customers.
  Dividing by ``min(k, R)`` instead of ``R`` lets a perfect list score 1 when ``R > k``.
* nDCG@k = DCG@k / IDCG@k with DCG@k = sum(rel_i / log2(i + 1) for i <= k) and IDCG@k the DCG of
  a list whose first ``min(k, R)`` items are all relevant.

An item that appears twice in one list counts as relevant only at its first rank. When a
customer has no relevant items (``R = 0``) every metric is undefined and is returned as NaN;
:func:`ranking_metrics` averages over the customers with at least one relevant item and reports
how many there were.

Examples
--------
>>> recall_at_k(["a", "b", "c"], {"b", "x"}, k=2)
0.5
>>> round(average_precision_at_k(["a", "b", "c"], {"a", "c"}, k=3), 4)
0.8333
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from revopt.errors import InputError, check_range

__all__ = [
    "average_precision_at_k",
    "catalogue_coverage",
    "ndcg_at_k",
    "precision_at_k",
    "ranking_metrics",
    "recall_at_k",
]


def precision_at_k(recommended: Sequence, relevant: Collection, k: int) -> float:
    """Return the share of the first ``k`` recommended items that are relevant (NaN when none are relevant)."""
    hits, n_relevant = _hits_of_list(recommended, relevant, k)
    return float(_precision(hits, n_relevant, k)[0])


def recall_at_k(recommended: Sequence, relevant: Collection, k: int) -> float:
    """Return the share of the relevant items found in the first ``k`` recommended items (NaN when none)."""
    hits, n_relevant = _hits_of_list(recommended, relevant, k)
    return float(_recall(hits, n_relevant)[0])


def average_precision_at_k(recommended: Sequence, relevant: Collection, k: int) -> float:
    """Return the average precision at ``k``, normalised by ``min(k, number relevant)`` (NaN when none)."""
    hits, n_relevant = _hits_of_list(recommended, relevant, k)
    return float(_average_precision(hits, n_relevant, k)[0])


def ndcg_at_k(recommended: Sequence, relevant: Collection, k: int) -> float:
    """Return the normalised discounted cumulative gain at ``k`` with binary gains and log2 discounts."""
    hits, n_relevant = _hits_of_list(recommended, relevant, k)
    return float(_ndcg(hits, n_relevant, k)[0])


def catalogue_coverage(recommended_items: Collection, catalogue: Collection) -> float:
    """Return the share of catalogue items recommended to at least one customer.

    Items outside ``catalogue`` are ignored. Raises :class:`InputError` for an empty catalogue,
    where the share is undefined.
    """
    catalogue = set(catalogue)
    if not catalogue:
        raise InputError(message_id="recommend.error.empty_catalogue")
    return len(set(recommended_items) & catalogue) / len(catalogue)


def ranking_metrics(
    recommendations: pd.DataFrame,
    relevant: pd.DataFrame,
    *,
    k_values: Sequence[int] = (5, 10),
) -> dict[str, float]:
    """Compute mean precision, recall, MAP and nDCG at each ``k`` over many customers.

    Parameters
    ----------
    recommendations : pandas.DataFrame
        Columns ``customer_id``, ``rank`` (1-based) and ``product_id``; one row per recommended item.
    relevant : pandas.DataFrame
        Columns ``customer_id`` and ``product_id``; the items each customer actually bought.
        Duplicate rows count once.
    k_values : sequence of int, default (5, 10)
        The cut-offs to report.

    Returns
    -------
    dict
        ``precision@k``, ``recall@k``, ``map@k`` and ``ndcg@k`` for every ``k``, averaged over the
        customers in ``relevant``, and ``customers``: how many there were. Customers that have
        recommendations but no relevant items are left out, because their metrics are undefined.
        Customers with relevant items but no recommendations score 0.
    """
    for k in k_values:
        check_range("k", k, low=1)
    max_k = max(k_values)
    relevant = relevant[["customer_id", "product_id"]].drop_duplicates()
    customers = pd.Index(relevant.customer_id.unique())
    n_relevant = relevant.groupby("customer_id").size().reindex(customers).to_numpy(float)

    ranked = recommendations[recommendations["rank"] <= max_k]
    ranked = ranked.sort_values(["customer_id", "rank"]).drop_duplicates(["customer_id", "product_id"])
    found = ranked.merge(relevant, on=["customer_id", "product_id"], how="inner")
    hits = np.zeros((len(customers), max_k), dtype=bool)
    hits[customers.get_indexer(found.customer_id), found["rank"].to_numpy(int) - 1] = True

    result: dict[str, float] = {"customers": float(len(customers))}
    for k in k_values:
        result[f"precision@{k}"] = float(np.mean(_precision(hits, n_relevant, k))) if len(customers) else np.nan
        result[f"recall@{k}"] = float(np.mean(_recall(hits[:, :k], n_relevant))) if len(customers) else np.nan
        result[f"map@{k}"] = float(np.mean(_average_precision(hits, n_relevant, k))) if len(customers) else np.nan
        result[f"ndcg@{k}"] = float(np.mean(_ndcg(hits, n_relevant, k))) if len(customers) else np.nan
    return result


# ---------------------------------------------------------------------------------------
# Kernels on a hit matrix: one row per customer, one column per rank, True where relevant.
# ---------------------------------------------------------------------------------------


def _hits_of_list(recommended: Sequence, relevant: Collection, k: int) -> tuple[np.ndarray, np.ndarray]:
    check_range("k", k, low=1)
    relevant = set(relevant)
    hits = np.zeros((1, k), dtype=bool)
    seen = set()
    for rank, item in enumerate(list(recommended)[:k]):
        hits[0, rank] = item in relevant and item not in seen
        seen.add(item)
    return hits, np.array([len(relevant)], dtype=float)


def _undefined_where_no_relevant(values: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    return np.where(n_relevant > 0, values, np.nan)


def _precision(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    return _undefined_where_no_relevant(hits[:, :k].sum(axis=1) / k, n_relevant)


def _recall(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return _undefined_where_no_relevant(hits.sum(axis=1) / n_relevant, n_relevant)


def _average_precision(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    top = hits[:, :k]
    ranks = np.arange(1, top.shape[1] + 1)
    precision_at_rank = np.cumsum(top, axis=1) / ranks
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (precision_at_rank * top).sum(axis=1) / np.minimum(k, n_relevant)
    return _undefined_where_no_relevant(value, n_relevant)


def _ndcg(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    top = hits[:, :k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (top * discounts[: top.shape[1]]).sum(axis=1)
    ideal_cumulative = np.concatenate([[0.0], np.cumsum(discounts)])
    ideal = ideal_cumulative[np.minimum(k, n_relevant).astype(int)]
    with np.errstate(divide="ignore", invalid="ignore"):
        return _undefined_where_no_relevant(dcg / ideal, n_relevant)
