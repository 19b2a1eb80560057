"""Next best action: for each customer, the contact with the highest expected incremental value.

The actions, in the order that also breaks ties:

* ``win_back``: an offer to a customer at risk of churning;
* ``cross_sell``: a recommended item from another line of products;
* ``upsell``: a higher-priced item in a category the customer already buys;
* ``loyalty_invitation``: the members' programme, for valuable customers who stay;
* ``replenishment_reminder``: a consumable the customer bought is due to run out;
* ``no_contact``: send nothing (value 0).

Each contact action's expected value per customer is an expected gain minus an expected cost.
With ``m`` the margin rate, and for each action ``c`` the contact cost, ``k`` the coupon value and
``rho`` the coupon redemption rate, ``cost = c + k * rho`` and::

    win_back                = churn_probability * save_rate * clv - cost
    cross_sell              = response_rate * cross_sell_score * cross_sell_price * m - cost
    upsell                  = response_rate * (1 - exp(-expected_purchases))
                              * (upsell_price - upsell_from_price) * m - cost
    loyalty_invitation      = (1 - churn_probability) * uplift_rate * clv - cost
    replenishment_reminder  = response_rate * p_alive * replenish_price * m - cost

``clv`` is the expected margin over the horizon, so it is not multiplied by ``m`` again.
``1 - exp(-expected_purchases)`` is the chance of at least one purchase in the horizon when the
count is Poisson. Where only one of ``churn_probability`` and ``p_alive`` is given, the other is
one minus it. The win-back formula values a kept customer at their ``clv``, which already weighs
in the chance that they are gone, so it is a conservative value for customers likely lost.

An action's value is NaN, and the action is never chosen, when an input it needs is missing or
it has no product to offer. The same applies when the customer's segment is not in its
``eligible_segments``, and (replenishment, with ``as_of``) when the item is not yet due. Each customer gets the action with
the highest value, and ``no_contact`` when no value is above 0. The default settings and their
meaning are in ``revopt/config/actions.toml``; a user file overrides them key by key.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from revopt.errors import ConfigError, DataQualityWarning, InputError
from revopt.i18n import detect_language, message
from revopt.segments import SEGMENT_CODES

__all__ = [
    "ACTIONS",
    "CONTACT_ACTIONS",
    "NO_CONTACT",
    "EFFECT_RATE_KEYS",
    "PRODUCT_COLUMNS",
    "ActionSettings",
    "ActionConfig",
    "load_action_config",
    "choose_actions",
    "action_label",
]

log = logging.getLogger(__name__)

NO_CONTACT = "no_contact"
CONTACT_ACTIONS = ("win_back", "cross_sell", "upsell", "loyalty_invitation", "replenishment_reminder")
ACTIONS = (*CONTACT_ACTIONS, NO_CONTACT)

# The TOML key of each action's own effect rate; ActionSettings stores it as effect_rate.
EFFECT_RATE_KEYS = MappingProxyType({
    "win_back": "save_rate",
    "cross_sell": "response_rate",
    "upsell": "response_rate",
    "loyalty_invitation": "uplift_rate",
    "replenishment_reminder": "response_rate",
})
_MONEY_KEYS = ("contact_cost", "coupon_value")
_SEGMENTS_KEY = "eligible_segments"
_DUE_KEY = "days_before_due"
_MARGIN_KEY = "margin_rate"
_DEFAULT_FILE_LABEL = "revopt/config/actions.toml"

# The product each action offers, as a column of the customer table.
PRODUCT_COLUMNS = MappingProxyType({
    "cross_sell": ("cross_sell_product_name", "cross_sell_price"),
    "upsell": ("upsell_product_name", "upsell_price"),
    "replenishment_reminder": ("replenish_product_name", "replenish_price"),
})

# Input columns each action's value needs. A tuple inside means "either of these".
_REQUIRED_COLUMNS = MappingProxyType({
    "win_back": (("churn_probability", "p_alive"), "clv"),
    "cross_sell": ("cross_sell_product_name", "cross_sell_price", "cross_sell_score"),
    "upsell": ("upsell_product_name", "upsell_price", "upsell_from_price", "expected_purchases"),
    "loyalty_invitation": (("churn_probability", "p_alive"), "clv"),
    "replenishment_reminder": ("replenish_product_name", "replenish_price", ("p_alive", "churn_probability")),
})

# Column-name prefixes that show a table means to offer an action (str.startswith accepts tuples).
_OWN_COLUMN_PREFIXES = MappingProxyType({
    "win_back": ("clv",),
    "cross_sell": ("cross_sell_",),
    "upsell": ("upsell_",),
    "loyalty_invitation": ("clv",),
    "replenishment_reminder": ("replenish_",),
})

# Numeric input columns and their allowed closed ranges (None: unbounded on that side).
_NUMERIC_RANGES = MappingProxyType({
    "churn_probability": (0.0, 1.0),
    "p_alive": (0.0, 1.0),
    "clv": (None, None),
    "expected_purchases": (0.0, None),
    "cross_sell_price": (0.0, None),
    "cross_sell_score": (0.0, 1.0),
    "upsell_price": (0.0, None),
    "upsell_from_price": (0.0, None),
    "replenish_price": (0.0, None),
})
_DUE_DATE_COLUMN = "replenish_due_date"
# How many offending customer ids an input error shows.
_EXAMPLE_IDS = 3


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionSettings:
    """Costs and assumed effect of one contact action.

    Attributes
    ----------
    contact_cost : float
        Cost of sending one message, CNY.
    coupon_value : float
        Face value of the coupon sent with the message, CNY; 0 sends none.
    redemption_rate : float
        Share of contacted customers expected to redeem the coupon.
    effect_rate : float
        The action's incremental effect: ``save_rate`` of win_back, ``uplift_rate`` of
        loyalty_invitation, ``response_rate`` of the others (see the module docstring).
    eligible_segments : tuple of str
        Segment codes the action may go to; empty allows every customer.
    days_before_due : int or None
        Replenishment only: remind when the due date is at most this many days after ``as_of``.
    """

    contact_cost: float
    coupon_value: float
    redemption_rate: float
    effect_rate: float
    eligible_segments: tuple[str, ...] = ()
    days_before_due: int | None = None

    @property
    def expected_cost(self) -> float:
        """Contact cost plus the coupon's expected cost, CNY per contacted customer."""
        return self.contact_cost + self.coupon_value * self.redemption_rate


