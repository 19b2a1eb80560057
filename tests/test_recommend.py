"""Recommendations: purchase lines, association rules, the methods' rules, reasons, and real-data evaluations."""

from __future__ import annotations

import datetime as dt
import re
from itertools import combinations

import ibis
from ibis import _
import numpy as np
import pandas as pd
import pytest

from conftest import dataset
from revopt.errors import ConfigError, InputError, NotFittedError
from revopt.i18n import LANGUAGES
from revopt.recommend import (
    METHODS,
    NON_PRODUCT_PATTERNS,
    CoOccurrence,
    ImplicitALS,
    Popularity,
    RecommendSettings,
    Upsell,
    association_rules,
    choose,
    evaluate,
    prepare_training,
    purchase_lines,
    reason_text,
    recommend,
)
from revopt.recommend.api import fit_recommendations
from revopt.recommend.baskets import _median_prices

AS_OF = dt.date(2024, 7, 1)
LINE_COLUMNS = {
    "source_file": "string", "source_row": "int64", "customer_id": "string", "order_id": "string",
    "order_time": "timestamp", "order_date": "date", "amount": "float64", "quantity": "float64",
    "unit_price": "float64", "product_id": "string", "product_name": "string", "category": "string",
    "status": "string", "is_return": "boolean",
}


@pytest.fixture(scope="module")
def con():
    return ibis.duckdb.connect()


def make_lines(con, rows: list[dict], name: str = "lines") -> ibis.Table:
    """An order-lines table with the columns of ``CleanTables.lines``; unspecified fields are null."""
    frame = pd.DataFrame(rows)
    frame["order_date"] = pd.to_datetime(frame["order_date"])
    defaults = {"amount": 1.0, "quantity": 1.0, "is_return": False, "source_file": "toy.csv"}
    for column, value in defaults.items():
        frame[column] = frame[column].fillna(value) if column in frame else value
    frame["source_row"] = np.arange(1, len(frame) + 1)
    frame["order_time"] = frame.order_date
    frame["order_date"] = frame.order_date.dt.date
    for column in LINE_COLUMNS:
        if column not in frame:
            frame[column] = None
    table = ibis.memtable(frame[list(LINE_COLUMNS)], schema=ibis.schema(LINE_COLUMNS))
    return con.create_table(name, table, overwrite=True)


def order(customer, order_id, day, products, **fields) -> list[dict]:
    return [{"customer_id": customer, "order_id": order_id, "order_date": day, "product_id": product, **fields}
            for product in products]


# ---------------------------------------------------------------------------------------
# Association rules
# ---------------------------------------------------------------------------------------


def basket_table(baskets: list[list[str]]) -> ibis.Table:
    rows = [(str(index), item) for index, basket in enumerate(baskets) for item in basket]
    return ibis.memtable(pd.DataFrame(rows, columns=["basket_id", "product_id"]))


def rule(table: pd.DataFrame, antecedent: str, consequent: str) -> pd.Series:
    match = table[(table.antecedent == antecedent) & (table.consequent == consequent)]
    assert len(match) == 1, (antecedent, consequent)
    return match.iloc[0]


def test_rules_hand_computed():
    # N = 5; n_A = 4, n_B = 3, n_C = 2; n_AB = 2, n_AC = 2, n_BC = 1.
    rules = association_rules(basket_table([["A", "B", "C"], ["A", "B"], ["A", "C"], ["B"], ["A"]]),
                              min_pair_count=1)
    table = rules.table

    assert rules.baskets == 5
    assert len(table) == 6
    a_to_b = rule(table, "A", "B")
    assert a_to_b.pair_count == 2
    assert a_to_b.support == pytest.approx(2 / 5)
    assert a_to_b.confidence == pytest.approx(2 / 4)
    assert a_to_b.lift == pytest.approx(2 * 5 / (4 * 3))
    assert rule(table, "B", "A").confidence == pytest.approx(2 / 3)
    assert rule(table, "C", "A").confidence == pytest.approx(1.0)
    assert rule(table, "A", "C").lift == pytest.approx(2 * 5 / (4 * 2))
    assert rule(table, "B", "C").lift == pytest.approx(1 * 5 / (3 * 2))


