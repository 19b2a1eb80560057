"""RFM scores, named customer segments and value tiers.

Three ways to group customers for a report or a campaign list:

* :func:`score_rfm` turns recency, frequency and monetary value into scores 1 to 5
  (5 is best) by tie-aware equal-frequency binning, and reports the bins it used.
* :func:`assign_segments` maps the three scores to named segments (champions, loyal, ...,
  lost) with the rule table :data:`SEGMENT_RULES`.
* :func:`assign_value_tiers` groups customers by predicted customer lifetime value (CLV).

Segment and tier codes are stable English identifiers. Their labels in English and
Simplified Chinese come from the message catalog through :func:`label`.

Examples
--------
>>> import numpy as np
>>> scores = score_rfm(
...     np.array([3, 40, 200, 10, 90]),
...     np.array([6, 2, 1, 1, 3]),
...     np.array([310.0, 45.5, 12.0, 25.0, 80.0]),
... )
>>> scores.r_score.tolist(), scores.f_score.tolist(), scores.m_score.tolist()
([5, 3, 1, 4, 2], [5, 2, 1, 1, 4], [5, 3, 1, 2, 4])
>>> list(assign_segments(scores))
['champions', 'needs_attention', 'lost', 'new', 'at_risk']
>>> label("champions", "zh-CN")
'重要价值客户'
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from revopt.errors import ConfigError, InputError, check_range
from revopt.i18n import detect_language, message

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_HIGH_SHARE",
    "DEFAULT_MEDIUM_SHARE",
    "SEGMENT_CODES",
    "SEGMENT_RULES",
    "TIER_CODES",
    "RFMScores",
    "ScoreBins",
    "SegmentRule",
    "assign_segments",
    "assign_value_tiers",
    "label",
    "score_rfm",
    "segment_table",
]

logger = logging.getLogger(__name__)

# Five levels per dimension is the usual RFM scale (quintiles), and the segment rules are
# written for it.
DEFAULT_BINS = 5

# Scores are stored as int8, so a scale cannot go beyond its maximum.
_MAX_BINS = int(np.iinfo(np.int8).max)

# Error messages list this many offending customers; enough to find the rows in the input.
_SHOWN_POSITIONS = 5

# The value tiers: the top 10% of customers with positive predicted CLV are "high", the
# next 40% "medium" and the remaining half "low". These shares are a reporting convention,
# not estimated from data. Pass other shares to assign_value_tiers to change them.
DEFAULT_HIGH_SHARE = 0.10
DEFAULT_MEDIUM_SHARE = 0.40


# ---------------------------------------------------------------------------------------
# RFM scores
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreBins:
    """The bins behind one dimension's scores, ordered from score 1 upwards.

    Attributes
    ----------
    dimension : str
        ``"recency"``, ``"frequency"`` or ``"monetary"``.
    lower, upper : tuple of float
        The smallest and the largest input value in each bin, in the input's units (days
        for recency). A bin contains exactly the customers whose value lies in
        ``[lower, upper]``. Both are NaN for a bin that contains only customers with a
        missing monetary value.
    scores : tuple of int
        The score given to each bin.
    counts : tuple of int
        The number of customers in each bin, customers with a missing value included.
    missing_score : int or None
        The score given to customers with a missing (NaN) value, None when there are none.
    """

    dimension: str
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    scores: tuple[int, ...]
    counts: tuple[int, ...]
    missing_score: int | None = None

    def to_dict(self) -> dict:
        """Return the bins as plain JSON-ready values, with None in place of NaN."""
        return {
            "dimension": self.dimension,
            "bins": [
                {
                    "score": score,
                    "lower": None if np.isnan(low) else low,
                    "upper": None if np.isnan(high) else high,
                    "customers": count,
                }
                for score, low, high, count in zip(self.scores, self.lower, self.upper, self.counts)
            ],
            "missing_score": self.missing_score,
        }


@dataclass(frozen=True)
class RFMScores:
    """Recency, frequency and monetary scores of each customer, in input order.

    Attributes
    ----------
    r_score, f_score, m_score : numpy.ndarray of int8, shape (n_customers,)
        Scores from 1 (worst) to ``bins`` (best).
    edges : dict of str to ScoreBins
        The bins used per dimension, keyed ``"recency"``, ``"frequency"``, ``"monetary"``.
    bins : int
        The number of score levels the scale has (not all need to be used).
    """

    r_score: np.ndarray
    f_score: np.ndarray
    m_score: np.ndarray
    edges: dict[str, ScoreBins] = field(repr=False)
    bins: int = DEFAULT_BINS

    def edges_to_dict(self) -> dict:
        """Return the bins of all three dimensions as JSON-ready values, for model.json."""
        return {name: bins.to_dict() for name, bins in self.edges.items()}


def score_rfm(recency_days, frequency, monetary, *, bins: int = DEFAULT_BINS) -> RFMScores:
    """Score customers 1 to ``bins`` on recency, frequency and monetary value.

    Parameters
    ----------
    recency_days : array_like of float, shape (n_customers,)
        Days from the customer's last purchase to the analysis date, ``>= 0``. Smaller is
        better, so the most recent customers get the top score.
    frequency : array_like of float, shape (n_customers,)
        Number of purchase days (several orders on one day count once), ``>= 0``. Only the
        order of the values matters, so counting repeat purchase days only (one less,
        as lifetimes does) gives the same scores.
    monetary : array_like of float, shape (n_customers,)
        Total net revenue of the customer over the whole history, which is revopt's
        convention because every customer then has a value. Mean spend per purchase day
        works the same way. With mean *repeat* spend, one-time buyers have no value:
        pass NaN for them (see Notes). Negative values (net refunds) are allowed.
    bins : int, default 5
        Number of score levels, from 2 to 127. The segment rules need 5.

    Returns
    -------
    RFMScores
        The int8 scores and, in ``edges``, the bins used per dimension.

    Raises
    ------
    InputError
        If the arrays are not one-dimensional numbers of equal length, if recency or
        frequency is missing, infinite or negative, or if monetary is infinite.
    ConfigError
        If ``bins`` is not an integer from 2 to 127.

    Notes
    -----
    Each dimension is binned on its own. The values are ordered from worst to best
    (recency descending, frequency and monetary ascending), and a missing monetary value
    ranks below every number. Customers with exactly equal values always get the same
    score, because bins are built from the distinct values and their customer counts.
    A range of distinct values is split into ``L`` levels (at first all values and
    ``L = bins``) by the first rule that applies:

    1. If the range has at most ``L`` distinct values, each value is a bin of its own.
    2. If the range's most common value is held by at least ``1/L`` of its customers,
       that value is dominant and gets a bin of its own. The ``L - 1`` other levels are
       shared by the customers below and above it in proportion to their numbers,
       rounded to the nearest integer (halves up). Each non-empty side gets at least
       one level and no more levels than it has distinct values. Each side is then
       split again by these rules. When only one level is left for two non-empty sides, the smaller
       side joins the dominant value's bin (the worse side when both are equal).
    3. Otherwise the range is cut into ``L`` bins of near-equal size: the ``i``-th cut
       goes to the boundary between distinct values nearest to ``i/L`` of the range's
       customers, the lower one when two are equally near. No value has ``1/L`` of the
       customers here, so every bin is non-empty.

    So in a shop where 70% of customers bought on one day only, frequency 1 is dominant
    and scores 1, and the repeat buyers are split over scores 2 to 5 by the same rules.

    When the rules produce ``bins`` bins, they score 1 to ``bins`` from worst to best.
    Fewer bins come out only when a dimension has fewer distinct values than ``bins``. They
    are spread over the scale so that the worst bin scores 1 and the best ``bins``: of
    ``k`` bins, bin ``i = 0 .. k-1`` scores ``1 + round((bins - 1) * i / (k - 1))``
    with halves rounded up. With five levels, 2 bins score 1 and 5, 3 bins 1, 3 and 5,
    and 4 bins 1, 2, 4 and 5. A single bin (all customers equal) gets the middle score
    ``(bins + 1) // 2``, because the data do not say who is better.
    """
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral):
        raise ConfigError(f"bins must be an integer from 2 to {_MAX_BINS}; got {bins!r}")
    bins = int(check_range("bins", bins, low=2, high=_MAX_BINS))

    recency = _as_float_array("recency_days", recency_days)
    frequency_values = _as_float_array("frequency", frequency)
    monetary_values = _as_float_array("monetary", monetary)
    _check_lengths(recency_days=recency, frequency=frequency_values, monetary=monetary_values)
    _check_finite_non_negative("recency_days", recency, recency_days)
    _check_finite_non_negative("frequency", frequency_values, frequency)
    _check_no_infinity("monetary", monetary_values, monetary)

    # Orient every dimension so that larger is better. A missing monetary value becomes
    # -inf, which ranks it below every number (infinite input was rejected above).
    r_score, r_bins = _score_dimension(-recency, "recency", bins=bins)
    f_score, f_bins = _score_dimension(frequency_values, "frequency", bins=bins)
    oriented_monetary = np.where(np.isnan(monetary_values), -np.inf, monetary_values)
    m_score, m_bins = _score_dimension(oriented_monetary, "monetary", bins=bins)

    return RFMScores(
        r_score=r_score,
        f_score=f_score,
        m_score=m_score,
        edges={"recency": r_bins, "frequency": f_bins, "monetary": m_bins},
        bins=bins,
    )


def _score_dimension(oriented: np.ndarray, dimension: str, *, bins: int) -> tuple[np.ndarray, ScoreBins]:
    """Score one dimension whose values are oriented larger-is-better; NaN is already -inf."""
    distinct, inverse, counts = np.unique(oriented, return_inverse=True, return_counts=True)
    cumulative = np.concatenate(([0], np.cumsum(counts)))
    cuts = np.asarray(_split_levels(counts, cumulative, 0, len(distinct), bins), dtype=np.intp)
    n_bins = len(cuts) + 1 if len(distinct) else 0
    bin_scores = _spread_scores(n_bins, bins)

    bin_of_value = np.searchsorted(cuts, np.arange(len(distinct)), side="right")
    scores = bin_scores[bin_of_value][inverse.reshape(-1)].astype(np.int8)

    if n_bins < bins:
        logger.info("rfm_fewer_levels dimension=%s bins_used=%d bins=%d", dimension, n_bins, bins)
    return scores, _describe_bins(distinct, counts, cuts, bin_scores, dimension)


def _split_levels(counts: np.ndarray, cumulative: np.ndarray, start: int, stop: int, levels: int) -> list[int]:
    """Return the indices of the distinct values that start a new bin in ``[start, stop)``.

    ``counts`` is the number of customers per distinct value, sorted worst to best, and
    ``cumulative`` their running total with a leading 0. The rules are those of
    :func:`score_rfm`'s Notes. The recursion is at most ``levels`` deep.
    """
    n_distinct = stop - start
    if levels <= 1 or n_distinct <= 1:
        return []
    if n_distinct <= levels:
        return list(range(start + 1, stop))

    size = int(cumulative[stop] - cumulative[start])
    dominant = start + int(np.argmax(counts[start:stop]))
    if int(counts[dominant]) * levels >= size:
        return _split_around_dominant(counts, cumulative, start, stop, levels, dominant)

    # Rule 3, in integers: compare cumulative counts times levels with i * size.
    scaled = cumulative[start : stop + 1] * levels
    targets = int(cumulative[start]) * levels + size * np.arange(1, levels)
    above = np.searchsorted(scaled, targets, side="left")
    below = above - 1
    nearest = np.where(targets - scaled[below] <= scaled[above] - targets, below, above)
    return (start + nearest).tolist()


def _split_around_dominant(
    counts: np.ndarray, cumulative: np.ndarray, start: int, stop: int, levels: int, dominant: int
) -> list[int]:
    """Give the dominant value a bin of its own and split its two sides (rule 2)."""
    remaining = levels - 1
    if dominant == start:
        return [dominant + 1] + _split_levels(counts, cumulative, dominant + 1, stop, remaining)
    if dominant == stop - 1:
        return _split_levels(counts, cumulative, start, dominant, remaining) + [dominant]

    below_size = int(cumulative[dominant] - cumulative[start])
    above_size = int(cumulative[stop] - cumulative[dominant + 1])
    if remaining == 1:
        return [dominant + 1] if below_size <= above_size else [dominant]

    total = below_size + above_size
    below_levels = (2 * remaining * below_size + total) // (2 * total)  # nearest integer, halves up
    below_levels = min(max(below_levels, 1), remaining - 1)
    below_distinct = dominant - start
    above_distinct = stop - dominant - 1
    below_levels = min(below_levels, below_distinct)
    below_levels = max(below_levels, min(remaining - above_distinct, below_distinct))

    return (
        _split_levels(counts, cumulative, start, dominant, below_levels)
        + [dominant, dominant + 1]
        + _split_levels(counts, cumulative, dominant + 1, stop, remaining - below_levels)
    )


def _spread_scores(n_bins: int, bins: int) -> np.ndarray:
    """Return the score of each of ``n_bins`` bins on a scale of ``bins`` levels."""
    if n_bins == bins:
        return np.arange(1, bins + 1)
    if n_bins <= 1:
        return np.full(n_bins, (bins + 1) // 2)
    steps = np.arange(n_bins)
    return 1 + (2 * (bins - 1) * steps + (n_bins - 1)) // (2 * (n_bins - 1))


def _describe_bins(
    distinct: np.ndarray, counts: np.ndarray, cuts: np.ndarray, bin_scores: np.ndarray, dimension: str
) -> ScoreBins:
    """Summarise the bins in the input's units; ``distinct`` is oriented larger-is-better."""
    if len(distinct) == 0:
        return ScoreBins(dimension, (), (), (), ())

    starts = np.concatenate(([0], cuts))
    stops = np.concatenate((cuts, [len(distinct)]))
    bin_counts = np.add.reduceat(counts, starts)

    # A missing value sorts first as -inf. Its bin's numeric range starts at the next value.
    has_missing = bool(np.isneginf(distinct[0]))
    first_numeric = starts.copy()
    if has_missing:
        first_numeric[0] = 1
    empty = first_numeric >= stops
    smallest = np.where(empty, np.nan, distinct[np.minimum(first_numeric, len(distinct) - 1)])
    largest = np.where(empty, np.nan, distinct[stops - 1])

    if dimension == "recency":  # oriented as -days, so the bounds swap
        lower, upper = -largest, -smallest
    else:
        lower, upper = smallest, largest
    return ScoreBins(
        dimension=dimension,
        lower=tuple(float(value) for value in lower),
        upper=tuple(float(value) for value in upper),
        scores=tuple(int(score) for score in bin_scores),
        counts=tuple(int(count) for count in bin_counts),
        missing_score=int(bin_scores[0]) if has_missing else None,
    )


