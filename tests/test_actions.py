"""Next best action: expected values on hand-computed rows, the argmax, configuration and input checks."""

from __future__ import annotations

import datetime as dt
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from revopt.actions import (
    ACTIONS,
    CONTACT_ACTIONS,
    NO_CONTACT,
    action_label,
    choose_actions,
    load_action_config,
)
from revopt.errors import ConfigError, DataQualityWarning, InputError

AS_OF = dt.date(2025, 6, 1)

# Round settings so that every expected value below can be checked by hand.
# Expected cost = contact_cost + coupon_value * redemption_rate:
#   win_back 1 + 10 * 0.1 = 2, cross_sell 2, upsell 1 + 0 = 1, loyalty 1 + 20 * 0.5 = 11, replenishment 2.
HAND_CONFIG = """
margin_rate = 0.5

[win_back]
contact_cost = 1.0
coupon_value = 10.0
redemption_rate = 0.1
save_rate = 0.2
# Open to every customer, so that rows without a segment are valued too.
eligible_segments = []

[cross_sell]
contact_cost = 1.0
coupon_value = 10.0
redemption_rate = 0.1
response_rate = 0.5

[upsell]
contact_cost = 1.0
coupon_value = 0.0
redemption_rate = 0.1
response_rate = 0.5

[loyalty_invitation]
contact_cost = 1.0
coupon_value = 20.0
redemption_rate = 0.5
uplift_rate = 0.1
eligible_segments = []

[replenishment_reminder]
contact_cost = 1.0
coupon_value = 10.0
redemption_rate = 0.1
response_rate = 0.5
days_before_due = 7
"""


@pytest.fixture
def hand_config(tmp_path):
    path = tmp_path / "actions.toml"
    path.write_text(HAND_CONFIG, encoding="utf-8")
    return load_action_config(path)


def hand_rows() -> pd.DataFrame:
    """Seven customers: one per action and two for no_contact. EXPECTED_VALUES works out their values."""
    nan = np.nan
    return pd.DataFrame(
        {
            "customer_id": ["A", "B", "C", "D", "E", "F", "G"],
            "customer_name": ["王伟", "欧阳娜娜", "李娜", "", "张强", "刘芳", nan],
            "gender": ["男", "女", nan, nan, "M", "f", nan],
            "churn_probability": [0.6, 0.1, nan, 0.2, 0.0, 0.5, nan],
            "p_alive": [nan, nan, 0.9, nan, 1.0, nan, nan],
            "clv": [200.0, 1000.0, 50.0, 10.0, 0.0, 10.0, nan],
            "expected_purchases": [math.log(2), nan, nan, math.log(4), nan, math.log(2), nan],
            "cross_sell_product_name": ["蓝牙耳机", nan, "口红", nan, nan, "饼干", nan],
            "cross_sell_price": [100.0, nan, 200.0, nan, nan, 100.0, nan],
            "cross_sell_score": [0.4, nan, 0.8, nan, nan, 0.01, nan],
            "upsell_product_name": ["机械键盘", nan, nan, "精华液", nan, "升级版T恤", nan],
            "upsell_price": [300.0, nan, nan, 500.0, nan, 110.0, nan],
            "upsell_from_product_name": ["无线鼠标", nan, nan, "面膜", nan, "T恤", nan],
            "upsell_from_price": [200.0, nan, nan, 100.0, nan, 105.0, nan],
            "replenish_product_name": ["纸尿裤", nan, nan, nan, "咖啡豆", "抽纸", nan],
            "replenish_price": [50.0, nan, nan, nan, 100.0, 4.0, nan],
            "replenish_due_date": [nan, nan, nan, nan, "2025-06-04", nan, nan],
        }
    )