def test_rules_minimum_pair_count():
    rules = association_rules(basket_table([["A", "B", "C"], ["A", "B"], ["A", "C"], ["B"], ["A"]]),
                              min_pair_count=2)

    pairs = set(zip(rules.table.antecedent, rules.table.consequent))
    assert pairs == {("A", "B"), ("B", "A"), ("A", "C"), ("C", "A")}


def test_rules_repeated_lines_count_once():
    rules = association_rules(basket_table([["A", "A", "B"], ["A", "B", "B"]]), min_pair_count=1)

    assert rule(rules.table, "A", "B").pair_count == 2
    assert rule(rules.table, "A", "B").confidence == pytest.approx(1.0)


def test_rules_single_item_baskets():
    rules = association_rules(basket_table([["A"], ["B"], ["A"]]), min_pair_count=1)

    assert rules.table.empty
    assert rules.baskets == 3


def test_rules_large_baskets_left_out():
    rules = association_rules(basket_table([["A", "B", "C", "D"], ["A", "B"], ["A"]]), min_pair_count=1,
                              max_basket_items=3)

    assert rules.capped_baskets == 1
    assert rules.capped_lines == 4
    assert rules.baskets == 2
    assert rule(rules.table, "A", "B").confidence == pytest.approx(1 / 2)
    assert set(rules.table.antecedent) == {"A", "B"}


def test_rules_min_support_threshold():
    baskets = [["A", "B"]] * 3 + [["A", "C"]] * 2 + [["D"]] * 5
    rules = association_rules(basket_table(baskets), min_pair_count=1, min_support=0.3)

    assert rules.min_pair_count == 3
    assert set(rules.table.antecedent) == {"A", "B"}


def test_rules_missing_columns():
    with pytest.raises(InputError, match="no column basket_id"):
        association_rules(ibis.memtable(pd.DataFrame({"order": ["1"], "product_id": ["A"]})))


def groceries_baskets() -> list[list[str]]:
    path = dataset("groceries", "groceries_baskets.csv")
    with path.open(encoding="utf-8") as handle:
        return [line.rstrip("\n").split(",") for line in handle if line.strip()]


def test_groceries_rules_match_mlxtend():
    from mlxtend.frequent_patterns import apriori
    from mlxtend.frequent_patterns import association_rules as mlxtend_rules
    from mlxtend.preprocessing import TransactionEncoder

    baskets = groceries_baskets()
    min_count = 20
    ours = association_rules(basket_table(baskets), min_pair_count=min_count).table

    encoder = TransactionEncoder()
    onehot = pd.DataFrame(encoder.fit(baskets).transform(baskets), columns=encoder.columns_)
    # Half a basket below the count, so rounding in mlxtend's support cannot drop a pair at the boundary.
    frequent = apriori(onehot, min_support=(min_count - 0.5) / len(baskets), use_colnames=True, max_len=2)
    theirs = mlxtend_rules(frequent, num_itemsets=len(baskets), metric="confidence", min_threshold=0.0)
    theirs = pd.DataFrame({
        "antecedent": theirs.antecedents.map(lambda items: next(iter(items))),
        "consequent": theirs.consequents.map(lambda items: next(iter(items))),
        "support": theirs.support, "confidence": theirs.confidence, "lift": theirs.lift,
    })

    assert len(baskets) == 9_835
    assert len(ours) == len(theirs)
    merged = ours.merge(theirs, on=["antecedent", "consequent"], suffixes=("", "_mlxtend"), validate="one_to_one")
    assert len(merged) == len(ours)
    for measure in ("support", "confidence", "lift"):
        np.testing.assert_allclose(merged[measure], merged[f"{measure}_mlxtend"], rtol=0, atol=1e-9)


