"""Tests for RFM scores, named segments and value tiers (revopt.segments).

Expected scores are worked out by hand from the binning rules in ``score_rfm``'s Notes;
each case's comment shows the steps.
"""

from __future__ import annotations

import doctest
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import revopt.segments
from revopt.errors import ConfigError, InputError
from revopt.i18n import LANGUAGES
from revopt.segments import (
    SEGMENT_CODES,
    SEGMENT_RULES,
    TIER_CODES,
    RFMScores,
    SegmentRule,
    assign_segments,
    assign_value_tiers,
    label,
    score_rfm,
    segment_table,
)

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CDNOW_MASTER = DATASETS / "cdnow" / "CDNOW_master.txt"
CDNOW_ANALYSIS_DATE = pd.Timestamp("1998-06-30")


def _scores_by_dimension(recency, frequency, monetary, **options):
    scores = score_rfm(np.asarray(recency), np.asarray(frequency), np.asarray(monetary), **options)
    return scores.r_score.tolist(), scores.f_score.tolist(), scores.m_score.tolist(), scores


def _f_scores(frequency, **options):
    """Score ``frequency`` alone; recency and monetary are filled with distinct values."""
    n = len(frequency)
    return score_rfm(np.arange(n), np.asarray(frequency), np.arange(n, dtype=float), **options)


# ---------------------------------------------------------------------------------------
# score_rfm: hand-computed toy cases
# ---------------------------------------------------------------------------------------


def test_score_rfm_distinct_values_quintiles():
    # Ten distinct values, five levels: no value has 1/5 of the customers, so the cuts go
    # at 2, 4, 6 and 8 customers. Recency is reversed: the two most recent score 5.
    r, f, m, scores = _scores_by_dimension(np.arange(10), np.arange(1, 11), np.arange(10.0) * 3)
    assert r == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert f == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert m == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert scores.r_score.dtype == np.int8
    assert scores.f_score.dtype == np.int8
    assert scores.m_score.dtype == np.int8


def test_score_rfm_distinct_values_edges():
    scores = score_rfm(np.arange(10), np.arange(1, 11), np.arange(10.0) * 3)
    recency = scores.edges["recency"]
    assert recency.scores == (1, 2, 3, 4, 5)
    assert recency.lower == (8.0, 6.0, 4.0, 2.0, 0.0)
    assert recency.upper == (9.0, 7.0, 5.0, 3.0, 1.0)
    assert recency.counts == (2, 2, 2, 2, 2)
    assert recency.missing_score is None
    assert scores.edges["frequency"].lower == (1.0, 3.0, 5.0, 7.0, 9.0)
    assert scores.edges["monetary"].upper == (3.0, 9.0, 15.0, 21.0, 27.0)


def test_score_rfm_ties_across_cut_share_score():
    # Monetary 5, 10 x3, 20 ... 70 (10 customers). Plain quintiles would cut through the
    # three 10s. 10 has 3 >= 10/5 customers, so it gets its own bin. The 4 other levels
    # go 1 below (round(4 * 1/7) = 1) and 3 above. The 6 customers above split at 2 and 4.
    monetary = [5, 10, 10, 10, 20, 30, 40, 50, 60, 70]
    scores = score_rfm(np.arange(10), np.ones(10), np.array(monetary, dtype=float))
    assert scores.m_score.tolist() == [1, 2, 2, 2, 3, 3, 4, 4, 5, 5]
    assert scores.edges["monetary"].counts == (1, 3, 2, 2, 2)


def test_score_rfm_ties_repeated_dominant_values():
    # Frequency 1 x3, 2 x2, 3, 4, 5, 6, 7 (10 customers).
    # 1 has 3 >= 10/5: own bin, score 1. Left: 7 customers, 4 levels.
    # 2 has 2 >= 7/4: own bin, score 2. Left: 3..7, 5 customers, 3 levels.
    # No dominant value there; cuts nearest to 5/3 and 10/3 customers fall at 2 and 3.
    scores = _f_scores([1, 1, 1, 2, 2, 3, 4, 5, 6, 7])
    assert scores.f_score.tolist() == [1, 1, 1, 2, 2, 3, 3, 4, 5, 5]
    assert scores.edges["frequency"].lower == (1.0, 2.0, 3.0, 5.0, 6.0)
    assert scores.edges["frequency"].upper == (1.0, 2.0, 4.0, 5.0, 7.0)