# ---------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------


def _as_float_array(name: str, values) -> np.ndarray:
    """Convert ``values`` (array, list or pandas Series, nullable types included) to 1-D float64."""
    try:
        if hasattr(values, "to_numpy"):
            array = values.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name} must contain numbers only; converting it failed: {error}") from error
    if array.ndim != 1:
        raise InputError(f"{name} must be one-dimensional (one value per customer); got shape {array.shape}")
    return array


def _check_lengths(**arrays: np.ndarray) -> None:
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name}={length}" for name, length in lengths.items())
        raise InputError(f"the input arrays must have one value per customer and equal lengths; got {listed}")


def _describe_customers(mask: np.ndarray, original) -> str:
    """Describe the customers flagged in ``mask``: their count and the first few index labels."""
    positions = np.flatnonzero(mask)[:_SHOWN_POSITIONS]
    if isinstance(original, pd.Series):
        shown, kind = original.index[positions].tolist(), "index labels"
    else:
        shown, kind = positions.tolist(), "positions"
    count = int(mask.sum())
    noun = "customer" if count == 1 else "customers"
    return f"{count} {noun} (first {kind}: {', '.join(map(str, shown))})"


def _check_finite_non_negative(name: str, values: np.ndarray, original) -> None:
    missing = np.isnan(values)
    if missing.any():
        raise InputError(f"{name} is missing for {_describe_customers(missing, original)}; pass a value for every customer")
    infinite = np.isinf(values)
    if infinite.any():
        raise InputError(f"{name} is infinite for {_describe_customers(infinite, original)}; check the input column")
    negative = values < 0
    if negative.any():
        hint = " (a purchase after the analysis date?)" if name == "recency_days" else ""
        raise InputError(f"{name} must be >= 0 but is negative for {_describe_customers(negative, original)}{hint}")