def groceries_member_lines(con) -> ibis.Table:
    """The Kaggle member-date file as order lines; it has no amounts, prices or order ids."""
    raw = pd.read_csv(dataset("groceries", "groceries_member_date_item.csv"), dtype=str)
    rows = pd.DataFrame({
        "customer_id": raw.Member_number,
        "order_id": raw.Member_number + "|" + raw.Date,
        "order_date": pd.to_datetime(raw.Date, format="%d-%m-%Y"),
        "product_id": raw.itemDescription,
        "product_name": raw.itemDescription,
        "amount": np.nan,
        "quantity": np.nan,
        "source_file": "groceries_member_date_item.csv",
    })
    return make_lines(con, rows.to_dict("records"), name="groceries")


def test_groceries_member_day_rules_match_pandas(con):
    lines = groceries_member_lines(con)
    sales = purchase_lines(lines, basket="customer_day")
    ours = association_rules(sales.select("basket_id", "product_id"), min_pair_count=10).table

    # Independent count: distinct items per member-day, every unordered pair enumerated in Python.
    raw = pd.read_csv(dataset("groceries", "groceries_member_date_item.csv"), dtype=str)
    baskets = raw.drop_duplicates().groupby(["Member_number", "Date"]).itemDescription.apply(lambda s: sorted(set(s)))
    item_counts = pd.Series([item for basket in baskets for item in basket]).value_counts()
    pair_counts = pd.Series([pair for basket in baskets for pair in combinations(basket, 2)]).value_counts()
    pair_counts = pair_counts[pair_counts >= 10]

    assert len(baskets) == 14_963
    assert len(ours) == 2 * len(pair_counts)
    for (a, b), n_ab in pair_counts.items():
        found = rule(ours, a, b)
        assert found.pair_count == n_ab
        assert found.confidence == pytest.approx(n_ab / item_counts[a], abs=1e-12)
        assert found.lift == pytest.approx(n_ab * len(baskets) / (item_counts[a] * item_counts[b]), abs=1e-9)


# ---------------------------------------------------------------------------------------
# Purchase lines and the catalogue
# ---------------------------------------------------------------------------------------


def test_purchase_lines_drop_non_products(con):
    rows = order("c1", "1", "2024-06-01", ["A", "POST", "m", "gift_0001_20", "DCGS0003", "BANK CHARGES"])
    rows += order("c1", "2", "2024-06-02", ["SHIP"], product_name="订单运费")
    rows += order("c1", "3", "2024-06-03", ["FIX"], product_name="补差价链接")
    rows += order("c1", "4", "2024-06-04", ["WRAP"], product_name="Gift wrap")
    lines = make_lines(con, rows)

    default = set(purchase_lines(lines).to_pandas().product_id)
    extended = set(purchase_lines(lines, exclude={"product_name": ["gift wrap"]}).to_pandas().product_id)

    assert default == {"A", "WRAP"}
    assert extended == {"A"}


def test_purchase_lines_unknown_pattern_column(con):
    lines = make_lines(con, order("c1", "1", "2024-06-01", ["A"]))
    with pytest.raises(ConfigError, match="exclude 'colour' is not valid; use one of: product_id"):
        purchase_lines(lines, exclude={"colour": ["red"]})


def test_purchase_lines_returns_and_prices(con):
    rows = order("c1", "1", "2024-06-01", ["A", "E"], quantity=2.0, amount=4.0)
    rows += order("c1", "C9", "2024-06-05", ["A"], quantity=-2.0, amount=-4.0, is_return=True)
    rows += order("c1", "C10", "2024-06-05", ["E"], quantity=-1.0, amount=-2.0, is_return=True)
    rows += order("c2", "2", "2024-06-01", ["A"], quantity=1.0, amount=2.0)
    rows += order("c2", "3", "2024-06-02", ["Z"], quantity=1.0, amount=0.0)
    rows += order(None, "4", "2024-06-03", ["A", "E"], quantity=1.0, amount=2.0)
    lines = make_lines(con, rows)

    sales = purchase_lines(lines).to_pandas()
    pairs = set(zip(sales.customer_id.fillna("guest"), sales.product_id))

    # c1 returned both units of A (returned in full) and one of two units of E (kept).
    assert pairs == {("c1", "E"), ("c2", "A"), ("guest", "A"), ("guest", "E")}
    assert set(sales.unit_price) == {2.0}


