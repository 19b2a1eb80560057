"""Parse dates and amounts as SQL expressions, and detect the date format of a column.

Date formats come in families that share the order of year, month and day; each family lists the
variants with and without a time of day. The detected family is the one that parses the most
values; when a day-first and a month-first family parse equally many (``03/04/2024``), the run
stops unless the caller says which, because a silent guess swaps days and months.
"""

from __future__ import annotations

from dataclasses import dataclass

import ibis
import ibis.expr.datatypes as dt

from revopt.errors import ParseError

__all__ = ["DateFamily", "DATE_FAMILIES", "detect_date_family", "parse_timestamp", "parse_number", "to_local_time"]

_TIME_SUFFIXES = (" %H:%M:%S.%f", " %H:%M:%S", " %H:%M", "T%H:%M:%S.%f", "T%H:%M:%S", "T%H:%M", "")

# Excel stores dates as days since 1899-12-30; serials of 20000-80000 cover 1954-2119.
EXCEL_EPOCH = "1899-12-30"
EXCEL_SERIAL_RANGE = (20000, 80000)
SECONDS_PER_DAY = 86400


@dataclass(frozen=True)
class DateFamily:
    """Date formats with one field order; ``day_first`` is None where the order is not ambiguous."""

    name: str
    formats: tuple[str, ...]
    day_first: bool | None = None
    has_offset: bool = False


def _with_times(date_format: str) -> tuple[str, ...]:
    return tuple(date_format + suffix for suffix in _TIME_SUFFIXES)


