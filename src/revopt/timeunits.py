"""Time units for recency, T and horizons, and conversions between them.

A month is an average Gregorian month (365.25 / 12 days); a week is 7 days.
"""

from __future__ import annotations

import re

from revopt.errors import ConfigError

__all__ = ["DAYS_PER_UNIT", "TIME_UNITS", "DAYS_PER_YEAR", "parse_horizon", "days_to_units"]

DAYS_PER_YEAR = 365.25
DAYS_PER_UNIT: dict[str, float] = {
    "day": 1.0,
    "week": 7.0,
    "month": DAYS_PER_YEAR / 12.0,
}
TIME_UNITS = tuple(DAYS_PER_UNIT)

HORIZON_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([DWMY])\s*$", re.IGNORECASE)
_HORIZON_DAYS = {"D": 1.0, "W": 7.0, "M": DAYS_PER_YEAR / 12.0, "Y": DAYS_PER_YEAR}
# CLV sums one discounted term per time unit, so its cost grows with the horizon; 50 years of weeks
# (2,609 steps) is far beyond any business plan yet still runs in seconds.
MAX_HORIZON_YEARS = 50


def check_time_unit(time_unit: str) -> str:
    """Return ``time_unit`` if it is one of :data:`TIME_UNITS`, else raise :class:`ConfigError`."""
    if time_unit not in DAYS_PER_UNIT:
        raise ConfigError(f"time unit {time_unit!r} is not supported; use one of: {', '.join(TIME_UNITS)}")
    return time_unit


def days_to_units(days, time_unit: str):
    """Convert a number (or array) of days into ``time_unit``."""
    return days / DAYS_PER_UNIT[check_time_unit(time_unit)]


def parse_horizon(text: str, time_unit: str) -> float:
    """Parse a horizon such as ``12M``, ``52W``, ``365D`` or ``1Y`` into a number of ``time_unit``.

    Raises
    ------
    ConfigError
        If the text is not a positive number followed by one of D, W, M, Y.
    """
    match = HORIZON_PATTERN.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(message_id="errors.bad_horizon", text=repr(text))
    days = float(match.group(1)) * _HORIZON_DAYS[match.group(2).upper()]
    if days > MAX_HORIZON_YEARS * DAYS_PER_YEAR:
        raise ConfigError(message_id="errors.horizon_too_long", text=repr(text), max_years=MAX_HORIZON_YEARS)
    return days_to_units(days, time_unit)