def _check_no_infinity(name: str, values: np.ndarray, original) -> None:
    infinite = np.isinf(values)
    if infinite.any():
        raise InputError(f"{name} is infinite for {_describe_customers(infinite, original)}; check the input column")


# ---------------------------------------------------------------------------------------
# Named segments
# ---------------------------------------------------------------------------------------

# The segment rules are written for this scale.
_SEGMENT_BINS = 5
_FULL_RANGE = (1, _SEGMENT_BINS)


@dataclass(frozen=True)
class SegmentRule:
    """One row of the segment rule table: a segment code and an inclusive range per score.

    A range left at its default ``(1, 5)`` places no condition on that score.
    """

    code: str
    recency: tuple[int, int] = _FULL_RANGE
    frequency: tuple[int, int] = _FULL_RANGE
    monetary: tuple[int, int] = _FULL_RANGE

    def __post_init__(self) -> None:
        for name in ("recency", "frequency", "monetary"):
            low, high = getattr(self, name)
            if not 1 <= low <= high <= _SEGMENT_BINS:
                raise ConfigError(
                    f"segment rule {self.code!r}: the {name} range must satisfy 1 <= low <= high <= "
                    f"{_SEGMENT_BINS}; got ({low}, {high})"
                )

    def matches(self, r_score: np.ndarray, f_score: np.ndarray, m_score: np.ndarray) -> np.ndarray:
        """Return a boolean mask of the customers whose scores fall in all three ranges."""
        mask = np.ones(r_score.shape, dtype=bool)
        for scores, (low, high) in ((r_score, self.recency), (f_score, self.frequency), (m_score, self.monetary)):
            if (low, high) != _FULL_RANGE:
                mask &= (scores >= low) & (scores <= high)
        return mask