@dataclass(frozen=True)
class ActionConfig:
    """Settings of the next best action, as read by :func:`load_action_config`.

    Attributes
    ----------
    margin_rate : float
        Gross margin as a share of the selling price.
    actions : Mapping of str to ActionSettings
        One entry per action in :data:`CONTACT_ACTIONS` (read-only).
    sources : tuple of str
        The files the settings came from: the packaged defaults, then the user file if any.
    """

    margin_rate: float
    actions: Mapping[str, ActionSettings]
    sources: tuple[str, ...]


def _allowed_keys(action: str) -> tuple[str, ...]:
    keys = (*_MONEY_KEYS, "redemption_rate", EFFECT_RATE_KEYS[action], _SEGMENTS_KEY)
    return (*keys, _DUE_KEY) if action == "replenishment_reminder" else keys


def _is_number(value: object) -> bool:
    # TOML booleans are Python bools, which are ints; a setting of `true` is not a number.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_value(action: str, key: str, value: object, file: str) -> None:
    """Raise ConfigError unless ``value`` is allowed for ``action.key``."""
    name = f"{action}.{key}"
    if key == _SEGMENTS_KEY:
        if not isinstance(value, list):
            raise ConfigError(message_id="actions.config.unknown_segment", file=file, key=name,
                              value=repr(value), valid=", ".join(SEGMENT_CODES))
        for code in value:
            if code not in SEGMENT_CODES:
                raise ConfigError(message_id="actions.config.unknown_segment", file=file, key=name,
                                  value=repr(code), valid=", ".join(SEGMENT_CODES))
        return
    if key == _DUE_KEY:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(message_id="actions.config.not_a_day_count", file=file, key=name, value=repr(value))
        return
    if not _is_number(value):
        raise ConfigError(message_id="actions.config.not_a_number", file=file, key=name, value=repr(value))
    if key in _MONEY_KEYS:
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(message_id="actions.config.negative", file=file, key=name, value=repr(value))
    elif not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ConfigError(message_id="actions.config.not_a_rate", file=file, key=name, value=repr(value))


