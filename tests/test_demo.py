"""Tests of the synthetic demo shop in revopt.demo.

The recovery tests fit BG/NBD and Gamma-Gamma by maximum likelihood with code written here, not
with revopt.models, so that they check the generator on its own. The log-likelihoods are those of
Fader, Hardie and Lee (2005), "Counting your customers the easy way", Marketing Science 24(2)
(BG/NBD), and Fader, Hardie and Lee (2005), "RFM and CLV", Journal of Marketing Research 42(4)
(Gamma-Gamma).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from scipy.special import gammaln

from revopt.demo import (
    COMPLEMENT_GROUPS,
    ORDER_COLUMNS,
    REPLENISHMENT_CYCLE_DAYS,
    STATUS_CLOSED,
    STATUS_COMPLETED,
    STATUS_REFUNDED,
    TRUTH_FILE_NAME,
    DemoParameters,
    generate_shop,
    write_export,
)
from revopt.errors import ConfigError

DAYS_PER_WEEK = 7.0
CENTS_PER_YUAN = 100
# An unbiased fit puts a parameter outside three standard errors with probability 0.3%.
RECOVERY_TOLERANCE_SE = 3.0
# Noise counts are binomial, and four standard deviations keep false alarms below 1 in 10,000.
NOISE_TOLERANCE_SD = 4.0
# Central differences with steps of 1e-4 of each parameter. The steps are small against the
# standard errors (1-6% of the estimates here) and large against rounding in a sum of ~1e5 terms.
HESSIAN_RELATIVE_STEP = 1e-4

SMALL = DemoParameters(n_customers=2_000, seed=7)
NO_NOISE = dataclasses.replace(SMALL, cancelled_share=0.0, refunded_share=0.0, guest_share=0.0, duplicate_share=0.0)
# The default shop with products drawn by taste and price band only.
NO_BASKET_EFFECTS = {
    "complement_probability": 0.0,
    "next_order_complement_probability": 0.0,
    "replenish_probability": 0.0,
}
TIER_ORDER = ("入门款", "经典款", "升级版", "旗舰款")
# A consumable's next order counts as near its cycle within a factor e^0.25 (0.78 to 1.28 cycles),
# and as far from it beyond e^0.75 (under 0.47 or over 2.1 cycles), where the default window of
# cycle_log_sd = 0.3 leaves under 5% of the peak chance.
NEAR_CYCLE_LOG_RATIO = 0.25
FAR_CYCLE_LOG_RATIO = 0.75


@pytest.fixture(scope="module")
def small_shop():
    return generate_shop(SMALL)


@pytest.fixture(scope="module")
def default_shop():
    """The shop that ``revopt demo`` analyses: default parameters, 20,000 customers."""
    return generate_shop()


@pytest.fixture(scope="module")
def plain_shop():
    """The default shop without complements or replenishment, as the chance baseline."""
    return generate_shop(DemoParameters(**NO_BASKET_EFFECTS))


@pytest.fixture(scope="module")
def default_export(default_shop, tmp_path_factory):
    """The default shop written with write_export and read back as text, as a user would."""
    path = write_export(default_shop, tmp_path_factory.mktemp("demo") / "orders.csv")
    return path, pd.read_csv(path, encoding="gbk", dtype=str, keep_default_na=False)


# ---------------------------------------------------------------------------------------------
# Layout and round trip
# ---------------------------------------------------------------------------------------------


def test_orders_headers_exact(small_shop):
    assert list(small_shop.orders.columns) == list(ORDER_COLUMNS)


def test_export_is_gbk_without_bom(default_export):
    path, export = default_export
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    assert raw.decode("gbk").splitlines()[0] == ",".join(ORDER_COLUMNS)
    assert list(export.columns) == list(ORDER_COLUMNS)


def test_export_round_trip_keeps_text(default_shop, default_export):
    _, export = default_export
    orders = default_shop.orders
    assert len(export) == len(orders)
    text_columns = ("订单编号", "买家会员名", "收货人姓名", "性别", "手机号", "城市", "商品ID", "商品名称", "类目", "订单状态")
    for column in text_columns:
        assert export[column].tolist() == orders[column].tolist(), column
    assert export["下单时间"].tolist() == orders["下单时间"].dt.strftime("%Y-%m-%d %H:%M:%S").tolist()


def test_export_identifiers_stay_digit_strings(default_export):
    _, export = default_export
    assert export["手机号"].str.fullmatch(r"1\d{10}").all()
    assert export["订单编号"].str.fullmatch(r"[1-9]\d{17}").all()
    assert export["商品ID"].str.fullmatch(r"SKU\d{5}").all()
    members = export.loc[export["买家会员名"] != "", "买家会员名"]
    assert members.str.fullmatch(r"tb_[0-9a-f]{8}").all()


def test_export_amounts_have_two_decimals(default_export):
    _, export = default_export
    assert export["单价"].str.fullmatch(r"\d+\.\d\d").all()
    assert export["实付金额"].str.fullmatch(r"\d+\.\d\d").all()
    assert export["数量"].str.fullmatch(r"[1-9]\d*").all()


def test_timestamps_within_history(default_export):
    _, export = default_export
    times = pd.to_datetime(export["下单时间"], format="%Y-%m-%d %H:%M:%S")
    params = DemoParameters()
    assert times.min() >= pd.Timestamp(params.start)
    assert times.max() < pd.Timestamp(params.end) + pd.Timedelta(days=1)


def test_truth_json_holds_parameters(default_shop, default_export):
    path, _ = default_export
    truth = json.loads((path.parent / TRUTH_FILE_NAME).read_text(encoding="utf-8"))
    expected = dataclasses.asdict(default_shop.parameters)
    expected["start"] = expected["start"].isoformat()
    expected["end"] = expected["end"].isoformat()
    assert truth["parameters"] == expected
    assert truth["counts"]["customers"] == len(default_shop.customers)
    assert truth["counts"]["rows"] == len(default_shop.orders)
    assert truth["counts"]["products"] == len(default_shop.products)
    assert truth["complement_groups"] == [list(group) for group in COMPLEMENT_GROUPS]
    assert truth["replenishment_cycle_days"] == dict(REPLENISHMENT_CYCLE_DAYS)


def test_write_export_rejects_truth_name(small_shop, tmp_path):
    with pytest.raises(ConfigError, match="cannot be named truth.json"):
        write_export(small_shop, tmp_path / TRUTH_FILE_NAME)


# ---------------------------------------------------------------------------------------------
# Customers, orders and lines
# ---------------------------------------------------------------------------------------------


def test_member_ids_unique_per_customer(default_shop):
    customers = default_shop.customers
    orders = default_shop.orders
    assert customers["member_id"].is_unique
    members = orders[orders["买家会员名"] != ""]
    per_member = members.groupby("买家会员名")[["收货人姓名", "手机号", "城市", "性别"]].nunique()
    assert (per_member == 1).all().all()
    assert set(members["买家会员名"]) == set(customers["member_id"])


def test_customer_fields_in_range(default_shop):
    customers = default_shop.customers
    assert set(customers["gender"]) == {"男", "女", ""}
    assert customers["phone"].str.fullmatch(r"1\d{10}").all()
    assert (customers["lambda"] > 0).all()
    assert customers["p"].between(0.0, 1.0).all()
    assert (customers["nu"] > 0).all()
    assert (customers["n_orders"] >= 1).all()


def test_statuses_only_three_values(default_shop):
    assert set(default_shop.orders["订单状态"]) == {STATUS_COMPLETED, STATUS_CLOSED, STATUS_REFUNDED}


def test_line_amount_is_quantity_times_unit_price(default_shop):
    orders = default_shop.orders
    amount_cents = np.rint(orders["实付金额"].to_numpy() * CENTS_PER_YUAN).astype(np.int64)
    unit_cents = np.rint(orders["单价"].to_numpy() * CENTS_PER_YUAN).astype(np.int64)
    assert (amount_cents == orders["数量"].to_numpy() * unit_cents).all()
    assert (unit_cents >= 1).all()


def test_lines_sum_to_order_totals(default_shop):
    lines = default_shop.orders.drop_duplicates()
    line_cents = np.rint(lines["实付金额"] * CENTS_PER_YUAN).astype(np.int64)
    order_cents = line_cents.groupby(lines["订单编号"]).sum()
    totals = default_shop.order_totals.set_index("order_id")["total"]
    expected_cents = np.rint(totals * CENTS_PER_YUAN).astype(np.int64)
    assert order_cents.index.sort_values().equals(expected_cents.index.sort_values())
    assert (order_cents.sort_index() == expected_cents.sort_index()).all()


def test_order_never_repeats_a_product(default_shop):
    lines = default_shop.orders.drop_duplicates()
    assert not lines.duplicated(["订单编号", "商品ID"]).any()


def test_true_orders_match_customer_truth(default_shop):
    orders = default_shop.orders
    true_rows = orders[(orders["订单状态"] == STATUS_COMPLETED) & (orders["买家会员名"] != "")]
    counted = true_rows.groupby("买家会员名")["订单编号"].nunique()
    expected = default_shop.customers.set_index("member_id")["n_orders"]
    assert counted.sort_index().equals(expected.sort_index().rename(counted.name))


def test_true_orders_at_most_one_per_customer_day(default_shop):
    orders = default_shop.orders
    true_rows = orders[(orders["订单状态"] == STATUS_COMPLETED) & (orders["买家会员名"] != "")]
    per_day = true_rows.groupby(["买家会员名", true_rows["下单时间"].dt.date])["订单编号"].nunique()
    assert per_day.max() == 1


def test_guest_rows_have_consignee_but_no_member(default_shop):
    orders = default_shop.orders
    guests = orders[orders["买家会员名"] == ""]
    assert len(guests) > 0
    assert (guests["订单状态"] == STATUS_COMPLETED).all()
    assert (guests["收货人姓名"] != "").all()
    assert guests["手机号"].str.fullmatch(r"1\d{10}").all()


def test_mean_order_value_matches_gamma_gamma(default_shop):
    # Spend is independent of how often a customer buys, so the mean over true orders is E[z] =
    # p * gamma / (q - 1). Orders of one customer share nu, hence the customer-clustered error.
    params = default_shop.parameters
    totals = default_shop.order_totals
    true_totals = totals[totals["kind"] == "purchase"]
    per_customer = true_totals.groupby("member_id")["total"].agg(["sum", "size"])
    mean = per_customer["sum"].sum() / per_customer["size"].sum()
    residual = per_customer["sum"] - mean * per_customer["size"]
    standard_error = np.sqrt((residual**2).sum()) / per_customer["size"].sum()
    expected = params.p * params.gamma / (params.q - 1.0)
    assert abs(mean - expected) < RECOVERY_TOLERANCE_SE * standard_error


# ---------------------------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------------------------


def _within_binomial(count: int, trials: int, share: float) -> bool:
    return abs(count - share * trials) <= NOISE_TOLERANCE_SD * np.sqrt(trials * share * (1.0 - share))


def test_noise_shares_as_configured(default_shop):
    params = default_shop.parameters
    orders = default_shop.orders
    distinct = orders.drop_duplicates()
    is_member = distinct["买家会员名"] != ""
    n_true = distinct.loc[(distinct["订单状态"] == STATUS_COMPLETED) & is_member, "订单编号"].nunique()
    n_closed = distinct.loc[distinct["订单状态"] == STATUS_CLOSED, "订单编号"].nunique()
    n_refunded = distinct.loc[distinct["订单状态"] == STATUS_REFUNDED, "订单编号"].nunique()
    n_guest = distinct.loc[~is_member, "订单编号"].nunique()
    n_duplicates = len(orders) - len(distinct)

    assert _within_binomial(n_closed, n_true, params.cancelled_share)
    assert _within_binomial(n_refunded, n_true, params.refunded_share)
    assert _within_binomial(n_guest, n_true, params.guest_share)
    assert _within_binomial(n_duplicates, len(distinct), params.duplicate_share)
    assert n_closed > 0
    assert n_refunded > 0
    assert n_guest > 0
    assert n_duplicates > 0


def test_noise_leaves_true_orders_unchanged(small_shop):
    quiet = generate_shop(NO_NOISE)

    def true_rows(orders):
        rows = orders.drop_duplicates()
        rows = rows[(rows["订单状态"] == STATUS_COMPLETED) & (rows["买家会员名"] != "")]
        rows = rows.drop(columns="订单编号")
        return rows.sort_values(["下单时间", "买家会员名", "商品ID"], ignore_index=True)

    assert len(quiet.orders) == len(true_rows(quiet.orders))
    pd.testing.assert_frame_equal(true_rows(small_shop.orders), true_rows(quiet.orders))
    pd.testing.assert_frame_equal(small_shop.customers, quiet.customers)


def test_same_seed_same_shop(small_shop):
    again = generate_shop(SMALL)
    pd.testing.assert_frame_equal(small_shop.orders, again.orders)
    pd.testing.assert_frame_equal(small_shop.customers, again.customers)
    pd.testing.assert_frame_equal(small_shop.products, again.products)
    pd.testing.assert_frame_equal(small_shop.order_totals, again.order_totals)


def test_other_seed_other_shop(small_shop):
    other = generate_shop(dataclasses.replace(SMALL, seed=SMALL.seed + 1))
    assert not set(other.customers["member_id"]) & set(small_shop.customers["member_id"])


# ---------------------------------------------------------------------------------------------
# Catalogue, taste, complements and replenishment
# ---------------------------------------------------------------------------------------------


def _true_lines(shop) -> pd.DataFrame:
    """Completed member lines without duplicate rows, with the product's noun and the order's day."""
    lines = shop.orders.drop_duplicates()
    lines = lines[(lines["订单状态"] == STATUS_COMPLETED) & (lines["买家会员名"] != "")]
    noun = shop.products.set_index("product_id")["noun"]
    return lines.assign(noun=lines["商品ID"].map(noun), day=lines["下单时间"].dt.normalize())


def _order_lift(lines: pd.DataFrame, first: str, second: str) -> float:
    """Lift of two nouns over orders: P(both) / (P(first) * P(second))."""
    n_orders = lines["订单编号"].nunique()
    with_first = set(lines.loc[lines["noun"] == first, "订单编号"])
    with_second = set(lines.loc[lines["noun"] == second, "订单编号"])
    return len(with_first & with_second) * n_orders / (len(with_first) * len(with_second))


def _complement_rate(lines: pd.DataFrame) -> float:
    """Share of orders with two or more lines, whose largest line has complements, that contain one."""
    partners = {}
    for group in COMPLEMENT_GROUPS:
        for noun in group:
            partners.setdefault(noun, set()).update(set(group) - {noun})
    by_size = lines.sort_values(["订单编号", "实付金额"], ascending=[True, False], kind="stable")
    main_noun = by_size.groupby("订单编号")["noun"].transform("first")
    n_lines = by_size.groupby("订单编号")["noun"].transform("size")
    eligible = by_size[(n_lines >= 2) & main_noun.isin(list(partners))]
    eligible_main = main_noun[eligible.index]
    is_complement = [noun in partners[main] for noun, main in zip(eligible["noun"], eligible_main)]
    return pd.Series(is_complement, index=eligible.index).groupby(eligible["订单编号"]).any().mean()


def _replenishment_hit_rates(shop) -> tuple[float, float]:
    """Share of consumable purchases whose customer's next order repeats the SKU, near and far from its cycle."""
    lines = _true_lines(shop)
    orders = lines.drop_duplicates("订单编号")[["订单编号", "买家会员名", "day"]]
    orders = orders.sort_values(["买家会员名", "day"])
    following = orders.groupby("买家会员名")[["订单编号", "day"]].shift(-1)
    orders = orders.assign(next_order=following["订单编号"], next_day=following["day"])

    cycle = shop.products.set_index("product_id")["cycle_days"].astype(float)
    bought = lines.loc[lines["商品ID"].map(cycle).notna(), ["订单编号", "商品ID"]]
    bought = bought.merge(orders, on="订单编号").dropna(subset=["next_order"])
    next_lines = lines[["订单编号", "商品ID"]].rename(columns={"订单编号": "next_order"})
    found = bought.merge(next_lines, on=["next_order", "商品ID"], how="left", indicator=True)["_merge"]
    repeated = (found == "both").to_numpy()

    gap_days = (bought["next_day"] - bought["day"]).dt.days.to_numpy()
    log_ratio = np.log(gap_days / bought["商品ID"].map(cycle).to_numpy())
    near = np.abs(log_ratio) < NEAR_CYCLE_LOG_RATIO
    far = np.abs(log_ratio) > FAR_CYCLE_LOG_RATIO
    return repeated[near].mean(), repeated[far].mean()