def test_score_rfm_dominant_one_time_buyers():
    # 14 of 20 customers (70%) bought once. 1 gets score 1. The 6 repeat buyers get levels
    # 2-5: 2 has 2 >= 6/4 and gets score 2; 3, 4, 5, 6 are cut nearest to 4/3 and 8/3
    # customers, at 1 and 3.
    frequency = [1] * 14 + [2, 2, 3, 4, 5, 6]
    scores = _f_scores(frequency)
    assert scores.f_score.tolist() == [1] * 14 + [2, 2, 3, 4, 4, 5]


def test_score_rfm_dominant_value_spreads_others():
    # 70 one-time buyers and 30 repeat buyers with frequencies 2..31. The repeat buyers
    # split into 4 levels at 7.5, 15 and 22.5 customers. The 7.5 tie goes to the lower
    # boundary (7), and 22.5 to 22.
    frequency = [1] * 70 + list(range(2, 32))
    bins = _f_scores(frequency).edges["frequency"]
    assert bins.scores == (1, 2, 3, 4, 5)
    assert bins.counts == (70, 7, 8, 7, 8)
    assert bins.lower == (1.0, 2.0, 9.0, 17.0, 24.0)
    assert bins.upper == (1.0, 8.0, 16.0, 23.0, 31.0)


def test_score_rfm_dominant_best_value_scores_top():
    # 70 customers bought on the analysis date (recency 0), 30 on distinct earlier days.
    # Recency 0 keeps score 5. The 30 others fill scores 1-4 with 7, 8, 7, 8 customers.
    recency = [0] * 70 + list(range(1, 31))
    scores = score_rfm(np.array(recency), np.arange(100), np.arange(100.0))
    bins = scores.edges["recency"]
    assert scores.r_score[:70].tolist() == [5] * 70
    assert bins.counts == (7, 8, 7, 8, 70)
    assert bins.lower == (24.0, 16.0, 9.0, 1.0, 0.0)
    assert bins.upper == (30.0, 23.0, 15.0, 8.0, 0.0)


def test_score_rfm_dominant_middle_one_level_left():
    # Two levels, values 1, 2 x3, 3, 4. 2 has 3 >= 6/2 customers. Only one level is left
    # for both sides, so the smaller side (the single 1) joins the bin of 2.
    scores = _f_scores([1, 2, 2, 2, 3, 4], bins=2)
    assert scores.f_score.tolist() == [1, 1, 1, 1, 2, 2]


def test_score_rfm_all_identical_values():
    # One bin: it gets the middle score, 3 of 5.
    r, f, m, scores = _scores_by_dimension([7] * 6, [2] * 6, [19.9] * 6)
    assert r == [3] * 6
    assert f == [3] * 6
    assert m == [3] * 6
    assert scores.edges["recency"].scores == (3,)
    assert scores.edges["recency"].counts == (6,)
    assert scores.edges["monetary"].lower == (19.9,)
    assert scores.edges["monetary"].upper == (19.9,)


@pytest.mark.parametrize(
    ("frequency", "expected"),
    [
        ([1, 1, 1, 2], [1, 1, 1, 5]),
        ([1, 2, 3, 1, 3], [1, 3, 5, 1, 5]),
        ([4, 1, 2, 3], [5, 1, 2, 4]),
    ],
    ids=["two-values", "three-values", "four-values"],
)
def test_score_rfm_fewer_distinct_than_bins(frequency, expected):
    # k bins spread over 1..5: bin i scores 1 + round(4 * i / (k - 1)), halves up.
    scores = _f_scores(frequency)
    assert scores.f_score.tolist() == expected
    assert scores.edges["frequency"].scores == tuple(sorted(set(expected)))


def test_score_rfm_fewer_distinct_other_scale():
    # Four levels, three bins: 1 + round(3 * i / 2) for i = 0, 1, 2 gives 1, 3 (from 2.5), 4.
    scores = _f_scores([1, 2, 3], bins=4)
    assert scores.f_score.tolist() == [1, 3, 4]