def _check_document(document: dict, file: str) -> None:
    """Raise ConfigError on the first unknown key or invalid value of one settings file."""
    valid_top = (_MARGIN_KEY, *CONTACT_ACTIONS)
    for key, value in document.items():
        if key not in valid_top:
            raise ConfigError(message_id="actions.config.unknown_key", file=file, key=key, valid=", ".join(valid_top))
        if key == _MARGIN_KEY:
            if not _is_number(value):
                raise ConfigError(message_id="actions.config.not_a_number", file=file, key=key, value=repr(value))
            if not 0.0 <= value <= 1.0:
                raise ConfigError(message_id="actions.config.not_a_rate", file=file, key=key, value=repr(value))
            continue
        if not isinstance(value, dict):
            raise ConfigError(message_id="actions.config.not_a_table", file=file, key=key, value=repr(value))
        allowed = _allowed_keys(key)
        for setting, setting_value in value.items():
            if setting not in allowed:
                raise ConfigError(message_id="actions.config.unknown_key", file=file, key=f"{key}.{setting}",
                                  valid=", ".join(allowed))
            _check_value(key, setting, setting_value, file)


def _read_document(text: str, file: str) -> dict:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(message_id="actions.config.unreadable", file=file, detail=str(error)) from error
    _check_document(document, file)
    return document


def _merge(defaults: dict, overrides: dict) -> dict:
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in defaults.items()}
    for key, value in overrides.items():
        if isinstance(value, dict):
            merged.setdefault(key, {}).update(value)
        else:
            merged[key] = value
    return merged


def _settings(action: str, table: dict, file: str) -> ActionSettings:
    for key in _allowed_keys(action):
        if key not in table:
            raise ConfigError(message_id="actions.config.missing_key", file=file, key=f"{action}.{key}")
    return ActionSettings(
        contact_cost=float(table["contact_cost"]),
        coupon_value=float(table["coupon_value"]),
        redemption_rate=float(table["redemption_rate"]),
        effect_rate=float(table[EFFECT_RATE_KEYS[action]]),
        eligible_segments=tuple(table[_SEGMENTS_KEY]),
        days_before_due=table.get(_DUE_KEY),
    )


def load_action_config(path: str | Path | None = None) -> ActionConfig:
    """Read the packaged default action settings, overridden key by key by the file at ``path``.

    Parameters
    ----------
    path : str or pathlib.Path, optional
        A TOML file with any subset of the keys of ``revopt/config/actions.toml``, for example
        ``[win_back]`` and ``coupon_value = 30``. Default: the packaged defaults alone.

    Returns
    -------
    ActionConfig

    Raises
    ------
    ConfigError
        If the file does not exist or is not valid TOML, or on the first unknown key, non-numeric
        value, negative cost or coupon, rate outside [0, 1], invalid ``days_before_due`` or unknown
        segment code. The message names the file and the key.
    """
    default_file = resources.files("revopt") / "config" / "actions.toml"
    document = _read_document(default_file.read_text(encoding="utf-8"), _DEFAULT_FILE_LABEL)
    sources = [_DEFAULT_FILE_LABEL]
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(message_id="actions.config.is_folder", path=str(path))
        if not path.is_file():
            raise ConfigError(message_id="errors.no_such_path", path=str(path))
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(message_id="actions.config.not_utf8", file=str(path), offset=error.start) from error
        document = _merge(document, _read_document(text, str(path)))
        sources.append(str(path))

    # A key missing after the merge is missing from the packaged defaults, so that file is named.
    if _MARGIN_KEY not in document:
        raise ConfigError(message_id="actions.config.missing_key", file=_DEFAULT_FILE_LABEL, key=_MARGIN_KEY)
    actions = {action: _settings(action, document.get(action, {}), _DEFAULT_FILE_LABEL) for action in CONTACT_ACTIONS}
    return ActionConfig(
        margin_rate=float(document[_MARGIN_KEY]),
        actions=MappingProxyType(actions),
        sources=tuple(sources),
    )


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def _examples(ids: pd.Series) -> str:
    return ", ".join(map(str, ids.head(_EXAMPLE_IDS)))