def test_catalogue_describes_export(default_shop):
    products = default_shop.products.set_index("product_id")
    lines = default_shop.orders
    assert products.index.is_unique
    assert set(lines["商品ID"]) <= set(products.index)
    assert (lines["商品名称"].to_numpy() == products.loc[lines["商品ID"], "name"].to_numpy()).all()
    assert (lines["类目"].to_numpy() == products.loc[lines["商品ID"], "category"].to_numpy()).all()
    assert np.isclose(products["popularity"].sum(), 1.0)


def test_catalogue_tables_name_its_nouns(default_shop):
    products = default_shop.products
    nouns = set(products["noun"])
    assert {noun for group in COMPLEMENT_GROUPS for noun in group} <= nouns
    assert set(REPLENISHMENT_CYCLE_DAYS) <= nouns
    expected_cycle = products["noun"].map(REPLENISHMENT_CYCLE_DAYS)
    assert (products["is_consumable"] == expected_cycle.notna()).all()
    consumable = products[products["is_consumable"]]
    assert (consumable["cycle_days"].astype(int) == expected_cycle[consumable.index].astype(int)).all()
    assert products.loc[~products["is_consumable"], "cycle_days"].isna().all()


def test_price_tiers_ascend_within_noun(default_shop):
    products = default_shop.products.assign(tier_rank=default_shop.products["tier"].map(TIER_ORDER.index))
    for noun, versions in products.groupby("noun"):
        prices = versions.sort_values("tier_rank")["list_price"]
        assert prices.is_monotonic_increasing and prices.is_unique, noun
        assert "经典款" in set(versions["tier"]), noun
    tiers_per_noun = products.groupby("noun").size()
    assert (tiers_per_noun >= 2).mean() > 0.5