def test_missing_required_column(con):
    table = ibis.memtable(pd.DataFrame({"customer_id": ["c1"], "order_date": [dt.date(2024, 1, 1)]}))
    with pytest.raises(InputError, match="no column order_id, amount, product_id, is_return"):
        purchase_lines(table)


def test_lines_without_products(con):
    lines = make_lines(con, order("c1", "1", "2024-06-01", ["POST"]) + order("c2", "2", "2024-06-02", [None]))
    with pytest.raises(InputError, match="no order line before 2024-07-01 is a purchase of a product"):
        prepare_training(lines, as_of=AS_OF)


def test_empty_catalogue(con):
    lines = make_lines(con, order("c1", "1", "2024-01-01", ["A", "E"]))
    with pytest.raises(InputError, match="the catalogue is empty"):
        recommend(lines, method="popularity", as_of=AS_OF)


def catalogue_rows() -> list[dict]:
    """Toy history for the catalogue rules, recommendations as of 2024-07-01."""
    rows = []
    # Baskets in May: A with E (often) or C, each with a postage line and a shipping fee.
    for index in range(8):
        customer = f"c{index % 4}"
        second = "E" if index < 6 else "C"
        rows += order(customer, f"r{index}", f"2024-05-{index + 2:02d}", ["A", second, "POST"])
        rows += order(customer, f"r{index}", f"2024-05-{index + 2:02d}", ["SHIP"], product_name="快递运费")
    # OLD sold with A many times, but only in January: outside the 90-day catalogue.
    for index in range(8):
        rows += order(f"c{index % 4}", f"old{index}", f"2024-01-{index + 2:02d}", ["A", "OLD"])
    # MILK on a 10-day cycle for six customers; y last bought it on 2024-06-22, so it is due on 07-02.
    for index in range(6):
        for visit in range(3):
            day = dt.date(2024, 5, 1) + dt.timedelta(days=10 * visit + index)
            rows += order(f"m{index}", f"milk{index}-{visit}", day.isoformat(), ["MILK"])
    rows += order("y", "y1", "2024-06-02", ["MILK"]) + order("y", "y2", "2024-06-12", ["MILK"])
    rows += order("y", "y3", "2024-06-22", ["MILK", "A"])
    # x bought A recently: A must not come back, E is the product bought with it.
    rows += order("x", "x1", "2024-06-20", ["A"])
    # r returned C in full in February and bought A in May; C must not be offered to r.
    rows += order("r", "ret1", "2024-02-01", ["C"]) + order("r", "Cret1", "2024-02-03", ["C"], quantity=-1.0,
                                                              amount=-1.0, is_return=True)
    rows += order("r", "ret2", "2024-05-20", ["A"])
    return rows


def recent_pairs(rows: list[dict], days: int = 90) -> set[tuple[str, str]]:
    start = AS_OF - dt.timedelta(days=days)
    return {(row["customer_id"], row["product_id"]) for row in rows
            if row["customer_id"] and start <= dt.date.fromisoformat(row["order_date"]) < AS_OF}