def _checked_ids(customers: pd.DataFrame) -> pd.Series:
    if "customer_id" not in customers.columns:
        raise InputError(message_id="actions.input.missing_customer_id",
                         found=", ".join(map(str, customers.columns)) or "-")
    ids = customers["customer_id"]
    empty = ids.isna() | (ids.astype(str).str.strip() == "")
    if empty.any():
        raise InputError(message_id="actions.input.empty_customer_id", count=int(empty.sum()))
    repeated = ids[ids.duplicated(keep=False)].drop_duplicates()
    if len(repeated):
        raise InputError(message_id="actions.input.duplicate_customer_id", count=len(repeated),
                         examples=_examples(repeated))
    return ids


def _numeric_column(customers: pd.DataFrame, ids: pd.Series, column: str) -> np.ndarray:
    """Return ``column`` as float64 (all NaN when absent), raising InputError on bad values."""
    if column not in customers.columns:
        return np.full(len(customers), np.nan)
    raw = customers[column]
    values = pd.to_numeric(raw, errors="coerce").astype("float64")
    not_numeric = values.isna() & raw.notna()
    if not_numeric.any():
        raise InputError(message_id="actions.input.not_numeric", column=column, count=int(not_numeric.sum()),
                         examples=_examples(ids[not_numeric]))
    low, high = _NUMERIC_RANGES[column]
    outside = np.isinf(values)
    if low is not None:
        outside |= values < low
    if high is not None:
        outside |= values > high
    if outside.any():
        interval = f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
        raise InputError(message_id="actions.input.out_of_range", column=column, interval=interval,
                         count=int(outside.sum()), examples=_examples(ids[outside]))
    return values.to_numpy()


def _due_dates(customers: pd.DataFrame, ids: pd.Series) -> pd.Series:
    if _DUE_DATE_COLUMN not in customers.columns:
        return pd.Series(pd.NaT, index=customers.index, dtype="datetime64[ns]")
    raw = customers[_DUE_DATE_COLUMN]
    dates = pd.to_datetime(raw, errors="coerce")
    bad = dates.isna() & raw.notna()
    if bad.any():
        raise InputError(message_id="actions.input.not_a_date", column=_DUE_DATE_COLUMN, count=int(bad.sum()),
                         examples=_examples(ids[bad]))
    return dates


def _has_text(customers: pd.DataFrame, column: str) -> np.ndarray:
    if column not in customers.columns:
        return np.zeros(len(customers), dtype=bool)
    values = customers[column]
    return (values.notna() & (values.astype(str).str.strip() != "")).to_numpy()