# The rule table, checked top to bottom; the first match wins. Recency and frequency place
# a customer on the R x F grid (champions at high R and F, lost at low R and F), and M
# marks high spenders who went quiet as at_risk. The last rule has no condition, so every
# customer gets exactly one segment. With five levels it catches exactly
# R = 1, F <= 2 and M <= 3.
SEGMENT_RULES: tuple[SegmentRule, ...] = (
    SegmentRule("champions", recency=(4, 5), frequency=(4, 5), monetary=(4, 5)),
    SegmentRule("loyal", recency=(3, 5), frequency=(4, 5)),
    SegmentRule("new", recency=(4, 5), frequency=(1, 1)),
    SegmentRule("potential_loyalist", recency=(4, 5), frequency=(2, 3)),
    SegmentRule("needs_attention", recency=(3, 3)),
    SegmentRule("at_risk", recency=(1, 2), frequency=(3, 5)),
    SegmentRule("at_risk", recency=(1, 2), monetary=(4, 5)),
    SegmentRule("hibernating", recency=(2, 2)),
    SegmentRule("lost"),
)

# Segment codes in rule order, which is also the order of the report's table.
SEGMENT_CODES: tuple[str, ...] = tuple(dict.fromkeys(rule.code for rule in SEGMENT_RULES))