def test_customers_lean_to_favourites(default_shop):
    lines = _true_lines(default_shop)
    customers = default_shop.customers.set_index("member_id")
    favourite = lines["买家会员名"].map(customers["favourite_category"])
    second = lines["买家会员名"].map(customers["second_category"])
    in_favourites = (lines["类目"] == favourite) | (lines["类目"] == second)
    lines_per_customer = lines.groupby("买家会员名").size()
    share = in_favourites.groupby(lines["买家会员名"]).mean()[lines_per_customer >= 3]

    # The same share against another customer's favourites is the baseline without taste.
    shuffled = customers[["favourite_category", "second_category"]].sample(frac=1.0, random_state=1)
    shuffled.index = customers.index
    baseline = (
        (lines["类目"] == lines["买家会员名"].map(shuffled["favourite_category"]))
        | (lines["类目"] == lines["买家会员名"].map(shuffled["second_category"]))
    ).groupby(lines["买家会员名"]).mean()[lines_per_customer >= 3]
    assert len(share) > 1000
    assert share.mean() > 0.55
    assert baseline.mean() < 0.35


@pytest.mark.parametrize(
    ("first", "second"), [("纸尿裤", "婴儿湿巾"), ("咖啡豆", "保温杯")], ids=["diapers-wipes", "coffee-flask"]
)
def test_complements_co_occur(default_shop, plain_shop, first, second):
    lift = _order_lift(_true_lines(default_shop), first, second)
    chance_lift = _order_lift(_true_lines(plain_shop), first, second)
    assert lift > 2.0, (lift, chance_lift)
    assert lift > 2.0 * chance_lift, (lift, chance_lift)