def test_score_rfm_nan_monetary_own_bin():
    # Two of ten customers have no repeat spend. NaN ranks lowest and has 2 >= 10/5
    # customers, so it gets score 1 alone. The 8 others split at 2, 4 and 6 customers.
    monetary = [np.nan, 5, np.nan, 10, 20, 30, 40, 50, 60, 70]
    scores = score_rfm(np.arange(10), np.ones(10), np.array(monetary))
    bins = scores.edges["monetary"]
    assert scores.m_score.tolist() == [1, 2, 1, 2, 3, 3, 4, 4, 5, 5]
    assert bins.missing_score == 1
    assert np.isnan(bins.lower[0])
    assert np.isnan(bins.upper[0])
    assert bins.counts == (2, 2, 2, 2, 2)
    assert bins.to_dict()["bins"][0] == {"score": 1, "lower": None, "upper": None, "customers": 2}


def test_score_rfm_nan_monetary_shares_lowest_bin():
    # One NaN among ten: no value is dominant, so NaN and the lowest spend (1) form score 1.
    monetary = np.array([3, 1, np.nan, 2, 4, 5, 6, 7, 8, 9], dtype=float)
    scores = score_rfm(np.arange(10), np.ones(10), monetary)
    bins = scores.edges["monetary"]
    assert scores.m_score.tolist() == [2, 1, 1, 2, 3, 3, 4, 4, 5, 5]
    assert bins.missing_score == 1
    assert bins.lower[0] == 1.0
    assert bins.upper[0] == 1.0
    assert bins.counts[0] == 2


def test_score_rfm_all_monetary_missing():
    scores = score_rfm(np.arange(3), np.ones(3), np.full(3, np.nan))
    assert scores.m_score.tolist() == [3, 3, 3]
    assert scores.edges["monetary"].missing_score == 3


def test_score_rfm_empty_input():
    scores = score_rfm(np.array([]), np.array([]), np.array([]))
    assert scores.r_score.shape == (0,)
    assert scores.edges["frequency"].counts == ()
    assert len(assign_segments(scores)) == 0


def test_score_rfm_accepts_series_and_lists():
    frame = pd.DataFrame(
        {"recency": [5, 1, 3], "frequency": pd.array([1, 2, 3], dtype="Int64"), "monetary": [1.0, 2.0, np.nan]}
    )
    from_frame = score_rfm(frame["recency"], frame["frequency"], frame["monetary"])
    from_lists = score_rfm([5, 1, 3], [1, 2, 3], [1.0, 2.0, float("nan")])
    assert from_frame.r_score.tolist() == [1, 5, 3]
    assert from_frame.r_score.tolist() == from_lists.r_score.tolist()
    assert from_frame.f_score.tolist() == from_lists.f_score.tolist()
    assert from_frame.m_score.tolist() == [3, 5, 1]


def test_edges_to_dict_json_ready():
    scores = score_rfm([1, 2], [1, 2], [10.0, 20.0])
    data = scores.edges_to_dict()
    assert set(data) == {"recency", "frequency", "monetary"}
    assert data["frequency"]["bins"] == [
        {"score": 1, "lower": 1.0, "upper": 1.0, "customers": 1},
        {"score": 5, "lower": 2.0, "upper": 2.0, "customers": 1},
    ]


# ---------------------------------------------------------------------------------------
# score_rfm: invariants on seeded random data, and an independent computation
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("bins", [2, 5, 10])
def test_score_rfm_invariants_random(seed, bins):
    rng = np.random.default_rng(seed)
    n = 2_000
    recency = rng.integers(0, 400, n)
    frequency = np.where(rng.random(n) < 0.7, 1, rng.geometric(0.3, n) + 1)
    monetary = np.round(rng.lognormal(3.0, 1.0, n), 0)
    monetary[rng.random(n) < 0.05] = np.nan
    scores = score_rfm(recency, frequency, monetary, bins=bins)

    for values, score, bins_used, sign in (
        (recency, scores.r_score, scores.edges["recency"], -1),
        (frequency, scores.f_score, scores.edges["frequency"], 1),
        (np.where(np.isnan(monetary), -np.inf, monetary), scores.m_score, scores.edges["monetary"], 1),
    ):
        frame = pd.DataFrame({"value": values, "score": score})
        assert (frame.groupby("value")["score"].nunique() == 1).all()
        ordered = frame.assign(key=sign * frame["value"]).sort_values("key", kind="stable")
        assert (np.diff(ordered["score"].to_numpy()) >= 0).all()
        assert sum(bins_used.counts) == n
        assert min(bins_used.counts) > 0
        assert len(bins_used.scores) == min(bins, len(np.unique(values)))
        assert 1 <= score.min()
        assert score.max() <= bins