DATE_FAMILIES: tuple[DateFamily, ...] = (
    DateFamily("iso_offset", ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z"), has_offset=True),
    DateFamily("ymd_dash", _with_times("%Y-%m-%d")),
    DateFamily("ymd_slash", _with_times("%Y/%m/%d")),
    DateFamily("ymd_dot", _with_times("%Y.%m.%d")),
    DateFamily("ymd_compact", ("%Y%m%d%H%M%S", "%Y%m%d")),
    DateFamily("ymd_chinese", ("%Y年%m月%d日 %H:%M:%S", "%Y年%m月%d日 %H:%M", "%Y年%m月%d日")),
    DateFamily("dmy_slash", _with_times("%d/%m/%Y"), day_first=True),
    DateFamily("mdy_slash", _with_times("%m/%d/%Y"), day_first=False),
    DateFamily("dmy_dash", _with_times("%d-%m-%Y"), day_first=True),
    DateFamily("mdy_dash", _with_times("%m-%d-%Y"), day_first=False),
    DateFamily("dmy_dot", _with_times("%d.%m.%Y"), day_first=True),
    DateFamily("excel_serial", ()),
)
_FAMILIES_BY_NAME = {family.name: family for family in DATE_FAMILIES}
_LOCAL_TIMESTAMP = dt.Timestamp()
_UTC_TIMESTAMP = dt.Timestamp(timezone="UTC")


@ibis.udf.scalar.builtin(name="try_strptime")
def _try_strptime(value: str, date_format: str) -> _LOCAL_TIMESTAMP:
    """DuckDB's ``try_strptime``: NULL where ``value`` does not match ``date_format``."""


@ibis.udf.scalar.builtin(name="try_strptime")
def _try_strptime_offset(value: str, date_format: str) -> _UTC_TIMESTAMP:
    """``try_strptime`` for formats with ``%z``, which return a time-zone-aware timestamp."""


@ibis.udf.scalar.builtin(name="timezone")
def _to_local(zone: str, value: _UTC_TIMESTAMP) -> _LOCAL_TIMESTAMP:
    """DuckDB's ``timezone(zone, timestamptz)``: the wall-clock time in ``zone``."""


def to_local_time(value, zone: str):
    """Convert a time-zone-aware timestamp expression to the wall-clock time in ``zone``."""
    return _to_local(zone, value)


def _excel_serial(value) -> ibis.Value:
    number = value.try_cast("float64")
    low, high = EXCEL_SERIAL_RANGE
    in_range = value.re_search(r"^\d{5}(\.\d+)?$") & number.between(low, high)
    seconds = (number * SECONDS_PER_DAY).round().cast("int64")
    return ibis.ifelse(in_range, ibis.timestamp(f"{EXCEL_EPOCH} 00:00:00") + seconds.as_interval("s"), None)


def parse_timestamp(value, family: DateFamily | str, *, tz: str | None = None, date_format: str | None = None):
    """Return an expression parsing string ``value`` as a local timestamp (NULL where it does not parse).

    Times with a UTC offset are converted to ``tz`` (the business time zone) before the day is
    taken; times without one are taken as already local.
    """
    if date_format is not None:
        if "%z" in date_format:
            return _to_local(tz or "UTC", _try_strptime_offset(_normalise_offset(value), date_format))
        return _try_strptime(value, date_format)
    family = _FAMILIES_BY_NAME[family] if isinstance(family, str) else family
    if family.name == "excel_serial":
        return _excel_serial(value)
    if family.has_offset:
        normalised = _normalise_offset(value)
        parsed = ibis.coalesce(*[_try_strptime_offset(normalised, f) for f in family.formats])
        return _to_local(tz or "UTC", parsed)
    return ibis.coalesce(*[_try_strptime(value, f) for f in family.formats])


def _normalise_offset(value):
    """Turn a trailing ``Z`` (UTC) into ``+00:00``, which ``%z`` accepts."""
    return value.re_replace(r"[Zz]$", "+00:00")


# Distinct date values examined to detect the format: enough that a format used by 0.1% of a large
# export still appears about 50 times.
DETECTION_SAMPLE = 50_000


def detect_date_family(table, column: str, *, dayfirst: bool | None, source: str, column_label: str) -> DateFamily:
    """Pick the date family that parses the most distinct non-empty values of ``table[column]``.

    The check runs on up to :data:`DETECTION_SAMPLE` distinct values, which are far fewer than rows in an order export. The
    returned family keeps only the formats that matched, most frequent first, so that parsing the
    full column tries the likely format first.

    Raises
    ------
    ParseError
        If no family parses any value, or if day-first and month-first parse equally many and
        ``dayfirst`` is None.
    """
    stripped = table[column].strip()
    values = table.select(value=stripped).filter(stripped.notnull() & (stripped != "")).distinct()
    # A fixed sample of distinct values (by hash, so the same data gives the same sample) bounds the
    # cost on logs where nearly every order has its own timestamp. A format that the sample misses
    # leaves its rows unparsed, and they are rejected and counted against --max-invalid.
    values = values.order_by(values.value.hash()).limit(DETECTION_SAMPLE)
    metrics = {"_total": values.count()}
    for index, family in enumerate(DATE_FAMILIES):
        metrics[f"family_{index}"] = parse_timestamp(values.value, family).notnull().sum()
        for position, date_format in enumerate(family.formats):
            single = DateFamily(family.name, (date_format,), family.day_first, family.has_offset)
            metrics[f"format_{index}_{position}"] = parse_timestamp(values.value, single).notnull().sum()
    counts = {name: int(count or 0) for name, count in values.aggregate(**metrics).to_pandas().iloc[0].items()}

    total = counts.pop("_total")
    family_counts = {family.name: counts[f"family_{index}"] for index, family in enumerate(DATE_FAMILIES)}
    best = max(family_counts.values())
    if total == 0 or best == 0:
        examples = values.limit(3).to_pandas()["value"].tolist()
        raise ParseError(message_id="errors.no_dates", source=source, column=column_label,
                         examples=", ".join(map(repr, examples)))
    leaders = [_FAMILIES_BY_NAME[name] for name, count in family_counts.items() if count == best]
    ordered = [family for family in leaders if family.day_first is not None]
    if len(leaders) > 1 and ordered and dayfirst is None:
        month_first = next(family for family in ordered if family.day_first is False)
        raise ParseError(message_id="errors.ambiguous_dates", source=source, column=column_label,
                         month_first=month_first.formats[-1])
    if len(leaders) > 1 and ordered:
        chosen = next(family for family in ordered if family.day_first == dayfirst)
    else:
        chosen = leaders[0]
    index = DATE_FAMILIES.index(chosen)
    matched = sorted(
        ((counts[f"format_{index}_{position}"], position) for position in range(len(chosen.formats))),
        key=lambda item: (-item[0], item[1]),
    )
    formats = tuple(chosen.formats[position] for count, position in matched if count > 0)
    return DateFamily(chosen.name, formats, chosen.day_first, chosen.has_offset)


def parse_number(value):
    """Return an expression parsing a money or quantity string as float64 (NULL where it is not a number).

    Currency signs (¥, ￥, $, €, £), thousands separators, spaces and the words CNY, RMB and 元 are dropped first.
    """
    cleaned = value.re_replace(r"[¥￥$€£,\s]|CNY|RMB|元", "")
    return cleaned.try_cast("float64")