def assign_segments(scores: RFMScores) -> pd.Categorical:
    """Assign each customer the segment of the first rule in :data:`SEGMENT_RULES` that matches.

    Parameters
    ----------
    scores : RFMScores
        Scores on the five-level scale, for example from :func:`score_rfm`.

    Returns
    -------
    pandas.Categorical, shape (n_customers,)
        Segment codes in input order, with categories :data:`SEGMENT_CODES`.

    Raises
    ------
    ConfigError
        If the scores are not on the five-level scale.
    InputError
        If the score arrays differ in length or hold a score outside 1 to 5.
    """
    if scores.bins != _SEGMENT_BINS:
        raise ConfigError(
            f"the segment rules need RFM scores on {_SEGMENT_BINS} levels; got bins={scores.bins}. "
            f"Score with score_rfm(..., bins={_SEGMENT_BINS})"
        )
    r_score, f_score, m_score = (np.asarray(s) for s in (scores.r_score, scores.f_score, scores.m_score))
    _check_lengths(r_score=r_score, f_score=f_score, m_score=m_score)
    for name, values in (("r_score", r_score), ("f_score", f_score), ("m_score", m_score)):
        outside = (values < 1) | (values > _SEGMENT_BINS)
        if outside.any():
            raise InputError(
                f"{name} is outside 1 to {_SEGMENT_BINS} for {_describe_customers(outside, values)}; "
                f"score with score_rfm(..., bins={_SEGMENT_BINS})"
            )

    conditions = [rule.matches(r_score, f_score, m_score) for rule in SEGMENT_RULES]
    rule_codes = [SEGMENT_CODES.index(rule.code) for rule in SEGMENT_RULES]
    codes = np.select(conditions, rule_codes, default=-1).astype(np.int8)
    return pd.Categorical.from_codes(codes, categories=list(SEGMENT_CODES))


def segment_table(language: str) -> list[dict[str, str]]:
    """List every segment with its label and rule in ``language``, in rule order.

    Returns
    -------
    list of dict
        One dict per segment code with the keys ``code``, ``label`` and ``rule``. A segment
        with several rows in :data:`SEGMENT_RULES` joins their conditions with "or".
        Rules are checked in list order and the first match wins, which the report should
        state (message ``segments.rule.first_match``).
    """
    language = detect_language(language)
    table = []
    for code in SEGMENT_CODES:
        texts = [_rule_text(rule, language) for rule in SEGMENT_RULES if rule.code == code]
        table.append(
            {
                "code": code,
                "label": label(code, language),
                "rule": message("segments.rule.join_or", language).join(texts),
            }
        )
    return table