def non_product(product_id: str, name: str | None) -> bool:
    regex = {column: re.compile("^(?:" + "|".join(p.replace("*", ".*") for p in patterns) + ")$", re.IGNORECASE)
             for column, patterns in NON_PRODUCT_PATTERNS.items()}
    return bool(regex["product_id"].match(product_id) or (isinstance(name, str) and regex["product_name"].match(name)))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_methods_obey_catalogue_rules(con, method):
    rows = catalogue_rows()
    lines = make_lines(con, rows)
    catalogue = {"A", "E", "C", "MILK"}
    due = {("y", "MILK")}

    result = recommend(lines, k=5, method=method, as_of=AS_OF)
    items = result.items
    pairs = set(zip(items.customer_id, items.product_id))

    assert result.evaluation is None
    assert set(items.product_id) <= catalogue
    assert not (pairs & (recent_pairs(rows) - due))
    assert ("r", "C") not in pairs
    assert "r" in set(items.customer_id)
    assert not any(non_product(p, n) for p, n in zip(items.product_id, items.product_name))
    assert items.groupby("customer_id").size().max() <= 5
    assert (items.groupby("customer_id")["rank"].apply(lambda r: list(r) == list(range(1, len(r) + 1)))).all()


def test_co_occurrence_names_the_seed(con):
    lines = make_lines(con, catalogue_rows())
    settings = RecommendSettings(min_pair_count=2)

    result = recommend(lines, k=3, method="co_occurrence", as_of=AS_OF, settings=settings)
    items = result.items
    first = items[(items.customer_id == "x") & (items["rank"] == 1)].iloc[0]

    assert first.product_id == "E"
    assert first.method == "co_occurrence"
    assert first.reason_id == "bought_with"
    assert first.reason_product_name == "A"
    # A is in 19 baskets before the as-of date (8 in May, 8 in January, y's, x's, r's), 6 of them with E.
    # x bought A 11 days before the as-of date; the recency half-life is 30 days.
    assert first.score == pytest.approx(0.5 ** (11 / 30) * 6 / 19, rel=1e-12)
    assert result.stats["capped_baskets"] == 0
    # May, January, MILK, y's, x's and r's second order; r's first order was returned in full.
    assert result.stats["rule_baskets"] == 8 + 8 + 6 * 3 + 3 + 1 + 1


def test_replenishment_due_item_allowed(con):
    lines = make_lines(con, catalogue_rows())

    result = recommend(lines, k=3, method="replenishment", as_of=AS_OF)
    due = result.replenishment

    y_milk = due[(due.customer_id == "y") & (due.product_id == "MILK")].iloc[0]
    assert y_milk.cycle_days == pytest.approx(10.0)
    assert y_milk.due_date == pd.Timestamp("2024-07-02")
    assert y_milk.reason_id == "restock"
    assert ("y", "MILK") in set(zip(result.items.customer_id, result.items.product_id))
    # The six cycle customers last bought MILK by 2024-05-26, so theirs fell due more than a cycle ago.
    assert set(due.customer_id) == {"y"}


def test_single_item_baskets(con):
    rows = []
    for index in range(12):
        rows += order(f"c{index % 4}", f"o{index}", f"2024-06-{index + 1:02d}", [f"P{index % 6}"])
    lines = make_lines(con, rows)

    result = recommend(lines, k=2, method="co_occurrence", as_of=AS_OF)

    assert not result.items.empty
    assert set(result.items.method) == {"popularity"}
    assert set(result.items.reason_id) == {"popular"}


def test_upsell_same_category_higher_price(con):
    rows = []
    prices = {"T1": 2.0, "T2": 5.0, "T3": 3.0, "T0": 1.0, "K1": 9.0}
    categories = {"T1": "tea", "T2": "tea", "T3": "tea", "T0": "tea", "K1": "kettle"}
    buyers = {"T2": 6, "T3": 3, "T0": 8, "K1": 9, "T1": 2}
    for product, count in buyers.items():
        for index in range(count):
            rows += order(f"b{index}", f"{product}{index}", "2024-06-01", [product], unit_price=prices[product],
                          amount=prices[product], category=categories[product], product_name=f"name {product}")
    rows += order("u", "u1", "2024-03-01", ["T1"], unit_price=2.0, amount=2.0, category="tea",
                  product_name="name T1")
    lines = make_lines(con, rows)

    upsell = recommend(lines, k=3, method="popularity", as_of=AS_OF).upsell
    mine = upsell[upsell.customer_id == "u"]

    assert list(mine.product_id) == ["T2", "T3"]
    assert set(mine.reason_product_name) == {"name T1"}
    assert (mine.method == "upsell").all()
    assert "T0" not in set(upsell.product_id[upsell.customer_id.isin(["b0", "b1"])])


