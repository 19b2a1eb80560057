"""Personalised SMS texts for the next best actions, in Simplified Chinese and English.

Each contact action has one Jinja2 template per language in ``revopt/templates/messages``, named
``<action>.<language>.j2``; ``no_contact`` has none. Templates receive already cleaned text:

* ``salutation``: how the customer is addressed (see :func:`salutation`);
* ``product`` and ``from_product``: the offered item and, for upsell, the item bought now;
* ``coupon``: the coupon value formatted for the language (``20元``, ``¥20``), empty for none;
* ``shop_name``: the sender's signature, empty to leave it out.

Autoescaping is off because the output is plain SMS text, not HTML. Names and product names lose
control and format characters, and line breaks and other whitespace runs become one space, so
that a field cannot break the one-line message or hide characters in it.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from functools import cache

import jinja2
import numpy as np
import pandas as pd

from revopt.actions import CONTACT_ACTIONS, NO_CONTACT
from revopt.errors import ConfigError, InputError, check_range
from revopt.i18n import detect_language

__all__ = ["COMPOUND_SURNAMES", "salutation", "format_coupon", "render_message", "render_messages", "preview"]

# Two-character surnames, in simplified and traditional forms. A name of three or more Han
# characters that starts with one of them has it as its surname (欧阳娜娜 -> 欧阳).
COMPOUND_SURNAMES = frozenset({
    "欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "令狐", "慕容", "尉迟", "长孙", "夏侯", "公孙",
    "司徒", "司空", "宇文", "澹台", "轩辕", "南宫", "西门", "独孤", "端木", "呼延", "闻人", "万俟",
    "申屠", "濮阳", "太史", "赫连", "钟离", "宗政", "公冶", "东郭", "百里", "拓跋", "第五", "左丘",
    "歐陽", "司馬", "諸葛", "東方", "長孫", "公孫", "軒轅", "南宮", "獨孤", "聞人", "尉遲", "鍾離",
    "東郭", "濮陽", "赫連",
})

_MALE = frozenset({"男", "男性", "男士", "先生", "m", "male", "man"})
_FEMALE = frozenset({"女", "女性", "女士", "小姐", "f", "female", "woman"})
_HONORIFIC = {"zh-CN": {"male": "先生", "female": "女士"}, "en": {"male": "Mr", "female": "Ms"}}
_NO_NAME = {"zh-CN": "亲爱的顾客", "en": "customer"}

# CJK Unified Ideographs with Extension A, the compatibility block and the supplementary planes.
_HAN_NAME = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+")
# Latin letters with the accented ranges, and the separators Western names use.
_LATIN_NAME = re.compile(r"[A-Za-z\u00c0-\u024f][A-Za-z\u00c0-\u024f .,'\-]*")
_WHITESPACE = re.compile(r"\s+")


def _text(value: object) -> str:
    """Return ``value`` as one clean line: "" for missing values, no control or format characters."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value)
    # Categories Cc (controls), Cf (format, such as zero-width joiners and direction marks), Cs,
    # Co and Cn. Line breaks are Cc or Zl/Zp and become spaces first.
    text = _WHITESPACE.sub(" ", text)
    text = "".join(char for char in text if not unicodedata.category(char).startswith("C"))
    return _WHITESPACE.sub(" ", text).strip()


def _gender(value: object) -> str | None:
    text = _text(value).lower()
    if text in _MALE:
        return "male"
    if text in _FEMALE:
        return "female"
    return None


def _surname(name: str) -> str | None:
    """Return the surname of a Han or Latin name, or None when the name has no clear surname."""
    if _HAN_NAME.fullmatch(name):
        if len(name) >= 3 and name[:2] in COMPOUND_SURNAMES:
            return name[:2]
        return name[0]
    if _LATIN_NAME.fullmatch(name):
        # "Wang, Wei" puts the surname first. Otherwise the order of a romanised name is unknown
        # ("Wang Wei" or "Wei Wang"), so the whole name follows the title.
        if "," in name:
            return name.split(",")[0].strip() or None
        return name
    return None


