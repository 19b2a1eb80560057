"""Ranking metrics: hand-computed lists, edge cases, and agreement with scikit-learn and a plain loop."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from revopt.errors import ConfigError, InputError
from revopt.recommend.metrics import (
    average_precision_at_k,
    catalogue_coverage,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)

LOG2_3 = math.log2(3)


def test_hand_computed_list():
    # Hits at ranks 1 and 3 of 5; three relevant items, one of them (f) never recommended.
    recommended = ["a", "b", "c", "d", "e"]
    relevant = {"a", "c", "f"}

    assert precision_at_k(recommended, relevant, 5) == pytest.approx(2 / 5)
    assert recall_at_k(recommended, relevant, 5) == pytest.approx(2 / 3)
    # (P@1 + P@3) / min(5, 3) = (1 + 2/3) / 3
    assert average_precision_at_k(recommended, relevant, 5) == pytest.approx((1 + 2 / 3) / 3)
    # DCG = 1/log2(2) + 1/log2(4); IDCG = 1 + 1/log2(3) + 1/log2(4)
    assert ndcg_at_k(recommended, relevant, 5) == pytest.approx(1.5 / (1 + 1 / LOG2_3 + 0.5))


def test_cut_off_below_list_length():
    recommended = ["x", "a", "c"]
    relevant = {"a", "c"}

    assert precision_at_k(recommended, relevant, 2) == pytest.approx(1 / 2)
    assert recall_at_k(recommended, relevant, 2) == pytest.approx(1 / 2)
    # Only rank 2 counts: P@2 = 1/2, divided by min(2, 2).
    assert average_precision_at_k(recommended, relevant, 2) == pytest.approx(0.25)
    assert ndcg_at_k(recommended, relevant, 2) == pytest.approx((1 / LOG2_3) / (1 + 1 / LOG2_3))


def test_no_relevant_items_is_undefined():
    for metric in (precision_at_k, recall_at_k, average_precision_at_k, ndcg_at_k):
        assert math.isnan(metric(["a", "b"], set(), 2))


def test_fewer_recommendations_than_k():
    # One recommendation, a hit, with k = 5 and two relevant items.
    assert precision_at_k(["a"], {"a", "b"}, 5) == pytest.approx(1 / 5)
    assert recall_at_k(["a"], {"a", "b"}, 5) == pytest.approx(1 / 2)
    assert average_precision_at_k(["a"], {"a", "b"}, 5) == pytest.approx(1 / 2)
    assert ndcg_at_k(["a"], {"a", "b"}, 5) == pytest.approx(1 / (1 + 1 / LOG2_3))


def test_empty_recommendation_list():
    assert precision_at_k([], {"a"}, 3) == 0.0
    assert recall_at_k([], {"a"}, 3) == 0.0
    assert average_precision_at_k([], {"a"}, 3) == 0.0
    assert ndcg_at_k([], {"a"}, 3) == 0.0


def test_more_relevant_than_k_can_score_one():
    relevant = {f"item{i}" for i in range(12)}
    recommended = [f"item{i}" for i in range(10)]

    assert average_precision_at_k(recommended, relevant, 10) == pytest.approx(1.0)
    assert ndcg_at_k(recommended, relevant, 10) == pytest.approx(1.0)
    assert recall_at_k(recommended, relevant, 10) == pytest.approx(10 / 12)
    assert precision_at_k(recommended, relevant, 10) == pytest.approx(1.0)


def test_repeated_item_counts_once():
    assert precision_at_k(["a", "a", "b"], {"a"}, 3) == pytest.approx(1 / 3)
    assert recall_at_k(["a", "a", "b"], {"a"}, 3) == pytest.approx(1.0)


def test_k_below_one_rejected():
    with pytest.raises(ConfigError, match=r"k must be in \[1, inf\]"):
        recall_at_k(["a"], {"a"}, 0)


def test_coverage():
    assert catalogue_coverage(["a", "b", "b", "z"], ["a", "b", "c", "d"]) == pytest.approx(0.5)
    with pytest.raises(InputError, match="catalogue is empty"):
        catalogue_coverage(["a"], [])


def _long_tables(lists: dict[str, list[str]], relevant: dict[str, set[str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    recommendations = pd.DataFrame(
        [(customer, rank, item) for customer, items in lists.items() for rank, item in enumerate(items, start=1)],
        columns=["customer_id", "rank", "product_id"])
    truth = pd.DataFrame([(customer, item) for customer, items in relevant.items() for item in items],
                         columns=["customer_id", "product_id"])
    return recommendations, truth


def test_table_means_match_per_list_functions():
    rng = np.random.default_rng(7)
    items = [f"p{i}" for i in range(30)]
    lists, relevant = {}, {}
    for index in range(200):
        customer = f"c{index}"
        length = int(rng.integers(0, 12))
        lists[customer] = list(rng.choice(items, size=length, replace=False))
        relevant[customer] = set(rng.choice(items, size=int(rng.integers(0, 8)), replace=False))
    recommendations, truth = _long_tables(lists, relevant)

    result = ranking_metrics(recommendations, truth, k_values=(5, 10))

    scored = [c for c in lists if relevant[c]]
    assert result["customers"] == len(scored)
    for k in (5, 10):
        expected = {
            f"precision@{k}": np.mean([precision_at_k(lists[c], relevant[c], k) for c in scored]),
            f"recall@{k}": np.mean([recall_at_k(lists[c], relevant[c], k) for c in scored]),
            f"map@{k}": np.mean([average_precision_at_k(lists[c], relevant[c], k) for c in scored]),
            f"ndcg@{k}": np.mean([ndcg_at_k(lists[c], relevant[c], k) for c in scored]),
        }
        for name, value in expected.items():
            assert result[name] == pytest.approx(value, rel=1e-12), name


def test_table_customers_without_recommendations_score_zero():
    recommendations, truth = _long_tables({"a": ["x", "y"]}, {"a": {"x"}, "b": {"y"}})

    result = ranking_metrics(recommendations, truth, k_values=(2,))

    assert result["customers"] == 2
    assert result["recall@2"] == pytest.approx(0.5)
    assert result["precision@2"] == pytest.approx(0.25)


def test_ndcg_matches_scikit_learn():
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(3)
    n_items, k = 40, 10
    for _ in range(20):
        # Full lists of distinct items with strictly decreasing scores, so ties cannot differ.
        order = rng.permutation(n_items)[:k]
        relevant = set(rng.choice(n_items, size=int(rng.integers(1, 15)), replace=False))
        y_true = np.isin(np.arange(n_items), list(relevant)).astype(float)
        y_score = np.zeros(n_items)
        y_score[order] = np.arange(k, 0, -1)

        expected = ndcg_score(y_true[None, :], y_score[None, :], k=k)

        assert ndcg_at_k(list(order), relevant, k) == pytest.approx(expected, rel=1e-12)