def test_upsell_blocks_agree(con, monkeypatch):
    from revopt.recommend import methods

    rows = []
    for index in range(12):
        product = f"T{index % 4}"
        rows += order(f"c{index % 5}", f"o{index}", f"2024-06-{index + 1:02d}", [product], unit_price=1.0 + index % 4,
                      amount=1.0 + index % 4, category="tea")
    lines = make_lines(con, rows)
    data = prepare_training(lines, as_of=AS_OF)

    whole = Upsell().fit(data).recommend(3)
    monkeypatch.setattr(methods, "_UPSELL_JOIN_ROWS", 1)
    blocked = Upsell().fit(data).recommend(3)

    assert not whole.empty
    pd.testing.assert_frame_equal(whole, blocked)


def test_upsell_needs_categories(con):
    lines = make_lines(con, catalogue_rows())
    data = prepare_training(lines, as_of=AS_OF)

    assert not Upsell().is_applicable(data)
    assert recommend(lines, k=3, method="popularity", as_of=AS_OF).upsell.empty


def test_als_repeatable(con):
    lines = make_lines(con, catalogue_rows())
    data = prepare_training(lines, as_of=AS_OF)

    first = ImplicitALS(factors=8).fit(data).recommend(3)
    second = ImplicitALS(factors=8).fit(data).recommend(3)

    pd.testing.assert_frame_equal(first, second)
    assert set(first.reason_id) == {"similar_customers"}


def test_co_occurrence_lift_weighting(con):
    lines = make_lines(con, catalogue_rows())
    data = prepare_training(lines, as_of=AS_OF, settings=RecommendSettings(min_pair_count=2))

    by_confidence = CoOccurrence().fit(data).recommend(1, customers=["x"]).iloc[0]
    by_lift = CoOccurrence(weighting="lift").fit(data).recommend(1, customers=["x"]).iloc[0]

    # lift(A -> E) = n_AE N / (n_A n_E) with N = 39 baskets, n_A = 19, n_E = 6, n_AE = 6.
    assert by_lift.product_id == by_confidence.product_id == "E"
    assert by_lift.score == pytest.approx(by_confidence.score * 6 * 39 / (19 * 6), rel=1e-12)
    with pytest.raises(ConfigError, match="weighting 'cosine' is not valid; use one of: confidence, lift"):
        CoOccurrence(weighting="cosine")


def test_recommend_before_fit():
    with pytest.raises(NotFittedError, match="Popularity has not been fitted"):
        Popularity().recommend(3)


def test_unknown_method(con):
    lines = make_lines(con, catalogue_rows())
    with pytest.raises(ConfigError, match="method 'magic' is not valid; use one of: auto, co_occurrence"):
        recommend(lines, method="magic")


def test_split_outside_data(con):
    lines = make_lines(con, catalogue_rows())
    with pytest.raises(ConfigError, match="split date 2025-01-01 must be after"):
        recommend(lines, as_of=AS_OF, split_date=dt.date(2025, 1, 1))


def test_settings_out_of_range():
    with pytest.raises(ConfigError, match=r"min_pair_count must be in \[1, inf\]; got 0"):
        RecommendSettings(min_pair_count=0)
    with pytest.raises(ConfigError, match="basket 'week' is not valid"):
        RecommendSettings(basket="week")


def test_no_test_purchases(con):
    lines = make_lines(con, catalogue_rows())
    with pytest.raises(InputError, match="no customer of the training period bought a product between 2024-07-01"):
        evaluate(lines, split_date=AS_OF, test_days=10)