def salutation(name: object, gender: object, lang: str) -> str:
    """Return how a message addresses the customer.

    Parameters
    ----------
    name : str or None
        The customer's name as written; NaN or None when unknown.
    gender : str or None
        男/女, M/F or male/female in any case; anything else counts as unknown.
    lang : {"zh-CN", "en"}

    Returns
    -------
    str
        In zh-CN, surname and 先生/女士 where the gender is known (王伟 -> 王先生, 欧阳娜娜 ->
        欧阳女士), the full name where it is not, and 亲爱的顾客 without a name. In en, "Mr" or
        "Ms" before a name written in Latin letters where the gender is known, the name as written
        otherwise (王伟), and "customer" without a name, to follow "Dear".

    Examples
    --------
    >>> salutation("欧阳娜娜", "F", "zh-CN")
    '欧阳女士'
    >>> salutation("李娜", None, "zh-CN")
    '李娜'
    >>> salutation("Wang, Wei", "male", "en")
    'Mr Wang'
    """
    language = detect_language(lang)
    clean = _text(name)
    if not clean:
        return _NO_NAME[language]
    if _HAN_NAME.fullmatch(clean.replace(" ", "")):
        # Chinese names are written without spaces, so a space inside one is noise ("王 伟").
        clean = clean.replace(" ", "")
    gender_code = _gender(gender)
    surname = _surname(clean)
    if gender_code is None or surname is None:
        return clean
    title = _HONORIFIC[language][gender_code]
    if language == "zh-CN":
        return f"{surname}{title}"
    if _LATIN_NAME.fullmatch(clean):
        return f"{title} {surname}"
    return clean


# Names operators give the yuan besides its ISO code.
CNY_ALIASES = {"RMB": "CNY", "人民币": "CNY", "元": "CNY", "¥": "CNY", "￥": "CNY"}
# Currency symbols (en) and words (zh-CN) for coupon values; other ISO codes are written as the code.
_CURRENCY_SYMBOLS = {"CNY": "¥", "RMB": "¥", "USD": "$", "GBP": "£", "EUR": "€", "HKD": "HK$", "JPY": "¥"}
_CURRENCY_WORDS = {"CNY": "元", "RMB": "元", "USD": "美元", "GBP": "英镑", "EUR": "欧元", "HKD": "港元", "JPY": "日元"}


def format_coupon(value: object, lang: str, currency: str = "CNY") -> str:
    """Format a coupon value in ``currency`` for ``lang`` (``20元`` or ``¥20``); "" for none, 0 or NaN.

    Examples
    --------
    >>> format_coupon(20, "zh-CN"), format_coupon(12.5, "en"), format_coupon(0, "en")
    ('20元', '¥12.50', '')
    >>> format_coupon(5, "en", "GBP"), format_coupon(5, "zh-CN", "GBP"), format_coupon(5, "en", "SGD")
    ('£5', '5英镑', '5 SGD')
    """
    language = detect_language(lang)
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return ""
    if not (math.isfinite(amount) and amount > 0):
        return ""
    text = f"{amount:.0f}" if amount.is_integer() else f"{amount:.2f}"
    code = str(currency).strip().upper()
    code = CNY_ALIASES.get(code, code)
    if language == "zh-CN":
        return f"{text}{_CURRENCY_WORDS.get(code, code)}"
    symbol = _CURRENCY_SYMBOLS.get(code)
    return f"{symbol}{text}" if symbol else f"{text} {code}"


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("revopt", "templates/messages"),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
    )


def _field(row: Mapping, key: str) -> object:
    return row[key] if key in row else None