# Worked values (m = 0.5). NaN: the action has no product or lacks an input.
#   A: win_back 0.6*0.2*200 - 2 = 22; cross_sell 0.5*0.4*100*0.5 - 2 = 8;
#      upsell 0.5*(1 - 1/2)*(300 - 200)*0.5 - 1 = 11.5; loyalty 0.4*0.1*200 - 11 = -3;
#      replenishment 0.5*(1 - 0.6)*50*0.5 - 2 = 3.                           -> win_back
#   B: win_back 0.1*0.2*1000 - 2 = 18; loyalty 0.9*0.1*1000 - 11 = 79.      -> loyalty_invitation
#   C: churn = 1 - 0.9 = 0.1. win_back 0.1*0.2*50 - 2 = -1; loyalty 0.9*0.1*50 - 11 = -6.5;
#      cross_sell 0.5*0.8*200*0.5 - 2 = 38.                                  -> cross_sell
#   D: win_back 0.2*0.2*10 - 2 = -1.6; loyalty 0.8*0.1*10 - 11 = -10.2;
#      upsell 0.5*(1 - 1/4)*(500 - 100)*0.5 - 1 = 74.                        -> upsell
#   E: win_back -2; loyalty 1*0.1*0 - 11 = -11; replenishment 0.5*1*100*0.5 - 2 = 23. -> replenishment
#   F: win_back 0.5*0.2*10 - 2 = -1; loyalty 0.5*0.1*10 - 11 = -10.5; cross_sell 0.5*0.01*100*0.5 - 2 = -1.75;
#      upsell 0.5*0.5*5*0.5 - 1 = -0.375; replenishment 0.5*0.5*4*0.5 - 2 = -1.5. -> no_contact
#   G: nothing known, every value NaN.                                       -> no_contact
EXPECTED_VALUES = {
    "A": {"win_back": 22.0, "cross_sell": 8.0, "upsell": 11.5, "loyalty_invitation": -3.0,
          "replenishment_reminder": 3.0},
    "B": {"win_back": 18.0, "cross_sell": np.nan, "upsell": np.nan, "loyalty_invitation": 79.0,
          "replenishment_reminder": np.nan},
    "C": {"win_back": -1.0, "cross_sell": 38.0, "upsell": np.nan, "loyalty_invitation": -6.5,
          "replenishment_reminder": np.nan},
    "D": {"win_back": -1.6, "cross_sell": np.nan, "upsell": 74.0, "loyalty_invitation": -10.2,
          "replenishment_reminder": np.nan},
    "E": {"win_back": -2.0, "cross_sell": np.nan, "upsell": np.nan, "loyalty_invitation": -11.0,
          "replenishment_reminder": 23.0},
    "F": {"win_back": -1.0, "cross_sell": -1.75, "upsell": -0.375, "loyalty_invitation": -10.5,
          "replenishment_reminder": -1.5},
    "G": {action: np.nan for action in CONTACT_ACTIONS},
}
EXPECTED_CHOICE = {
    "A": ("win_back", 22.0, 10.0, None),
    "B": ("loyalty_invitation", 79.0, 20.0, None),
    "C": ("cross_sell", 38.0, 10.0, "口红"),
    "D": ("upsell", 74.0, 0.0, "精华液"),
    "E": ("replenishment_reminder", 23.0, 10.0, "咖啡豆"),
    "F": (NO_CONTACT, 0.0, 0.0, None),
    "G": (NO_CONTACT, 0.0, 0.0, None),
}


def by_id(result: pd.DataFrame) -> pd.DataFrame:
    return result.set_index("customer_id")


# ---------------------------------------------------------------------------------------------
# Expected values and the choice
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("customer", sorted(EXPECTED_VALUES))
def test_values_match_hand_computation(hand_config, customer):
    result = by_id(choose_actions(hand_rows(), hand_config))
    for action, expected in EXPECTED_VALUES[customer].items():
        got = result.loc[customer, f"value_{action}"]
        if np.isnan(expected):
            assert np.isnan(got), f"{customer} {action}: expected NaN, got {got}"
        else:
            assert got == pytest.approx(expected, abs=1e-9), f"{customer} {action}"