def test_complement_rate_above_chance(default_shop, plain_shop):
    rate = _complement_rate(_true_lines(default_shop))
    chance_rate = _complement_rate(_true_lines(plain_shop))
    assert rate > 0.2, (rate, chance_rate)
    assert rate > 3.0 * chance_rate, (rate, chance_rate)


def test_consumables_repeat_near_cycle(default_shop):
    near, far = _replenishment_hit_rates(default_shop)
    assert near > 0.12, (near, far)
    assert near > 2.5 * far, (near, far)


def test_repeats_without_replenishment_ignore_cycle(default_shop, plain_shop):
    near, _ = _replenishment_hit_rates(default_shop)
    chance_near, chance_far = _replenishment_hit_rates(plain_shop)
    assert near > 2.0 * chance_near, (near, chance_near)
    assert chance_near < 1.5 * chance_far, (chance_near, chance_far)


def test_basket_settings_keep_orders(small_shop):
    plain = generate_shop(dataclasses.replace(SMALL, taste_strength=0.0, **NO_BASKET_EFFECTS))
    pd.testing.assert_frame_equal(small_shop.order_totals, plain.order_totals)
    pd.testing.assert_frame_equal(small_shop.customers.drop(columns=["favourite_category", "second_category"]),
                                  plain.customers.drop(columns=["favourite_category", "second_category"]))
    columns = ["订单编号", "买家会员名", "下单时间", "订单状态"]
    orders = small_shop.orders.drop_duplicates("订单编号")[columns].sort_values("订单编号", ignore_index=True)
    plain_orders = plain.orders.drop_duplicates("订单编号")[columns].sort_values("订单编号", ignore_index=True)
    pd.testing.assert_frame_equal(orders, plain_orders)
    assert not small_shop.orders["商品ID"].equals(plain.orders["商品ID"])