@pytest.mark.parametrize("bins", [2, 3, 5, 7])
def test_score_rfm_skewed_ties_invariants(bins):
    # Small samples from few values with skewed weights, so that dominant values turn up
    # at either end and in the middle, often several in one sample.
    rng = np.random.default_rng(bins)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        support = np.sort(rng.choice(100, size=int(rng.integers(1, 12)), replace=False))
        weights = rng.dirichlet(np.full(len(support), 0.3))
        values = rng.choice(support, size=n, p=weights).astype(float)
        score = _f_scores(values, bins=bins).f_score

        distinct, inverse = np.unique(values, return_inverse=True)
        lowest = np.full(len(distinct), bins + 1)
        highest = np.zeros(len(distinct), dtype=int)
        np.minimum.at(lowest, inverse, score)
        np.maximum.at(highest, inverse, score)
        assert (lowest == highest).all()
        assert (np.diff(lowest) >= 0).all()
        assert len(np.unique(lowest)) == min(bins, len(distinct))
        if len(distinct) >= bins:
            assert set(score.tolist()) == set(range(1, bins + 1))


@pytest.mark.parametrize("bins", [2, 3, 5, 10])
def test_score_rfm_matches_rank_quantiles_without_ties(bins):
    # With distinct values and n divisible by bins, the bins are plain equal-frequency
    # quantiles: score = 1 + rank * bins // n, with rank from argsort.
    rng = np.random.default_rng(42)
    n = 30 * bins
    monetary = rng.permutation(n).astype(float) + 0.5
    scores = score_rfm(np.arange(n), np.arange(n), monetary, bins=bins)
    rank = np.empty(n, dtype=int)
    rank[np.argsort(monetary)] = np.arange(n)
    assert scores.m_score.tolist() == (1 + rank * bins // n).tolist()


# ---------------------------------------------------------------------------------------
# score_rfm: bad input
# ---------------------------------------------------------------------------------------


def test_score_rfm_rejects_unequal_lengths():
    with pytest.raises(InputError, match="equal lengths; got recency_days=3, frequency=2, monetary=3"):
        score_rfm([1, 2, 3], [1, 2], [1.0, 2.0, 3.0])


def test_score_rfm_rejects_missing_recency():
    with pytest.raises(InputError, match=r"recency_days is missing for 1 customer \(first positions: 1\)"):
        score_rfm([1, np.nan, 3], [1, 2, 3], [1.0, 2.0, 3.0])


def test_score_rfm_names_series_labels():
    frequency = pd.Series([1, -2, -1], index=["c1", "c2", "c3"])
    with pytest.raises(InputError, match=r"negative for 2 customers \(first index labels: c2, c3\)"):
        score_rfm([1, 2, 3], frequency, [1.0, 2.0, 3.0])


def test_score_rfm_rejects_negative_recency():
    with pytest.raises(InputError, match="after the analysis date"):
        score_rfm([-1, 2], [1, 2], [1.0, 2.0])


def test_score_rfm_rejects_infinite_monetary():
    with pytest.raises(InputError, match="monetary is infinite for 1 customer"):
        score_rfm([1, 2], [1, 2], [np.inf, 2.0])


def test_score_rfm_rejects_text():
    with pytest.raises(InputError, match="frequency must contain numbers only"):
        score_rfm([1, 2], ["one", "two"], [1.0, 2.0])


def test_score_rfm_rejects_two_dimensional():
    with pytest.raises(InputError, match=r"recency_days must be one-dimensional.*\(2, 2\)"):
        score_rfm(np.ones((2, 2)), [1, 2], [1.0, 2.0])


@pytest.mark.parametrize("bins", [1, 128, 2.5, True], ids=["one", "too-many", "float", "bool"])
def test_score_rfm_rejects_bad_bins(bins):
    with pytest.raises(ConfigError, match="bins must be"):
        score_rfm([1, 2], [1, 2], [1.0, 2.0], bins=bins)


# ---------------------------------------------------------------------------------------
# Named segments
# ---------------------------------------------------------------------------------------


def _expected_segment(r: int, f: int, m: int) -> str:
    """The segment rules written out as plain branches, as a second implementation."""
    if r >= 4 and f >= 4 and m >= 4:
        return "champions"
    if r >= 3 and f >= 4:
        return "loyal"
    if r >= 4 and f == 1:
        return "new"
    if r >= 4:
        return "potential_loyalist"
    if r == 3:
        return "needs_attention"
    if f >= 3 or m >= 4:
        return "at_risk"
    if r == 2:
        return "hibernating"
    return "lost"


def _grid_scores() -> tuple[RFMScores, list[tuple[int, int, int]]]:
    combos = list(itertools.product(range(1, 6), repeat=3))
    r, f, m = (np.array(column, dtype=np.int8) for column in zip(*combos))
    return RFMScores(r_score=r, f_score=f, m_score=m, edges={}, bins=5), combos


def test_segments_cover_all_score_combinations():
    scores, combos = _grid_scores()
    segments = assign_segments(scores)
    assert len(combos) == 125
    assert len(segments) == 125
    assert not pd.isna(segments).any()
    for (r, f, m), code in zip(combos, segments):
        matching = [rule.code for rule in SEGMENT_RULES if rule.matches(np.array([r]), np.array([f]), np.array([m]))[0]]
        assert matching, (r, f, m)
        assert code == matching[0], (r, f, m)
        assert code == _expected_segment(r, f, m), (r, f, m)


def test_segments_catch_all_region():
    # The last rule has no condition. With five levels it catches R = 1, F <= 2, M <= 3.
    scores, combos = _grid_scores()
    segments = assign_segments(scores)
    lost = {combo for combo, code in zip(combos, segments) if code == "lost"}
    assert lost == {(1, f, m) for f in (1, 2) for m in (1, 2, 3)}
    assert SEGMENT_RULES[-1] == SegmentRule("lost")


def test_segments_every_rule_reachable():
    scores, combos = _grid_scores()
    r, f, m = scores.r_score, scores.f_score, scores.m_score
    taken = np.zeros(len(combos), dtype=bool)
    for rule in SEGMENT_RULES:
        first_match = rule.matches(r, f, m) & ~taken
        assert first_match.any(), rule
        taken |= first_match
    assert set(assign_segments(scores)) == set(SEGMENT_CODES)


@pytest.mark.parametrize(
    ("r", "f", "m", "code"),
    [
        (5, 5, 5, "champions"),
        (4, 4, 4, "champions"),
        (5, 5, 3, "loyal"),
        (3, 5, 5, "loyal"),
        (5, 1, 5, "new"),
        (4, 1, 1, "new"),
        (5, 3, 2, "potential_loyalist"),
        (3, 1, 1, "needs_attention"),
        (2, 5, 5, "at_risk"),
        (1, 1, 5, "at_risk"),
        (2, 2, 3, "hibernating"),
        (1, 2, 3, "lost"),
    ],
)
def test_segments_hand_labelled(r, f, m, code):
    scores = RFMScores(np.array([r]), np.array([f]), np.array([m]), edges={}, bins=5)
    assert list(assign_segments(scores)) == [code]


def test_assign_segments_categories_stable():
    scores, _ = _grid_scores()
    segments = assign_segments(scores)
    assert list(segments.categories) == list(SEGMENT_CODES)
    assert SEGMENT_CODES == (
        "champions",
        "loyal",
        "new",
        "potential_loyalist",
        "needs_attention",
        "at_risk",
        "hibernating",
        "lost",
    )


def test_assign_segments_rejects_other_scale():
    scores = score_rfm([1, 2, 3], [1, 2, 3], [1.0, 2.0, 3.0], bins=4)
    with pytest.raises(ConfigError, match="need RFM scores on 5 levels; got bins=4"):
        assign_segments(scores)


def test_assign_segments_rejects_score_outside_scale():
    scores = RFMScores(np.array([1, 6]), np.array([1, 1]), np.array([1, 1]), edges={}, bins=5)
    with pytest.raises(InputError, match=r"r_score is outside 1 to 5 for 1 customer \(first positions: 1\)"):
        assign_segments(scores)


def test_segment_rule_rejects_bad_range():
    with pytest.raises(ConfigError, match=r"frequency range must satisfy .* got \(4, 2\)"):
        SegmentRule("broken", frequency=(4, 2))


def test_segment_table_english():
    table = segment_table("en")
    assert [row["code"] for row in table] == list(SEGMENT_CODES)
    rules = {row["code"]: row["rule"] for row in table}
    assert rules["champions"] == "R ≥ 4, F ≥ 4, M ≥ 4"
    assert rules["potential_loyalist"] == "R ≥ 4, 2 ≤ F ≤ 3"
    assert rules["at_risk"] == "R ≤ 2, F ≥ 3; or R ≤ 2, M ≥ 4"
    assert rules["lost"] == "all other customers"
    assert table[0]["label"] == "Champions"


def test_segment_table_chinese():
    table = segment_table("zh-CN")
    rules = {row["code"]: row["rule"] for row in table}
    labels = {row["code"]: row["label"] for row in table}
    assert rules["champions"] == "R ≥ 4，F ≥ 4，M ≥ 4"
    assert rules["at_risk"] == "R ≤ 2，F ≥ 3；或 R ≤ 2，M ≥ 4"
    assert rules["lost"] == "其余所有客户"
    assert labels["at_risk"] == "重要挽留客户"


def test_segment_table_rejects_unknown_language():
    with pytest.raises(ConfigError, match="not supported"):
        segment_table("fr")


# ---------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_labels_exist_for_every_code(language):
    codes = SEGMENT_CODES + TIER_CODES
    labels = [label(code, language) for code in codes]
    assert all(text.strip() for text in labels)
    assert len(set(labels)) == len(codes)


def test_labels_differ_between_languages():
    for code in SEGMENT_CODES + TIER_CODES:
        assert label(code, "en") != label(code, "zh-CN"), code


def test_chinese_segment_labels():
    expected = {
        "champions": "重要价值客户",
        "loyal": "忠诚客户",
        "potential_loyalist": "潜力客户",
        "new": "新客户",
        "at_risk": "重要挽留客户",
        "needs_attention": "需要关注",
        "hibernating": "沉睡客户",
        "lost": "流失客户",
        "none": "无价值",
    }
    for code, text in expected.items():
        assert label(code, "zh-CN") == text, code


def test_label_rejects_unknown_code():
    with pytest.raises(ConfigError, match="unknown segment or tier code 'vip'; segment codes: champions"):
        label("vip", "en")


# ---------------------------------------------------------------------------------------
# Value tiers
# ---------------------------------------------------------------------------------------


def test_value_tiers_default_shares():
    # 20 customers with CLV 1..20 plus two with zero: the top 2 are high (10%), the next
    # 8 medium (40%), the other 10 low.
    clv = np.concatenate((np.arange(20, 0, -1), [0, 0])).astype(float)
    tiers = assign_value_tiers(clv)
    assert list(tiers) == ["high"] * 2 + ["medium"] * 8 + ["low"] * 10 + ["none"] * 2
    assert list(tiers.categories) == list(TIER_CODES)


def test_value_tiers_ties_go_up():
    # Both 10s have no higher CLV, so both are high. The 6s have 4 customers above them,
    # fewer than 5 = half of 10, so both are medium.
    clv = np.array([10, 10, 8, 7, 6, 6, 4, 3, 2, 1], dtype=float)
    assert list(assign_value_tiers(clv)) == ["high"] * 2 + ["medium"] * 4 + ["low"] * 4


def test_value_tiers_negative_and_zero_are_none():
    # Two customers have positive CLV. 3 has no one above it (0 < 0.1 * 2): high.
    # 1 has one above it, which is not fewer than 0.5 * 2: low.
    tiers = assign_value_tiers([-5.0, 0.0, 3.0, 1.0])
    assert list(tiers) == ["none", "none", "high", "low"]


def test_value_tiers_custom_shares():
    clv = np.arange(1, 11, dtype=float)
    tiers = assign_value_tiers(clv, high_share=0.3, medium_share=0.0)
    assert list(tiers) == ["low"] * 7 + ["high"] * 3


def test_value_tiers_shares_exact_without_ties():
    rng = np.random.default_rng(7)
    clv = rng.permutation(1_000) + 1.0
    counts = pd.Series(assign_value_tiers(clv)).value_counts()
    assert counts["high"] == 100
    assert counts["medium"] == 400
    assert counts["low"] == 500


def test_value_tiers_all_zero_and_empty():
    assert list(assign_value_tiers(np.zeros(3))) == ["none"] * 3
    assert len(assign_value_tiers(np.array([]))) == 0


def test_value_tiers_reject_missing():
    with pytest.raises(InputError, match=r"clv is missing for 1 customer \(first index labels: b\)"):
        assign_value_tiers(pd.Series([1.0, np.nan], index=["a", "b"]))


def test_value_tiers_reject_infinite():
    with pytest.raises(InputError, match="clv is infinite"):
        assign_value_tiers([1.0, np.inf])


@pytest.mark.parametrize(
    ("high_share", "medium_share", "name"),
    [(0.0, 0.4, "high_share"), (1.5, 0.0, "high_share"), (0.2, 0.9, "medium_share"), (0.1, -0.1, "medium_share")],
)
def test_value_tiers_reject_bad_shares(high_share, medium_share, name):
    with pytest.raises(ConfigError, match=f"^{name} must be in"):
        assign_value_tiers([1.0], high_share=high_share, medium_share=medium_share)


# ---------------------------------------------------------------------------------------
# Docstring example and real data
# ---------------------------------------------------------------------------------------


def test_module_docstring_example_runs():
    result = doctest.testmod(revopt.segments)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.fixture(scope="module")
def cdnow_customers() -> pd.DataFrame:
    if not CDNOW_MASTER.exists():
        pytest.skip(f"CDNOW master file not found at {CDNOW_MASTER}; the shared datasets folder is absent")
    orders = pd.read_csv(CDNOW_MASTER, sep=r"\s+", dtype={"customer_id": str, "date": str})
    orders["date"] = pd.to_datetime(orders["date"], format="%Y%m%d")
    # Several orders on one day count as one purchase day.
    days = orders.groupby(["customer_id", "date"], as_index=False)["dollar_value"].sum()
    customers = days.groupby("customer_id").agg(
        last_purchase=("date", "max"), frequency=("date", "size"), monetary=("dollar_value", "sum")
    )
    customers["recency_days"] = (CDNOW_ANALYSIS_DATE - customers["last_purchase"]).dt.days
    return customers


def test_cdnow_scores(cdnow_customers):
    customers = cdnow_customers
    assert len(customers) == 23_570
    one_time = customers["frequency"] == 1
    assert one_time.mean() > 0.5  # most customers bought on one day only

    scores = score_rfm(customers["recency_days"], customers["frequency"], customers["monetary"])
    scored = customers.assign(r=scores.r_score, f=scores.f_score, m=scores.m_score)

    assert set(scored["r"]) == {1, 2, 3, 4, 5}
    one_time_levels = set(scored.loc[one_time, "f"])
    assert len(one_time_levels) == 1
    repeat_levels = set(scored.loc[~one_time, "f"])
    assert min(repeat_levels) > one_time_levels.pop()
    assert len(repeat_levels) >= 3

    for column, score in (("recency_days", "r"), ("frequency", "f"), ("monetary", "m")):
        assert (scored.groupby(column)[score].nunique() == 1).all(), column
        bins = scores.edges[{"r": "recency", "f": "frequency", "m": "monetary"}[score]]
        assert sum(bins.counts) == len(customers)
        for value, low, high in zip(bins.scores, bins.lower, bins.upper):
            in_bin = scored.loc[scored[score] == value, column]
            assert in_bin.min() == low, (column, value)
            assert in_bin.max() == high, (column, value)


def test_cdnow_segments_and_tiers(cdnow_customers):
    customers = cdnow_customers
    scores = score_rfm(customers["recency_days"], customers["frequency"], customers["monetary"])
    segments = assign_segments(scores)
    assert not pd.isna(segments).any()
    assert len(segments) == len(customers)

    tiers = assign_value_tiers(customers["monetary"])
    zero_spend = (customers["monetary"] <= 0).to_numpy()
    assert (np.asarray(tiers)[zero_spend] == "none").all()
    assert (np.asarray(tiers)[~zero_spend] != "none").all()