@pytest.mark.parametrize("customer", sorted(EXPECTED_CHOICE))
def test_choice_is_argmax(hand_config, customer):
    action, value, coupon, product = EXPECTED_CHOICE[customer]
    row = by_id(choose_actions(hand_rows(), hand_config)).loc[customer]
    assert row["next_best_action"] == action
    assert row["action_value"] == pytest.approx(value, abs=1e-9)
    assert row["coupon_value"] == coupon
    if product is None:
        assert pd.isna(row["action_product_name"])
    else:
        assert row["action_product_name"] == product


def test_no_contact_when_nothing_pays(hand_config):
    result = by_id(choose_actions(hand_rows(), hand_config))
    values = result.loc["F", [f"value_{action}" for action in CONTACT_ACTIONS]]
    assert values.notna().all()
    assert (values < 0).all()
    assert result.loc["F", "next_best_action"] == NO_CONTACT


def test_output_columns_and_index(hand_config):
    customers = hand_rows()
    customers.index = [10, 11, 12, 13, 14, 15, 16]
    before = customers.copy()
    result = choose_actions(customers, hand_config)
    assert list(result.index) == [10, 11, 12, 13, 14, 15, 16]
    assert list(result.columns[:9]) == [
        "customer_id", "customer_name", "gender", "next_best_action", "action_value", "coupon_value",
        "action_product_name", "action_product_price", "upsell_from_product_name",
    ]
    assert list(result.columns[9:]) == [f"value_{action}" for action in CONTACT_ACTIONS]
    pd.testing.assert_frame_equal(customers, before)


def test_product_price_and_from_product(hand_config):
    result = by_id(choose_actions(hand_rows(), hand_config))
    assert result.loc["C", "action_product_price"] == 200.0
    assert result.loc["D", "action_product_price"] == 500.0
    assert result.loc["D", "upsell_from_product_name"] == "面膜"
    # A has an upsell candidate but wins with win_back, so no from-product is carried.
    assert pd.isna(result.loc["A", "upsell_from_product_name"])
    assert pd.isna(result.loc["A", "action_product_price"])


def test_tie_goes_to_first_action(hand_config):
    # win_back 0.5*0.2*100 - 2 = 8 and cross_sell 0.5*0.4*100*0.5 - 2 = 8.
    customers = pd.DataFrame({
        "customer_id": ["T"], "churn_probability": [0.5], "clv": [100.0],
        "cross_sell_product_name": ["口红"], "cross_sell_price": [100.0], "cross_sell_score": [0.4],
    })
    row = choose_actions(customers, hand_config).iloc[0]
    assert row["value_win_back"] == pytest.approx(row["value_cross_sell"])
    assert row["next_best_action"] == "win_back"


def test_product_without_name_is_unavailable(hand_config):
    customers = hand_rows()
    customers.loc[customers["customer_id"] == "C", "cross_sell_product_name"] = "  "
    row = by_id(choose_actions(customers, hand_config)).loc["C"]
    assert np.isnan(row["value_cross_sell"])
    assert row["next_best_action"] == NO_CONTACT


def test_replenishment_waits_for_due_date(hand_config):
    customers = hand_rows()
    # E is due 2025-06-04: within 7 days of 2025-06-01, but not of 2025-05-20.
    due_soon = by_id(choose_actions(customers, hand_config, as_of=AS_OF)).loc["E"]
    too_early = by_id(choose_actions(customers, hand_config, as_of=dt.date(2025, 5, 20))).loc["E"]
    assert due_soon["next_best_action"] == "replenishment_reminder"
    assert np.isnan(too_early["value_replenishment_reminder"])
    assert too_early["next_best_action"] == NO_CONTACT
    # A has no due date, so it counts as due whatever the date.
    assert by_id(choose_actions(customers, hand_config, as_of=dt.date(2025, 5, 20))).loc[
        "A", "value_replenishment_reminder"] == pytest.approx(3.0)