def render_message(row: Mapping, action: str, lang: str, *, shop_name: str | None = None,
                   currency: str = "CNY") -> str | None:
    """Render one customer's SMS text for ``action``.

    Parameters
    ----------
    row : Mapping
        One customer, such as a row of :func:`revopt.actions.choose_actions`: ``customer_id``,
        ``customer_name``, ``gender``, ``coupon_value`` (in ``currency``), ``action_product_name``
        and, for upsell, ``upsell_from_product_name``. Missing keys and NaN count as unknown.
    action : str
        One of :data:`revopt.actions.ACTIONS`.
    lang : {"zh-CN", "en"}
    shop_name : str, optional
        The shop's signature, written as 【shop】 in zh-CN and [shop] in en. Default: none.
    currency : str, default "CNY"
        ISO code of the coupon's currency (see :func:`format_coupon`).

    Returns
    -------
    str or None
        The message on one line, or None for ``no_contact``.

    Raises
    ------
    ConfigError
        If the action or the language is unknown.
    InputError
        If the action offers a product and ``action_product_name`` is empty.
    """
    language = detect_language(lang)
    if action == NO_CONTACT:
        return None
    if action not in CONTACT_ACTIONS:
        raise ConfigError(message_id="actions.message.unknown_action", action=repr(action),
                          valid=", ".join(CONTACT_ACTIONS))
    product = _text(_field(row, "action_product_name"))
    if action in ("cross_sell", "upsell", "replenishment_reminder") and not product:
        raise InputError(message_id="actions.message.missing_product", customer=_text(_field(row, "customer_id")),
                         action=action, column="action_product_name")

    template = _environment().get_template(f"{action}.{language}.j2")
    text = template.render(
        salutation=salutation(_field(row, "customer_name"), _field(row, "gender"), language),
        product=product,
        from_product=_text(_field(row, "upsell_from_product_name")),
        coupon=format_coupon(_field(row, "coupon_value"), language, currency),
        shop_name=_text(shop_name),
    )
    return _WHITESPACE.sub(" ", text).strip()


def render_messages(frame: pd.DataFrame, lang: str, *, shop_name: str | None = None,
                    currency: str = "CNY") -> pd.Series:
    """Render each row's message for its ``next_best_action``.

    Parameters
    ----------
    frame : pandas.DataFrame
        The output of :func:`revopt.actions.choose_actions`, or any frame with its columns.
    lang : {"zh-CN", "en"}
    shop_name : str, optional
        As in :func:`render_message`.

    Returns
    -------
    pandas.Series
        Indexed like ``frame``, dtype ``string``: the text, or ``<NA>`` for no_contact.
    """
    language = detect_language(lang)
    # Only contacted customers get a text, so the rows of no_contact (most customers of a large
    # shop) are never turned into dicts.
    contacted = (frame["next_best_action"] != NO_CONTACT).to_numpy()
    texts = np.full(len(frame), None, dtype=object)
    texts[contacted] = [
        render_message(row, row["next_best_action"], language, shop_name=shop_name, currency=currency)
        for row in frame[contacted].to_dict(orient="records")
    ]
    return pd.Series(texts, index=frame.index, dtype="string", name="message")


def preview(
    frame: pd.DataFrame, lang: str, n: int = 3, *, shop_name: str | None = None
) -> list[tuple[str, object, str]]:
    """Return sample messages: up to ``n`` customers for each contact action present in ``frame``.

    Parameters
    ----------
    frame : pandas.DataFrame
        As in :func:`render_messages`.
    lang : {"zh-CN", "en"}
    n : int, default 3
        Customers per action, taken in the order of ``frame``.
    shop_name : str, optional
        As in :func:`render_message`.

    Returns
    -------
    list of (action, customer_id, text)
        Grouped by action in the order of :data:`revopt.actions.CONTACT_ACTIONS`.
    """
    language = detect_language(lang)
    check_range("n", n, low=1)
    samples = []
    for action in CONTACT_ACTIONS:
        rows = frame[frame["next_best_action"] == action].head(n)
        for row in rows.to_dict(orient="records"):
            samples.append((action, row["customer_id"],
                            render_message(row, action, language, shop_name=shop_name)))
    return samples