# ---------------------------------------------------------------------------------------
# Reasons and the choice of method
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("reason_id", ["bought_with", "similar_customers", "popular", "step_up", "restock"])
def test_reason_text_languages(reason_id):
    row = {"reason_id": reason_id, "reason_product_name": "绿茶 Green tea"}

    english = reason_text(row, "en")
    chinese = reason_text(row, "zh-CN")

    assert english.strip()
    assert chinese.strip()
    assert english != chinese
    assert re.search(r"[\u4e00-\u9fff]", chinese.replace("绿茶", ""))
    assert not re.search(r"[\u4e00-\u9fff]", english.replace("绿茶", ""))
    if reason_id in ("bought_with", "step_up", "restock"):
        for text in (english, chinese):
            assert "绿茶 Green tea" in text


def test_reason_text_examples():
    assert reason_text({"reason_id": "bought_with", "reason_product_name": "X"}, "en") == "often bought with X"
    assert reason_text({"reason_id": "bought_with", "reason_product_name": "X"}, "zh-CN") == "经常与 X 一起购买"
    assert reason_text({"reason_id": "similar_customers", "reason_product_name": None}, "zh-CN") == "和您相似的顾客也买了"


def test_reasons_of_result_rows(con):
    lines = make_lines(con, catalogue_rows())
    items = recommend(lines, k=3, method="co_occurrence", as_of=AS_OF,
                      settings=RecommendSettings(min_pair_count=2)).items

    for _, row in items.iterrows():
        for language in LANGUAGES:
            assert reason_text(row, language).strip()
        if row.reason_id == "bought_with":
            assert row.reason_product_name in reason_text(row, "en")


def test_choose_needs_a_method_to_beat_popularity():
    table = pd.DataFrame({"recall@10": [0.2, 0.2, 0.1]}, index=["popularity", "als", "co_occurrence"])
    assert choose(table) == "popularity"

    table.loc["co_occurrence", "recall@10"] = 0.25
    assert choose(table) == "co_occurrence"


# ---------------------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def online_retail(online_retail_lines):
    return online_retail_lines


def test_median_prices_by_hand():
    counts = pd.DataFrame({"product_id": ["a", "a", "b", "b", "c"], "unit_price": [1.0, 5.0, 2.0, 4.0, 7.0],
                           "lines": [3, 1, 1, 1, 2], "window_lines": [0, 0, 1, 1, 1]})
    prices = _median_prices(counts)
    # a: no line in the window, history [1, 1, 1, 5]; b: window [2, 4]; c: window [7].
    assert prices.to_dict() == {"a": 1.0, "b": 3.0, "c": 7.0}


def test_median_prices_match_sql_median(online_retail):
    sales = purchase_lines(online_retail).filter(_.unit_price.notnull())
    expected = sales.group_by("product_id").aggregate(price=sales.unit_price.median()).to_pandas()
    counts = sales.group_by(["product_id", "unit_price"]).aggregate(lines=_.count(), window_lines=_.count()).to_pandas()
    prices = _median_prices(counts)
    expected = expected.set_index("product_id").price.sort_index()
    pd.testing.assert_series_equal(prices.sort_index(), expected, check_names=False, rtol=1e-12)


@pytest.fixture(scope="module")
def online_retail_result(online_retail):
    return recommend(online_retail, k=10)


def test_online_retail_beats_popularity(online_retail_result):
    evaluation = online_retail_result.evaluation
    chosen = online_retail_result.method

    assert online_retail_result.split_date == dt.date(2011, 11, 10)
    assert chosen != "popularity"
    assert evaluation.loc[chosen, "recall@10"] > evaluation.loc["popularity", "recall@10"]
    assert {"co_occurrence", "als", "replenishment"} <= set(evaluation.index)
    assert "upsell" not in evaluation.index
    metric_columns = [c for c in evaluation.columns if "@" in c] + ["coverage", "filled_share"]
    assert ((evaluation[metric_columns] >= 0) & (evaluation[metric_columns] <= 1)).all().all()
    assert (evaluation.customers > 1000).all()