def _warn_unusable_actions(columns: pd.Index) -> None:
    """Warn when the table has some of an action's own columns but lacks one it needs.

    An action's own columns are those named after it (``clv`` for win_back and loyalty), so a
    table without any of them stays silent: it simply does not offer that action.
    """
    unusable: dict[tuple[str, str], list[str]] = {}
    for action, required in _REQUIRED_COLUMNS.items():
        own = [str(name) for name in columns if str(name).startswith(_OWN_COLUMN_PREFIXES[action])]
        groups = [group if isinstance(group, tuple) else (group,) for group in required]
        missing = [" or ".join(group) for group in groups if not any(name in columns for name in group)]
        if own and missing:
            unusable.setdefault((", ".join(own), ", ".join(missing)), []).append(action)
    # win_back and loyalty_invitation need the same columns, so they share one warning.
    for (present, missing), actions in unusable.items():
        warnings.warn(
            DataQualityWarning(message_id="actions.input.missing_columns", present=present, missing=missing,
                               action=", ".join(actions)),
            stacklevel=3,
        )


# ---------------------------------------------------------------------------------------------
# Expected values
# ---------------------------------------------------------------------------------------------


def _action_values(customers: pd.DataFrame, config: ActionConfig, as_of: dt.date | None) -> pd.DataFrame:
    """Compute every contact action's expected value, NaN where the action is not available."""
    ids = _checked_ids(customers)
    column = {name: _numeric_column(customers, ids, name) for name in _NUMERIC_RANGES}
    m = config.margin_rate

    # Where only one probability is given, the other is one minus it.
    churn = np.where(np.isnan(column["churn_probability"]), 1.0 - column["p_alive"], column["churn_probability"])
    alive = np.where(np.isnan(column["p_alive"]), 1.0 - column["churn_probability"], column["p_alive"])
    buys_in_horizon = -np.expm1(-column["expected_purchases"])  # 1 - exp(-E[X]), the Poisson P(X >= 1)
    upsell_gap = column["upsell_price"] - column["upsell_from_price"]

    gains = {
        "win_back": churn * config.actions["win_back"].effect_rate * column["clv"],
        "cross_sell": config.actions["cross_sell"].effect_rate * column["cross_sell_score"]
        * column["cross_sell_price"] * m,
        "upsell": config.actions["upsell"].effect_rate * buys_in_horizon * upsell_gap * m,
        "loyalty_invitation": (1.0 - churn) * config.actions["loyalty_invitation"].effect_rate * column["clv"],
        "replenishment_reminder": config.actions["replenishment_reminder"].effect_rate * alive
        * column["replenish_price"] * m,
    }

    segment = customers["segment"] if "segment" in customers.columns else pd.Series(np.nan, index=customers.index)
    due_dates = _due_dates(customers, ids)
    values = {}
    for action, gain in gains.items():
        settings = config.actions[action]
        value = gain - settings.expected_cost
        available = np.ones(len(customers), dtype=bool)
        if action in PRODUCT_COLUMNS:
            available &= _has_text(customers, PRODUCT_COLUMNS[action][0])
        if settings.eligible_segments:
            available &= segment.isin(settings.eligible_segments).to_numpy()
        if action == "replenishment_reminder" and as_of is not None:
            latest_due = pd.Timestamp(as_of) + pd.Timedelta(days=settings.days_before_due)
            available &= (due_dates.isna() | (due_dates <= latest_due)).to_numpy()
        values[action] = np.where(available, value, np.nan)
    return pd.DataFrame(values, index=customers.index)