def test_eligible_segments_restrict_action(tmp_path):
    path = tmp_path / "actions.toml"
    path.write_text(HAND_CONFIG.replace("uplift_rate = 0.1\neligible_segments = []", 'uplift_rate = 0.1\neligible_segments = ["champions"]'),
                    encoding="utf-8")
    config = load_action_config(path)
    customers = hand_rows()
    customers["segment"] = ["at_risk", "loyal", "new", "new", "champions", "lost", np.nan]
    result = by_id(choose_actions(customers, config))
    # B is "loyal", so loyalty (79) is unavailable and win_back (18) is next best.
    assert np.isnan(result.loc["B", "value_loyalty_invitation"])
    assert result.loc["B", "next_best_action"] == "win_back"
    assert result.loc["B", "action_value"] == pytest.approx(18.0)
    assert result.loc["E", "value_loyalty_invitation"] == pytest.approx(-11.0)


def test_missing_optional_columns(hand_config):
    # No product columns at all: the table offers no product actions, which is not worth a warning.
    customers = pd.DataFrame({"customer_id": ["x", "y"], "p_alive": [0.2, 0.95], "clv": [500.0, 800.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataQualityWarning)
        result = by_id(choose_actions(customers, hand_config))
    # x: churn 0.8, win_back 0.8*0.2*500 - 2 = 78; y: loyalty 0.95*0.1*800 - 11 = 65.
    assert result.loc["x", "next_best_action"] == "win_back"
    assert result.loc["x", "action_value"] == pytest.approx(78.0)
    assert result.loc["y", "next_best_action"] == "loyalty_invitation"
    assert result.loc["y", "action_value"] == pytest.approx(65.0)
    assert result["customer_name"].isna().all()


def test_upsell_without_from_price_warns(hand_config):
    customers = hand_rows().drop(columns="upsell_from_price")
    with pytest.warns(DataQualityWarning, match="no upsell_from_price, so upsell cannot be valued") as caught:
        result = by_id(choose_actions(customers, hand_config))
    assert len(caught) == 1
    assert result["value_upsell"].isna().all()
    assert result.loc["D", "next_best_action"] == NO_CONTACT


def test_clv_without_probabilities_warns_once(hand_config):
    customers = pd.DataFrame({"customer_id": ["x"], "clv": [100.0]})
    with pytest.warns(DataQualityWarning, match="no churn_probability or p_alive, so win_back, loyalty_invitation") as caught:
        result = choose_actions(customers, hand_config)
    assert len(caught) == 1
    assert result.loc[0, "next_best_action"] == NO_CONTACT


def test_complete_table_does_not_warn(hand_config):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataQualityWarning)
        choose_actions(hand_rows(), hand_config)


def test_action_labels():
    for action in ACTIONS:
        assert action_label(action, "en")
        assert action_label(action, "zh-CN") != action_label(action, "en")
    assert action_label("win_back", "zh-CN") == "流失挽回优惠"
    with pytest.raises(ConfigError, match="valid actions: win_back"):
        action_label("discount", "en")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def test_default_config_complete():
    config = load_action_config()
    assert set(config.actions) == set(CONTACT_ACTIONS)
    assert 0 < config.margin_rate <= 1
    for settings in config.actions.values():
        assert settings.contact_cost >= 0
        assert 0 <= settings.effect_rate <= 1
    assert config.actions["replenishment_reminder"].days_before_due == 7
    assert config.sources == ("revopt/config/actions.toml",)


def test_user_file_overrides_by_key(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("[win_back]\ncoupon_value = 30\n", encoding="utf-8")
    default = load_action_config()
    config = load_action_config(path)
    assert config.actions["win_back"].coupon_value == 30.0
    assert config.actions["win_back"].effect_rate == default.actions["win_back"].effect_rate
    assert config.actions["win_back"].contact_cost == default.actions["win_back"].contact_cost
    assert config.actions["cross_sell"] == default.actions["cross_sell"]
    assert config.margin_rate == default.margin_rate
    assert config.sources == ("revopt/config/actions.toml", str(path))


def test_config_is_read_only():
    config = load_action_config()
    with pytest.raises(TypeError):
        config.actions["win_back"] = None


BAD_CONFIGS = [
    ("unknown_top_key", "discount_rate = 0.1", "unknown setting discount_rate"),
    ("unknown_action", "[flash_sale]\ncontact_cost = 1", "unknown setting flash_sale"),
    ("no_contact_table", "[no_contact]\ncontact_cost = 1", "unknown setting no_contact"),
    ("unknown_action_key", "[win_back]\nresponse_rate = 0.2", "unknown setting win_back.response_rate.*save_rate"),
    ("negative_cost", "[cross_sell]\ncontact_cost = -0.1", "cross_sell.contact_cost .*0 or more; got -0.1"),
    ("negative_coupon", "[upsell]\ncoupon_value = -5", "upsell.coupon_value .*got -5"),
    ("infinite_coupon", "[upsell]\ncoupon_value = inf", "upsell.coupon_value .*got inf"),
    ("rate_above_one", "[win_back]\nredemption_rate = 1.5", "win_back.redemption_rate .*between 0 and 1; got 1.5"),
    ("rate_below_zero", "[loyalty_invitation]\nuplift_rate = -0.2", "loyalty_invitation.uplift_rate .*got -0.2"),
    ("rate_nan", "[cross_sell]\nresponse_rate = nan", "cross_sell.response_rate .*got nan"),
    ("margin_above_one", "margin_rate = 30", "margin_rate .*between 0 and 1; got 30"),
    ("text_value", '[win_back]\ncontact_cost = "0.05"', "win_back.contact_cost must be a number; got '0.05'"),
    ("boolean_value", "[win_back]\nsave_rate = true", "win_back.save_rate must be a number; got True"),
    ("not_a_table", "win_back = 3", r"win_back must be a table of settings written as \[win_back\]"),
    ("due_days_float", "[replenishment_reminder]\ndays_before_due = 2.5", "days_before_due must be a whole number"),
    ("due_days_negative", "[replenishment_reminder]\ndays_before_due = -1", "days_before_due .*got -1"),
    ("due_days_elsewhere", "[win_back]\ndays_before_due = 3", "unknown setting win_back.days_before_due"),
    ("unknown_segment", '[win_back]\neligible_segments = ["vip"]', "'vip' is not one. Valid codes: champions"),
    ("segments_not_list", '[win_back]\neligible_segments = "lost"', "eligible_segments must be a list"),
    ("bad_toml", "[win_back\ncoupon_value = 1", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "match"), [case[1:] for case in BAD_CONFIGS], ids=[case[0] for case in BAD_CONFIGS])
def test_config_errors_name_key_and_file(tmp_path, text, match):
    path = tmp_path / "bad_actions.toml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=match) as raised:
        load_action_config(path)
    assert str(path) in str(raised.value)
    assert raised.value.message_id.startswith("actions.config.")
    assert raised.value.localized("zh-CN") != str(raised.value)


def test_config_not_utf8(tmp_path):
    path = tmp_path / "gbk.toml"
    path.write_bytes("# 优惠券设置\n[win_back]\ncoupon_value = 30\n".encode("gbk"))
    with pytest.raises(ConfigError, match=r"gbk.toml: byte 2 is not valid UTF-8"):
        load_action_config(path)


def test_config_missing_file(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="no such file"):
        load_action_config(path)


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def test_missing_customer_id_column(hand_config):
    with pytest.raises(InputError, match="no customer_id column; columns found: clv"):
        choose_actions(pd.DataFrame({"clv": [1.0]}), hand_config)


@pytest.mark.filterwarnings("ignore::revopt.errors.DataQualityWarning")
def test_duplicate_customer_ids(hand_config):
    customers = pd.DataFrame({"customer_id": ["a", "b", "a", "c", "c"], "clv": [1.0] * 5})
    with pytest.raises(InputError, match="2 customer ids appear more than once.*a, c"):
        choose_actions(customers, hand_config)


@pytest.mark.filterwarnings("ignore::revopt.errors.DataQualityWarning")
def test_empty_customer_ids(hand_config):
    customers = pd.DataFrame({"customer_id": ["a", None, " "], "clv": [1.0] * 3})
    with pytest.raises(InputError, match="2 rows .* empty customer_id"):
        choose_actions(customers, hand_config)


BAD_INPUTS = [
    ("probability_above_one", "churn_probability", [0.5, 1.2, 0.1], r"churn_probability must be in \[0, 1\]; 1 customers.*b"),
    ("negative_p_alive", "p_alive", [-0.1, 0.5, 0.5], r"p_alive must be in \[0, 1\].*a"),
    ("score_above_one", "cross_sell_score", [2.0, 0.5, 3.0], r"cross_sell_score must be in \[0, 1\]; 2 customers.*a, c"),
    ("negative_price", "upsell_price", [10.0, -1.0, 5.0], r"upsell_price must be in \[0, inf\]"),
    ("negative_purchases", "expected_purchases", [0.0, 1.0, -2.0], r"expected_purchases must be in \[0, inf\]"),
    ("infinite_clv", "clv", [np.inf, 1.0, 1.0], r"clv must be in \[-inf, inf\]; 1 customers.*a"),
    ("text_in_numbers", "clv", ["12", "abc", None], r"clv has 1 values that are not numbers.*b"),
    ("bad_due_date", "replenish_due_date", ["2025-06-01", "soon", None], r"replenish_due_date has 1 values that are not dates.*b"),
]


# The one-column tables also lack other inputs; that warning is tested in test_upsell_without_from_price_warns.
@pytest.mark.filterwarnings("ignore::revopt.errors.DataQualityWarning")
@pytest.mark.parametrize(("column", "values", "match"), [case[1:] for case in BAD_INPUTS],
                         ids=[case[0] for case in BAD_INPUTS])
def test_input_errors_name_column(hand_config, column, values, match):
    customers = pd.DataFrame({"customer_id": ["a", "b", "c"], column: values})
    with pytest.raises(InputError, match=match):
        choose_actions(customers, hand_config)


# ---------------------------------------------------------------------------------------------
# A demo shop's customers under the default settings
# ---------------------------------------------------------------------------------------------

DEMO_MARGIN = 0.3
HORIZON_WEEKS = 52


def demo_customers() -> tuple[pd.DataFrame, dt.date]:
    """Build the action inputs for a small demo shop: BG/NBD scores and simple product picks.

    The picks are plain pandas rules on the order lines in place of a recommender. Cross-sell is
    the best seller of the most popular category the customer never bought, scored by the share of
    customers who buy that category. Upsell is the cheapest item at least half again as dear as the
    customer's last item, in the same category. Replenishment is the latest item the customer
    bought on two or more days, due one average gap after its last purchase.
    """
    from revopt.demo import STATUS_COMPLETED, DemoParameters, generate_shop
    from revopt.models import BetaGeoModel

    shop = generate_shop(DemoParameters(n_customers=400, seed=11))
    orders = shop.orders[(shop.orders["订单状态"] == STATUS_COMPLETED) & (shop.orders["买家会员名"] != "")]
    lines = orders.drop_duplicates().rename(columns={
        "订单编号": "order_id", "买家会员名": "customer_id", "收货人姓名": "customer_name", "性别": "gender",
        "下单时间": "time", "商品名称": "product", "类目": "category", "单价": "price", "实付金额": "amount",
    })
    lines["day"] = lines["time"].dt.normalize()
    end = shop.parameters.end

    # BG/NBD on purchase days, in weeks
    days = lines.groupby(["customer_id", "day"], as_index=False)["amount"].sum()
    per_customer = days.groupby("customer_id").agg(first=("day", "min"), last=("day", "max"),
                                                   n_days=("day", "size"), spend=("amount", "mean"))
    week = pd.Timedelta(days=7)
    frequency = per_customer["n_days"] - 1
    recency = (per_customer["last"] - per_customer["first"]) / week
    age = (pd.Timestamp(end) - per_customer["first"]) / week
    model = BetaGeoModel().fit(frequency, recency, age)
    p_alive = model.probability_alive(frequency, recency, age)
    expected = model.expected_purchases(HORIZON_WEEKS, frequency, recency, age)
    frame = pd.DataFrame({
        "customer_id": per_customer.index,
        "p_alive": p_alive,
        "expected_purchases": expected,
        "clv": expected * per_customer["spend"].to_numpy() * DEMO_MARGIN,
    })
    people = lines.drop_duplicates("customer_id").set_index("customer_id")[["customer_name", "gender"]]
    frame = frame.join(people, on="customer_id")

    # Cross-sell
    buyers = lines.groupby("category")["customer_id"].nunique().sort_values(ascending=False)
    best_seller = lines.groupby(["category", "product"]).size().sort_values(ascending=False).reset_index()
    best_seller = best_seller.drop_duplicates("category").set_index("category")["product"]
    typical_price = lines.groupby("product")["price"].median()
    bought = lines.groupby("customer_id")["category"].agg(set)
    new_category = bought.map(lambda seen: next((c for c in buyers.index if c not in seen), None))
    frame["cross_sell_product_name"] = frame["customer_id"].map(new_category.map(best_seller))
    frame["cross_sell_price"] = frame["cross_sell_product_name"].map(typical_price)
    frame["cross_sell_score"] = frame["customer_id"].map(new_category.map(buyers / len(per_customer)))

    # Upsell
    last_line = lines.sort_values("time").drop_duplicates("customer_id", keep="last").set_index("customer_id")
    catalogue = lines.groupby(["category", "product"])["price"].median().reset_index()
    upsell = {}
    for customer, line in last_line.iterrows():
        dearer = catalogue[(catalogue["category"] == line["category"]) & (catalogue["price"] >= 1.5 * line["price"])]
        if len(dearer):
            pick = dearer.loc[dearer["price"].idxmin()]
            upsell[customer] = (pick["product"], pick["price"], line["product"], line["price"])
    picks = pd.DataFrame.from_dict(upsell, orient="index", columns=[
        "upsell_product_name", "upsell_price", "upsell_from_product_name", "upsell_from_price"])
    frame = frame.join(picks, on="customer_id")

    # Replenishment
    product_days = lines.drop_duplicates(["customer_id", "product", "day"])
    repeats = product_days.groupby(["customer_id", "product"]).agg(
        n=("day", "size"), first=("day", "min"), last=("day", "max"), price=("price", "median"))
    repeats = repeats[repeats["n"] >= 2].reset_index().sort_values("last").drop_duplicates("customer_id", keep="last")
    repeats["due"] = repeats["last"] + (repeats["last"] - repeats["first"]) / (repeats["n"] - 1)
    repeats = repeats.set_index("customer_id")
    frame["replenish_product_name"] = frame["customer_id"].map(repeats["product"])
    frame["replenish_price"] = frame["customer_id"].map(repeats["price"])
    frame["replenish_due_date"] = frame["customer_id"].map(repeats["due"])
    return frame, end


def test_demo_shop_action_mix():
    customers, end = demo_customers()
    result = choose_actions(customers, as_of=end)
    counts = result["next_best_action"].value_counts()
    assert len(result) == len(customers)
    assert (counts.drop(NO_CONTACT, errors="ignore") > 0).sum() >= 3, counts.to_dict()
    assert counts.get(NO_CONTACT, 0) < len(result), counts.to_dict()

    values = result[[f"value_{action}" for action in CONTACT_ACTIONS]]
    contacted = result["next_best_action"] != NO_CONTACT
    assert (result.loc[contacted, "action_value"] > 0).all()
    assert np.allclose(result.loc[contacted, "action_value"], values[contacted].max(axis=1))
    assert not (values[~contacted] > 0).any().any()