# ---------------------------------------------------------------------------------------------
# Seasonality and time of day
# ---------------------------------------------------------------------------------------------


def _singles_day_ratio(orders: pd.DataFrame) -> float:
    """Orders per day on November 9-13 over orders per day on October 15-31 and November 20-30."""
    true_rows = orders[orders["订单状态"] == STATUS_COMPLETED].drop_duplicates("订单编号")
    days = true_rows["下单时间"].dt.normalize()
    month, day = days.dt.month, days.dt.day
    peak = (month == 11) & day.between(9, 13)
    baseline = ((month == 10) & day.between(15, 31)) | ((month == 11) & day.between(20, 30))
    return (peak.sum() / days[peak].nunique()) / (baseline.sum() / days[baseline].nunique())


def test_singles_day_raises_daily_orders(default_shop):
    # The 双十一 bump roughly doubles the intensity over November 9-13 (height 1.2 at the peak).
    assert _singles_day_ratio(default_shop.orders) > 1.6


def test_flat_clock_has_no_singles_day_peak():
    flat = generate_shop(DemoParameters(seasonal_amplitude=0.0))
    assert 0.8 < _singles_day_ratio(flat.orders) < 1.25


def test_orders_busier_in_evening(default_shop):
    hours = default_shop.orders.drop_duplicates("订单编号")["下单时间"].dt.hour
    evening = hours.between(20, 22).sum()
    small_hours = hours.between(3, 5).sum()
    assert evening > 10 * small_hours