def test_online_retail_lists_obey_rules(online_retail, online_retail_result):
    items = online_retail_result.items
    as_of = online_retail_result.as_of
    lines = online_retail
    window = lines.filter((lines.order_date >= ibis.date(as_of - dt.timedelta(days=90)))
                          & (lines.order_date < ibis.date(as_of)))
    sold = window.filter(~window.is_return & (window.amount > 0))
    catalogue = set(sold.product_id.to_pandas())
    recent = set(map(tuple, sold.filter(sold.customer_id.notnull()).select("customer_id", "product_id")
                     .distinct().to_pandas().to_numpy()))
    data = prepare_training(lines, as_of=as_of)
    due = set(zip(data.due.customer_id, data.due.product_id))

    assert as_of == dt.date(2011, 12, 10)
    bought = sold.filter(sold.customer_id.notnull()).select("customer_id", "product_id", "product_name").to_pandas()
    is_product = [not non_product(p, n) for p, n in zip(bought.product_id, bought.product_name)]
    buyers = set(bought.customer_id[is_product])
    # Every customer with a product purchase gets a list; customers who only returned goods get none.
    assert set(items.customer_id) == set(data.customers)
    assert len(data.customers) > 4_300
    # Recent buyers of products who are left out returned what they bought in full.
    left_out = buyers - set(data.customers)
    returners = set(lines.filter(lines.is_return & lines.customer_id.notnull()).customer_id.to_pandas())
    assert len(left_out) < 100
    assert left_out <= returners
    assert (items.groupby("customer_id").size() == 10).all()
    assert set(items.product_id) <= catalogue
    assert not (set(zip(items.customer_id, items.product_id)) & (recent - due))
    assert not any(non_product(p, n) for p, n in zip(items.product_id, items.product_name))
    assert online_retail_result.stats["non_product_lines"] > 2_500


@pytest.mark.parametrize("method", ["als", "co_occurrence"])
def test_online_retail_rows_do_not_depend_on_request(online_retail, method):
    model = fit_recommendations(online_retail, k=10, method=method)
    whole = model.recommend()
    customers = model.customers
    # Slices that do not line up with the 1,024-row scoring blocks, single customers (NumPy multiplies
    # one row by a matrix with another BLAS routine) and a scattered subset.
    slices = [model.recommend(customers[start:start + 777]) for start in range(0, len(customers), 777)]
    singles = [model.recommend(customers[position:position + 1]) for position in range(0, len(customers), 401)]
    scattered = model.recommend(customers[::7])

    assert len(slices) > 1
    assert whole.items.customer_id.nunique() == len(customers)
    for part in ("items", "upsell", "replenishment"):
        joined = pd.concat([getattr(result, part) for result in slices], ignore_index=True)
        pd.testing.assert_frame_equal(joined, getattr(whole, part), check_exact=True)
    subset = whole.items[whole.items.customer_id.isin(customers[::7])].reset_index(drop=True)
    pd.testing.assert_frame_equal(scattered.items, subset, check_exact=True)
    single_items = pd.concat([result.items for result in singles], ignore_index=True)
    subset = whole.items[whole.items.customer_id.isin(customers[::401])].reset_index(drop=True)
    pd.testing.assert_frame_equal(single_items, subset, check_exact=True)
    assert (scattered.items.method == method).mean() > 0.5


def test_groceries_time_split(con):
    lines = groceries_member_lines(con)

    evaluation = evaluate(lines, split_date=dt.date(2015, 10, 1), test_days=90)
    table = evaluation.table

    assert evaluation.relevant_items > 4_000
    assert set(table.index) == {"popularity", "co_occurrence", "als", "replenishment"}
    assert ((table[[c for c in table.columns if "@" in c]] >= 0) & (table[[c for c in table.columns if "@" in c]] <= 1)).all().all()
    # Groceries baskets are close to independent draws from 167 items, so popularity is hard to beat.
    assert table.loc["popularity", "recall@10"] > 0.3