def _rule_text(rule: SegmentRule, language: str) -> str:
    conditions = []
    for letter, (low, high) in (("R", rule.recency), ("F", rule.frequency), ("M", rule.monetary)):
        if (low, high) == _FULL_RANGE:
            continue
        if low == high:
            conditions.append(f"{letter} = {low}")
        elif low == 1:
            conditions.append(f"{letter} ≤ {high}")
        elif high == _SEGMENT_BINS:
            conditions.append(f"{letter} ≥ {low}")
        else:
            conditions.append(f"{low} ≤ {letter} ≤ {high}")
    if not conditions:
        return message("segments.rule.otherwise", language)
    return message("segments.rule.join_and", language).join(conditions)


# ---------------------------------------------------------------------------------------
# Value tiers and labels
# ---------------------------------------------------------------------------------------

# Tier codes from most to least valuable; "none" is a predicted CLV of zero or below.
TIER_CODES: tuple[str, ...] = ("high", "medium", "low", "none")


def assign_value_tiers(
    clv,
    *,
    high_share: float = DEFAULT_HIGH_SHARE,
    medium_share: float = DEFAULT_MEDIUM_SHARE,
) -> pd.Categorical:
    """Group customers into value tiers by predicted customer lifetime value.

    Parameters
    ----------
    clv : array_like of float, shape (n_customers,)
        Predicted CLV per customer, in any currency unit.
    high_share : float, default 0.10
        Share of the customers with positive CLV that forms the "high" tier, in (0, 1].
    medium_share : float, default 0.40
        Share of the customers with positive CLV that forms the "medium" tier, in
        [0, 1 - high_share].

    Returns
    -------
    pandas.Categorical, shape (n_customers,)
        Tier codes in input order, with categories :data:`TIER_CODES`.

    Raises
    ------
    InputError
        If ``clv`` is not one-dimensional numbers or has missing or infinite values.
    ConfigError
        If a share is outside its range.

    Notes
    -----
    A CLV of zero or below is tier "none". Among the ``n`` customers with positive CLV,
    a customer is "high" when fewer than ``high_share * n`` of them have a strictly
    higher CLV, "medium" when fewer than ``(high_share + medium_share) * n`` do, and
    "low" otherwise. Customers with equal CLV therefore share a tier, and a tie across a
    cut-off goes to the higher tier, so a tier can hold a little more than its share.
    """
    check_range("high_share", high_share, low=0.0, high=1.0, low_inclusive=False)
    check_range("medium_share", medium_share, low=0.0, high=1.0 - high_share)

    values = _as_float_array("clv", clv)
    missing = np.isnan(values)
    if missing.any():
        raise InputError(
            f"clv is missing for {_describe_customers(missing, clv)}; predict CLV for every customer or drop those customers first"
        )
    _check_no_infinity("clv", values, clv)

    # Tiers are decided once per distinct value, which also gives ties the same tier.
    distinct, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    positive = distinct > 0
    positive_counts = np.where(positive, counts, 0)
    n_positive = int(positive_counts.sum())
    higher = n_positive - np.cumsum(positive_counts)  # customers with a strictly greater CLV

    tier_of_value = np.select(
        [~positive, higher < high_share * n_positive, higher < (high_share + medium_share) * n_positive],
        [TIER_CODES.index("none"), TIER_CODES.index("high"), TIER_CODES.index("medium")],
        default=TIER_CODES.index("low"),
    ).astype(np.int8)
    return pd.Categorical.from_codes(tier_of_value[inverse.reshape(-1)], categories=list(TIER_CODES))


def label(code: str, language: str) -> str:
    """Return the display label of a segment or tier code in ``language`` ("en" or "zh-CN").

    Raises
    ------
    ConfigError
        If the code is neither a segment nor a tier code, or the language is not supported.
    """
    language = detect_language(language)
    if code in SEGMENT_CODES:
        return message(f"segments.segment.{code}", language)
    if code in TIER_CODES:
        return message(f"segments.tier.{code}", language)
    raise ConfigError(
        f"unknown segment or tier code {code!r}; segment codes: {', '.join(SEGMENT_CODES)}; "
        f"tier codes: {', '.join(TIER_CODES)}"
    )