# ---------------------------------------------------------------------------------------------
# Parameter recovery, with fits written here
# ---------------------------------------------------------------------------------------------


def _purchase_days(export: pd.DataFrame) -> pd.DataFrame:
    """Amount paid per member and calendar day, from completed member orders without duplicate rows."""
    rows = export.drop_duplicates()
    rows = rows[(rows["订单状态"] == STATUS_COMPLETED) & (rows["买家会员名"] != "")]
    paid = pd.DataFrame(
        {
            "member": rows["买家会员名"],
            "day": pd.to_datetime(rows["下单时间"], format="%Y-%m-%d %H:%M:%S").dt.normalize(),
            "amount": rows["实付金额"].astype(float),
        }
    )
    return paid.groupby(["member", "day"], as_index=False)["amount"].sum()


def _summary(purchase_days: pd.DataFrame, end: date) -> pd.DataFrame:
    """Per member: repeat purchase days x, t_x and T in weeks, and the mean repeat spend."""
    first = purchase_days.groupby("member")["day"].transform("min")
    is_repeat = purchase_days["day"] > first
    by_member = purchase_days.assign(first=first).groupby("member")
    repeats = purchase_days[is_repeat].groupby("member")["amount"].mean()
    summary = pd.DataFrame(
        {
            "x": by_member.size() - 1,
            "t_x": (by_member["day"].max() - by_member["first"].min()).dt.days / DAYS_PER_WEEK,
            "T": (pd.Timestamp(end) - by_member["first"].min()).dt.days / DAYS_PER_WEEK,
        }
    )
    summary["mean_repeat_spend"] = repeats.reindex(summary.index)
    return summary


