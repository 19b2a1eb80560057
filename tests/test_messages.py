"""Personalised SMS texts: salutations, every action in both languages, and clean output."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from revopt.actions import CONTACT_ACTIONS, NO_CONTACT
from revopt.errors import ConfigError, InputError
from revopt.messages import format_coupon, preview, render_message, render_messages, salutation

CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
LEFTOVERS = ("None", "none", "nan", "NaN", "<NA>", "NaT", "{{", "}}", "{%", "%}", "{#")
# One SMS segment carries 70 UCS-2 characters (Chinese) or 160 GSM-7 characters.
ZH_SEGMENT = 70
EN_SEGMENT = 160

SALUTATIONS = [
    ("王伟", "男", "zh-CN", "王先生"),
    ("欧阳娜娜", "女", "zh-CN", "欧阳女士"),
    ("李娜", np.nan, "zh-CN", "李娜"),
    ("李娜", "", "zh-CN", "李娜"),
    ("李娜", "未知", "zh-CN", "李娜"),
    ("", "女", "zh-CN", "亲爱的顾客"),
    (None, None, "zh-CN", "亲爱的顾客"),
    (np.nan, "男", "zh-CN", "亲爱的顾客"),
    ("司马光", "M", "zh-CN", "司马先生"),
    ("诸葛亮", "male", "zh-CN", "诸葛先生"),
    ("上官婉儿", "FEMALE", "zh-CN", "上官女士"),
    ("歐陽修", "Male", "zh-CN", "歐陽先生"),
    ("张敏", " f ", "zh-CN", "张女士"),
    ("欧阳", "男", "zh-CN", "欧先生"),  # two characters: single surname 欧, given name 阳
    ("王 伟\n", "男", "zh-CN", "王先生"),
    ("王\u200b伟", "男", "zh-CN", "王先生"),
    ("John Smith", "M", "zh-CN", "John Smith先生"),
    ("王伟", "男", "en", "王伟"),
    ("王伟", np.nan, "en", "王伟"),
    ("Wang", "female", "en", "Ms Wang"),
    ("Wang, Wei", "m", "en", "Mr Wang"),
    ("Wei Wang", "M", "en", "Mr Wei Wang"),
    ("José Núñez", "男", "en", "Mr José Núñez"),
    ("John Smith", np.nan, "en", "John Smith"),
    ("", "M", "en", "customer"),
    (None, None, "en", "customer"),
    ("迪丽热巴·迪力木拉提", "女", "zh-CN", "迪丽热巴·迪力木拉提"),
]


@pytest.mark.parametrize(("name", "gender", "lang", "expected"), SALUTATIONS,
                         ids=[f"{case[2]}-{case[0]!r}-{case[1]!r}" for case in SALUTATIONS])
def test_salutation(name, gender, lang, expected):
    assert salutation(name, gender, lang) == expected


@pytest.mark.parametrize(("value", "lang", "expected"), [
    (20, "zh-CN", "20元"), (20.0, "en", "¥20"), (12.5, "zh-CN", "12.50元"), (12.5, "en", "¥12.50"),
    (0, "en", ""), (np.nan, "zh-CN", ""), (None, "en", ""), (-5, "en", ""),
])
def test_format_coupon(value, lang, expected):
    assert format_coupon(value, lang) == expected


def customer_rows() -> pd.DataFrame:
    """Every contact action for a known man, a woman with a compound surname, an unknown gender and no name."""
    people = [("c1", "王伟", "男"), ("c2", "欧阳娜娜", "F"), ("c3", "李娜", np.nan), ("c4", np.nan, np.nan)]
    product = {"cross_sell": "蓝牙耳机", "upsell": "旗舰款机械键盘", "replenishment_reminder": "纸尿裤"}
    rows = []
    for action in CONTACT_ACTIONS:
        for customer, name, gender in people:
            rows.append({
                "customer_id": f"{customer}-{action}",
                "customer_name": name,
                "gender": gender,
                "next_best_action": action,
                "coupon_value": 20.0,
                "action_product_name": product.get(action, np.nan),
                "upsell_from_product_name": "机械键盘" if action == "upsell" else np.nan,
            })
    rows.append({"customer_id": "c5", "customer_name": "赵敏", "gender": "女", "next_best_action": NO_CONTACT,
                 "coupon_value": 0.0, "action_product_name": np.nan, "upsell_from_product_name": np.nan})
    return pd.DataFrame(rows)


def own_text(row: dict) -> list[str]:
    """The names and products that a message may carry in their own script."""
    return [str(row[key]) for key in ("customer_name", "action_product_name", "upsell_from_product_name")
            if isinstance(row[key], str)]


@pytest.mark.parametrize("shop_name", [None, "小美优选"])
def test_every_action_both_languages(shop_name):
    frame = customer_rows()
    for lang in ("zh-CN", "en"):
        texts = render_messages(frame, lang, shop_name=shop_name)
        for row, text in zip(frame.to_dict(orient="records"), texts):
            if row["next_best_action"] == NO_CONTACT:
                assert pd.isna(text)
                continue
            assert text.strip(), row["customer_id"]
            assert "\n" not in text
            for leftover in LEFTOVERS:
                assert leftover not in text, (row["customer_id"], lang, text)
            if isinstance(row["action_product_name"], str):
                assert row["action_product_name"] in text
            if lang == "zh-CN":
                assert CJK.search(text), text
                assert "20元" in text
                assert len(text) <= ZH_SEGMENT, (len(text), text)
            else:
                stripped = text
                for own in own_text(row):
                    stripped = stripped.replace(own, "")
                if shop_name:
                    stripped = stripped.replace(shop_name, "")
                assert not CJK.search(stripped), text
                assert "¥20" in text
                assert len(text) <= EN_SEGMENT, (len(text), text)


def test_greetings_in_messages():
    frame = customer_rows()
    zh = render_messages(frame, "zh-CN").tolist()
    en = render_messages(frame, "en").tolist()
    assert zh[0].startswith("王先生，您好！")
    assert zh[1].startswith("欧阳女士，您好！")
    assert zh[2].startswith("李娜，您好！")
    assert zh[3].startswith("亲爱的顾客，您好！")
    assert en[0].startswith("Dear 王伟,")
    assert en[3].startswith("Dear customer,")


def test_upsell_names_both_products():
    row = customer_rows().set_index("customer_id").loc["c1-upsell"].to_dict()
    for lang in ("zh-CN", "en"):
        text = render_message(row, "upsell", lang)
        assert "旗舰款机械键盘" in text
        assert "买过机械键盘的您" in text if lang == "zh-CN" else "enjoy 机械键盘?" in text
    row["upsell_from_product_name"] = np.nan
    assert "升级款旗舰款机械键盘" in render_message(row, "upsell", "zh-CN")
    assert "None" not in render_message(row, "upsell", "en")


def test_no_coupon_leaves_out_offer():
    frame = customer_rows()
    frame["coupon_value"] = 0.0
    for lang, word in (("zh-CN", "元"), ("en", "¥")):
        for text in render_messages(frame, lang).dropna():
            assert word not in text, text
            for leftover in LEFTOVERS:
                assert leftover not in text


def test_shop_signature():
    row = customer_rows().iloc[0].to_dict()
    assert render_message(row, "win_back", "zh-CN", shop_name="小美优选").startswith("【小美优选】王先生")
    assert render_message(row, "win_back", "en", shop_name="Xiaomei").startswith("[Xiaomei] Dear 王伟")


def test_hostile_fields_stay_on_one_line():
    row = {"customer_id": "x", "customer_name": "王伟\r\n回复1领奖\x07", "gender": "男", "coupon_value": 5,
           "action_product_name": "口红\n{{ coupon }}\u202e", "upsell_from_product_name": None}
    for lang in ("zh-CN", "en"):
        text = render_message(row, "cross_sell", lang)
        assert "\n" not in text
        assert "\r" not in text
        assert not any(ord(char) < 32 or char == "\u202e" for char in text)
        # The product's braces are printed as written, never evaluated as a template.
        assert "口红 {{ coupon }}" in text


def test_no_contact_has_no_message():
    row = customer_rows().iloc[-1].to_dict()
    assert render_message(row, NO_CONTACT, "zh-CN") is None
    series = render_messages(customer_rows(), "en")
    assert series.dtype == "string"
    assert series.isna().sum() == 1


def test_missing_product_raises():
    row = customer_rows().iloc[0].to_dict()
    with pytest.raises(InputError, match="c1-win_back: the cross_sell message needs a product name"):
        render_message(row, "cross_sell", "en")


def test_unknown_action_or_language():
    row = customer_rows().iloc[0].to_dict()
    with pytest.raises(ConfigError, match="no message template for action 'discount'"):
        render_message(row, "discount", "en")
    with pytest.raises(ConfigError, match="language 'fr'"):
        render_message(row, "win_back", "fr")


def test_preview_one_group_per_action():
    frame = customer_rows()
    samples = preview(frame, "zh-CN", n=2)
    assert [action for action, _, _ in samples] == [action for action in CONTACT_ACTIONS for _ in range(2)]
    assert samples[0][1] == "c1-win_back"
    assert samples[0][2].startswith("王先生")
    single = preview(frame[frame["next_best_action"].isin(["upsell", NO_CONTACT])], "en", n=3)
    assert [action for action, _, _ in single] == ["upsell"] * 3
    with pytest.raises(ConfigError, match=r"n must be in \[1, inf\]"):
        preview(frame, "en", n=0)


def test_render_does_not_touch_frame():
    frame = customer_rows()
    before = frame.copy()
    render_messages(frame, "zh-CN")
    preview(frame, "en")
    pd.testing.assert_frame_equal(frame, before)


@pytest.mark.parametrize(("currency", "zh", "en"), [
    ("CNY", "20元", "¥20"), ("GBP", "20英镑", "£20"), ("usd", "20美元", "$20"), ("SGD", "20SGD", "20 SGD"),
])
def test_coupon_in_the_run_currency(currency, zh, en):
    assert format_coupon(20, "zh-CN", currency) == zh
    assert format_coupon(20, "en", currency) == en


@pytest.mark.parametrize("gender", ["男士", "先生", "MALE"])
def test_more_male_gender_words(gender):
    assert salutation("李强", gender, "zh-CN") == "李先生"
