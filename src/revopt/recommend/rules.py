"""Pairwise association rules from basket co-occurrence, counted in the engine.

For products ``a`` and ``b``, with ``N`` baskets, ``n_a`` baskets containing ``a`` and ``n_ab``
baskets containing both, the standard measures are:

* support(a -> b) = n_ab / N
* confidence(a -> b) = n_ab / n_a
* lift(a -> b) = confidence(a -> b) / (n_b / N) = n_ab N / (n_a n_b)

Pair counts come from a self-join of the distinct (basket, product) rows on the basket, keeping
``a < b``, grouped by pair. The join never builds a product-by-product matrix. Memory grows with
the number of distinct pairs that occur, and the engine streams the join into the aggregate.
Two prunings keep the join small without changing any rule that is returned. A product in fewer
than ``min_pair_count`` baskets cannot be in a pair that reaches the minimum, and a basket of
one product has no pairs.

Baskets with more than ``max_basket_items`` distinct products are left out entirely (from ``N``,
the product counts and the pair counts), so every statistic stays exact for the baskets that
remain. :class:`AssociationRules` reports how many baskets and basket lines were left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ibis
import pandas as pd

from revopt.errors import InputError, check_range

__all__ = ["RULE_COLUMNS", "AssociationRules", "association_rules"]

RULE_COLUMNS = ("antecedent", "consequent", "pair_count", "antecedent_count", "consequent_count",
                "support", "confidence", "lift")


@dataclass(frozen=True)
class AssociationRules:
    """Rules ``antecedent -> consequent`` between single products, both directions of every pair.

    Attributes
    ----------
    table : pandas.DataFrame
        Columns :data:`RULE_COLUMNS`, sorted by antecedent and descending confidence.
    baskets : int
        Baskets counted (``N``), single-product baskets included.
    capped_baskets : int
        Baskets left out because they had more than ``max_basket_items`` products.
    capped_lines : int
        Distinct (basket, product) rows in those baskets.
    min_pair_count : int
        The minimum number of shared baskets a returned pair has.
    """

    table: pd.DataFrame
    baskets: int
    capped_baskets: int
    capped_lines: int
    min_pair_count: int


def association_rules(
    baskets: ibis.Table,
    *,
    min_pair_count: int = 5,
    min_support: float | None = None,
    max_basket_items: int = 100,
) -> AssociationRules:
    """Count product pairs per basket and return single-product rules with support, confidence and lift.

    Parameters
    ----------
    baskets : ibis.Table
        Columns ``basket_id`` and ``product_id``; one row per product in a basket (repeats allowed).
    min_pair_count : int, default 5
        Minimum number of baskets that contain both products of a pair.
    min_support : float, optional
        Smallest pair support, in (0, 1]. When given, pairs need at least ``ceil(min_support * N)``
        baskets as well as ``min_pair_count``.
    max_basket_items : int, default 100
        Baskets with more distinct products are left out (see the module notes).

    Returns
    -------
    AssociationRules

    Raises
    ------
    InputError
        If ``baskets`` lacks the columns ``basket_id`` or ``product_id``.
    """
    check_range("min_pair_count", min_pair_count, low=1)
    check_range("max_basket_items", max_basket_items, low=2)
    if min_support is not None:
        check_range("min_support", min_support, low=0.0, high=1.0, low_inclusive=False)
    missing = [name for name in ("basket_id", "product_id") if name not in baskets.columns]
    if missing:
        raise InputError(message_id="recommend.error.missing_columns", missing=", ".join(missing),
                         found=", ".join(baskets.columns))

    # Distinct basket lines, and the size of every basket.
    items = baskets.filter(baskets.basket_id.notnull() & baskets.product_id.notnull())
    items = items.select("basket_id", "product_id").distinct()
    sizes = items.group_by("basket_id").aggregate(size=items.count())
    size_counts = sizes.aggregate(
        baskets=(sizes.size <= max_basket_items).sum(),
        capped_baskets=(sizes.size > max_basket_items).sum(),
        capped_lines=sizes.size.sum(where=sizes.size > max_basket_items),
    ).to_pandas().iloc[0]
    n_baskets = int(size_counts.baskets or 0)
    threshold = min_pair_count
    if min_support is not None:
        # The small tolerance keeps a pair whose support equals min_support despite rounding in the product.
        threshold = max(threshold, math.ceil(min_support * n_baskets - 1e-9))

    # Product counts over the baskets kept, then the lines that can still form a frequent pair.
    counted = items.semi_join(sizes.filter(sizes.size <= max_basket_items), "basket_id")
    product_counts = counted.group_by("product_id").aggregate(n=counted.count())
    frequent = product_counts.filter(product_counts.n >= threshold)
    pairable = counted.semi_join(frequent, "product_id")
    pairable = pairable.semi_join(sizes.filter((sizes.size >= 2) & (sizes.size <= max_basket_items)), "basket_id")

    # Self-join on the basket; each unordered pair once, as (a, b) with a < b.
    left = pairable.rename(a="product_id")
    right = pairable.rename(b="product_id")
    pairs = left.join(right, "basket_id").filter(lambda joined: joined.a < joined.b)
    pair_counts = pairs.group_by(["a", "b"]).aggregate(n_ab=pairs.count())
    pair_counts = pair_counts.filter(pair_counts.n_ab >= threshold)

    # Both directions of every pair, with the product counts, built on the compact pair table.
    pair_table = pair_counts.to_pandas()
    counts = frequent.to_pandas().set_index("product_id").n
    forward = pd.DataFrame({"antecedent": pair_table.a, "consequent": pair_table.b, "pair_count": pair_table.n_ab})
    backward = pd.DataFrame({"antecedent": pair_table.b, "consequent": pair_table.a, "pair_count": pair_table.n_ab})
    table = pd.concat([forward, backward], ignore_index=True)
    table["antecedent_count"] = counts.reindex(table.antecedent).to_numpy()
    table["consequent_count"] = counts.reindex(table.consequent).to_numpy()

    table = _with_measures(table, n_baskets)
    return AssociationRules(table=table, baskets=n_baskets, capped_baskets=int(size_counts.capped_baskets or 0),
                            capped_lines=int(size_counts.capped_lines or 0), min_pair_count=threshold)


def _with_measures(table: pd.DataFrame, n_baskets: int) -> pd.DataFrame:
    """Add support, confidence and lift to pair counts, computed in float64 from the integer counts."""
    n_ab = table.pair_count.astype("float64")
    n_a = table.antecedent_count.astype("float64")
    n_b = table.consequent_count.astype("float64")
    table = table.assign(
        pair_count=table.pair_count.astype("int64"),
        antecedent_count=table.antecedent_count.astype("int64"),
        consequent_count=table.consequent_count.astype("int64"),
        support=n_ab / n_baskets,
        confidence=n_ab / n_a,
        lift=n_ab * n_baskets / (n_a * n_b),
    )
    table = table.sort_values(["antecedent", "confidence", "consequent"], ascending=[True, False, True])
    return table.reset_index(drop=True)[list(RULE_COLUMNS)]