def _bgnbd_log_likelihood(theta: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> float:
    """Sum of the BG/NBD log-likelihood of Fader, Hardie and Lee (2005) over customers."""
    r, alpha, a, b = theta
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    log_likelihood = a1 + a2 + a3
    repeat = x > 0
    a4 = np.log(a) - np.log(b + x[repeat] - 1.0) - (r + x[repeat]) * np.log(alpha + t_x[repeat])
    log_likelihood[repeat] = a1[repeat] + a2[repeat] + np.logaddexp(a3[repeat], a4)
    return float(log_likelihood.sum())


def _gamma_gamma_log_likelihood(theta: np.ndarray, mean_spend: np.ndarray, x: np.ndarray) -> float:
    """Sum of the log density of each customer's mean spend over x transactions (Gamma-Gamma)."""
    p, q, gamma = theta
    px = p * x
    log_density = (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(gamma)
        + (px - 1.0) * np.log(mean_spend)
        + px * np.log(x)
        - (px + q) * np.log(gamma + mean_spend * x)
    )
    return float(log_density.sum())


def _numerical_hessian(function, point: np.ndarray) -> np.ndarray:
    step = HESSIAN_RELATIVE_STEP * point
    size = point.size
    hessian = np.empty((size, size))
    for i in range(size):
        for j in range(size):
            e_i = np.zeros(size)
            e_j = np.zeros(size)
            e_i[i] = step[i]
            e_j[j] = step[j]
            corners = (
                function(point + e_i + e_j)
                - function(point + e_i - e_j)
                - function(point - e_i + e_j)
                + function(point - e_i - e_j)
            )
            hessian[i, j] = corners / (4.0 * step[i] * step[j])
    return hessian


def _fit(log_likelihood, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximise over log-parameters. Return the estimates and their standard errors from the observed information."""
    result = minimize(
        lambda log_theta: -log_likelihood(np.exp(log_theta)),
        np.log(start),
        method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 20_000, "maxfev": 20_000},
    )
    assert result.success, result.message
    estimate = np.exp(result.x)
    information = -_numerical_hessian(log_likelihood, estimate)
    np.linalg.cholesky(information)  # raises LinAlgError unless the information is positive definite
    return estimate, np.sqrt(np.diag(np.linalg.inv(information)))


@pytest.fixture(scope="module")
def summary(default_export):
    _, export = default_export
    return _summary(_purchase_days(export), DemoParameters().end)


@pytest.fixture(scope="module")
def bgnbd_fit(summary):
    x, t_x, T = (summary[column].to_numpy(dtype=float) for column in ("x", "t_x", "T"))
    estimate, standard_error = _fit(lambda theta: _bgnbd_log_likelihood(theta, x, t_x, T), np.ones(4))
    return dict(zip(("r", "alpha", "a", "b"), zip(estimate, standard_error)))


@pytest.fixture(scope="module")
def gamma_gamma_fit(summary):
    repeaters = summary[summary["x"] > 0]
    mean_spend = repeaters["mean_repeat_spend"].to_numpy(dtype=float)
    x = repeaters["x"].to_numpy(dtype=float)
    estimate, standard_error = _fit(lambda theta: _gamma_gamma_log_likelihood(theta, mean_spend, x), np.ones(3))
    return dict(zip(("p", "q", "gamma"), zip(estimate, standard_error)))


def test_summary_covers_every_customer(summary, default_shop):
    assert len(summary) == len(default_shop.customers)
    assert (summary["t_x"] <= summary["T"]).all()
    assert (summary.loc[summary["x"] == 0, "t_x"] == 0).all()


@pytest.mark.parametrize("name", ["r", "alpha", "a", "b"])
def test_bgnbd_fit_recovers_parameter(bgnbd_fit, name):
    estimate, standard_error = bgnbd_fit[name]
    true_value = getattr(DemoParameters(), name)
    assert abs(estimate - true_value) < RECOVERY_TOLERANCE_SE * standard_error, (estimate, standard_error)


@pytest.mark.parametrize("name", ["p", "q", "gamma"])
def test_gamma_gamma_fit_recovers_parameter(gamma_gamma_fit, name):
    estimate, standard_error = gamma_gamma_fit[name]
    true_value = getattr(DemoParameters(), name)
    assert abs(estimate - true_value) < RECOVERY_TOLERANCE_SE * standard_error, (estimate, standard_error)


def test_bgnbd_standard_errors_are_small(bgnbd_fit):
    # The recovery tests above mean something only if the standard errors are small: 1.4% (r)
    # to 6% (b) of the estimates with the default shop.
    for name, (estimate, standard_error) in bgnbd_fit.items():
        assert standard_error < 0.1 * estimate, name


# ---------------------------------------------------------------------------------------------
# Parameter checks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"r": 0.0}, r"r must be in \(0, inf\]"),
        ({"gamma": -1.0}, r"gamma must be in \(0, inf\]"),
        ({"n_customers": 0}, r"n_customers must be in \[1, inf\]"),
        ({"n_customers": 10.5}, "n_customers must be an integer"),
        ({"cancelled_share": 1.5}, r"cancelled_share must be in \[0, 1\]"),
        ({"seasonal_amplitude": -0.1}, r"seasonal_amplitude must be in \[0, inf\]"),
        ({"end": date(2023, 12, 31)}, "end must be after start"),
        ({"acquisition_months": 30}, "acquisition window of 30 months"),
        ({"taste_strength": 1.5}, r"taste_strength must be in \[0, 1\]"),
        ({"replenish_probability": -0.1}, r"replenish_probability must be in \[0, 1\]"),
        ({"cycle_log_sd": 0.0}, r"cycle_log_sd must be in \(0, inf\]"),
    ],
    ids=["r-zero", "gamma-negative", "no-customers", "fractional-customers", "share-above-one",
         "negative-amplitude", "end-before-start", "acquisition-past-end", "taste-above-one",
         "negative-replenish", "zero-cycle-width"],
)
def test_parameters_reject_invalid(changes, message):
    with pytest.raises(ConfigError, match=message):
        DemoParameters(**changes)