def choose_actions(
    customers: pd.DataFrame,
    config: ActionConfig | None = None,
    *,
    as_of: dt.date | None = None,
) -> pd.DataFrame:
    """Choose each customer's next best action, the one with the highest expected incremental value.

    Parameters
    ----------
    customers : pandas.DataFrame
        One row per customer. ``customer_id`` is required; every other column is optional and may
        contain NaN: ``customer_name``, ``gender``, ``segment`` (a code of
        :data:`revopt.segments.SEGMENT_CODES`), ``churn_probability``, ``p_alive``, ``clv`` (CNY of
        margin over the horizon), ``expected_purchases``, ``cross_sell_product_name``,
        ``cross_sell_price``, ``cross_sell_score`` (0-1), ``upsell_product_name``, ``upsell_price``,
        ``upsell_from_product_name``, ``upsell_from_price``, ``replenish_product_name``,
        ``replenish_price``, ``replenish_due_date``. Other columns are ignored.
    config : ActionConfig, optional
        Default: :func:`load_action_config` with no user file.
    as_of : datetime.date, optional
        The send date. With it, replenishment goes only to items due within ``days_before_due``
        days; without it, every listed replenishment item counts as due.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``customers``. Columns: ``customer_id``, ``customer_name``, ``gender``,
        ``next_best_action``, ``action_value`` and ``coupon_value`` (CNY, both 0 for no_contact),
        ``action_product_name`` and ``action_product_price`` (NaN unless the action offers a
        product), ``upsell_from_product_name`` (set for upsell only). For audit, ``value_<action>``
        gives every contact action's value, NaN where the action is not available.

    Raises
    ------
    InputError
        If ``customer_id`` is missing, empty or repeated, a numeric column contains text, a
        probability or score is outside [0, 1], a price or ``expected_purchases`` is negative,
        any number is infinite, or a due date does not parse.

    Warns
    -----
    DataQualityWarning
        When the table has some of an action's input columns but not all, so the action is never
        chosen (for example ``upsell_price`` without ``upsell_from_price``).
    """
    config = load_action_config() if config is None else config
    values = _action_values(customers, config, as_of)
    _warn_unusable_actions(customers.columns)

    # Ties go to the action listed first in CONTACT_ACTIONS, because argmax returns the first maximum.
    filled = values.to_numpy(na_value=-np.inf)
    best = filled.argmax(axis=1)
    best_value = filled[np.arange(len(filled)), best]
    contact = best_value > 0.0
    chosen = np.where(contact, np.asarray(CONTACT_ACTIONS, dtype=object)[best], NO_CONTACT)

    result = pd.DataFrame(index=customers.index)
    result["customer_id"] = customers["customer_id"]
    for column in ("customer_name", "gender"):
        result[column] = customers[column] if column in customers.columns else np.nan
    result["next_best_action"] = chosen
    result["action_value"] = np.where(contact, best_value, 0.0)
    result["coupon_value"] = [config.actions[action].coupon_value if action != NO_CONTACT else 0.0
                              for action in chosen]
    result["action_product_name"] = _chosen_product(customers, chosen, 0)
    result["action_product_price"] = pd.to_numeric(_chosen_product(customers, chosen, 1)).astype("float64")
    result["upsell_from_product_name"] = (customers["upsell_from_product_name"].where(chosen == "upsell")
                                          if "upsell_from_product_name" in customers.columns else np.nan)
    for action in CONTACT_ACTIONS:
        result[f"value_{action}"] = values[action]

    counts = pd.Series(chosen).value_counts()
    log.info("next_best_actions_chosen customers=%d %s", len(result),
             " ".join(f"{action}={int(counts.get(action, 0))}" for action in ACTIONS))
    return result


def _chosen_product(customers: pd.DataFrame, chosen: np.ndarray, position: int) -> pd.Series:
    """Return the chosen action's product name (position 0) or price (position 1), NaN elsewhere."""
    product = pd.Series(np.nan, index=customers.index, dtype=object)
    for action, columns in PRODUCT_COLUMNS.items():
        selected = chosen == action
        if selected.any():
            product[selected] = customers.loc[selected, columns[position]]
    return product


def action_label(action: str, lang: str) -> str:
    """Return the display label of an action code in ``lang`` ("en" or "zh-CN").

    Raises
    ------
    ConfigError
        If the action is not one of :data:`ACTIONS` or the language is not supported.
    """
    language = detect_language(lang)
    if action not in ACTIONS:
        raise ConfigError(message_id="actions.unknown_action", action=repr(action), valid=", ".join(ACTIONS))
    return message(f"actions.label.{action}", language)
