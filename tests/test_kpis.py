"""Tests of revopt.kpis: a hand-worked toy, real data checked against pandas, and PySpark parity."""

from __future__ import annotations

import datetime
import json

import ibis
import pandas as pd
import pytest
from conftest import dataset

from revopt.errors import ConfigError, InputError
from revopt.kpis import compute_kpis, kpi_labels

# Sums of a few hundred thousand float amounts in a different order (DuckDB vs pandas) differ
# by rounding only, far below this.
REL_TOLERANCE = 1e-9

SUMMARY_KEYS = [
    "customers",
    "orders",
    "purchases",
    "revenue",
    "gross_revenue",
    "returns",
    "revenue_without_customer_id",
    "orders_without_customer_id",
    "average_order_value",
    "purchase_frequency",
    "repeat_purchase_rate",
    "first_date",
    "last_date",
]

LINE_COLUMNS = ["customer_id", "order_id", "order_date", "amount", "is_return"]
PURCHASE_COLUMNS = ["customer_id", "order_date", "amount", "orders"]


def _frame(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    frame["order_date"] = [datetime.date.fromisoformat(text) for text in frame["order_date"]]
    return frame


def _tables(lines: pd.DataFrame, purchases: pd.DataFrame) -> tuple[ibis.Table, ibis.Table]:
    """Load both frames into a fresh in-memory DuckDB, with order_date typed as date."""
    con = ibis.duckdb.connect()
    line_table = con.create_table("lines", lines)
    purchase_table = con.create_table("purchases", purchases)
    return (
        line_table.mutate(order_date=line_table.order_date.cast("date")),
        purchase_table.mutate(order_date=purchase_table.order_date.cast("date")),
    )


# --- hand-worked toy --------------------------------------------------------------------------
#
# Customers A and B first buy in January 2024, C and D in February. Guests (no customer id) place
# orders o3 and o7, and o7 carries a -1.00 discount line that is not a return. r1 and r2 are
# return-only orders: r1 returns part of A's o1, r2 returns the guest order o3.
#
#   revenue        = 10+5+20+7+30+2-5+40+12+3-1+15+25-7           = 156
#   gross_revenue  = 10+5+20+7+30+2+40+12+3+15+25 (positive sales) = 169
#   returns        = 5 + 7                                         = 12
#   guest revenue  = 7 + 3 - 1 - 7                                 = 2,  guest orders o3, o7 = 2
#   orders         = o1..o10 (r1, r2 have only return lines)       = 10, AOV = 156 / 10 = 15.6
#   purchases      = 7 customer-days (A buys o4 and o5 on one day), customers = 4
#   frequency      = 7 / 4 = 1.75; A, B, C buy on two days, D on one: repeat rate = 3 / 4
#
# Active per month: Jan {A, B}, Feb {A, C, D}, Mar {B, C}.
#   Feb: retained {A} = 1 of 2 -> 0.5;  Mar: retained {C} = 1 of 3 -> 1/3.
# Cohorts (customers; net purchase revenue):
#   2024-01 (A, B): [2, 1 (A), 1 (B)];  [15+20, 32, 25]
#   2024-02 (C, D): [2, 1 (C), None];   [40+12, 15, None]  (April lies after the data)

TOY_LINES = [
    ("A", "o1", "2024-01-05", 10.0, False),
    ("A", "o1", "2024-01-05", 5.0, False),
    ("B", "o2", "2024-01-20", 20.0, False),
    (None, "o3", "2024-01-22", 7.0, False),
    ("A", "o4", "2024-02-03", 30.0, False),
    ("A", "o5", "2024-02-03", 2.0, False),
    ("A", "r1", "2024-02-10", -5.0, True),
    ("C", "o6", "2024-02-14", 40.0, False),
    (None, "o7", "2024-02-15", 3.0, False),
    (None, "o7", "2024-02-15", -1.0, False),
    ("D", "o10", "2024-02-20", 12.0, False),
    ("C", "o8", "2024-03-01", 15.0, False),
    ("B", "o9", "2024-03-30", 25.0, False),
    (None, "r2", "2024-03-31", -7.0, True),
]
TOY_PURCHASES = [
    ("A", "2024-01-05", 15.0, 1),
    ("B", "2024-01-20", 20.0, 1),
    ("A", "2024-02-03", 32.0, 2),
    ("C", "2024-02-14", 40.0, 1),
    ("D", "2024-02-20", 12.0, 1),
    ("C", "2024-03-01", 15.0, 1),
    ("B", "2024-03-30", 25.0, 1),
]


@pytest.fixture
def toy_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _frame(TOY_LINES, LINE_COLUMNS), _frame(TOY_PURCHASES, PURCHASE_COLUMNS)


@pytest.fixture
def toy(toy_frames) -> tuple[ibis.Table, ibis.Table]:
    return _tables(*toy_frames)


def test_toy_summary(toy):
    result = compute_kpis(*toy)

    assert result["customers"] == 4
    assert result["orders"] == 10
    assert result["purchases"] == 7
    assert result["revenue"] == pytest.approx(156.0)
    assert result["gross_revenue"] == pytest.approx(169.0)
    assert result["returns"] == pytest.approx(12.0)
    assert result["revenue_without_customer_id"] == pytest.approx(2.0)
    assert result["orders_without_customer_id"] == 2
    assert result["average_order_value"] == pytest.approx(15.6)
    assert result["purchase_frequency"] == pytest.approx(1.75)
    assert result["repeat_purchase_rate"] == pytest.approx(0.75)
    assert result["first_date"] == "2024-01-05"
    assert result["last_date"] == "2024-03-31"
    assert list(result)[: len(SUMMARY_KEYS)] == SUMMARY_KEYS


def test_toy_monthly_retention(toy):
    retention = compute_kpis(*toy)["retention"]

    assert [entry["period"] for entry in retention] == ["2024-02", "2024-03"]
    february, march = retention
    assert february["active_customers"] == 3
    assert february["active_previous"] == 2
    assert february["retained"] == 1
    assert february["retention_rate"] == pytest.approx(0.5)
    assert february["churn_rate"] == pytest.approx(0.5)
    assert march["active_customers"] == 2
    assert march["active_previous"] == 3
    assert march["retained"] == 1
    assert march["retention_rate"] == pytest.approx(1 / 3)
    assert march["churn_rate"] == pytest.approx(2 / 3)


def test_toy_monthly_cohorts(toy):
    cohorts = compute_kpis(*toy)["cohorts"]

    assert cohorts["period"] == "month"
    assert cohorts["cohorts"] == ["2024-01", "2024-02"]
    assert cohorts["periods_since"] == [0, 1, 2]
    assert cohorts["sizes"] == [2, 2]
    assert cohorts["customers"] == [[2, 1, 1], [2, 1, None]]
    assert cohorts["revenue"] == [[35.0, 32.0, 25.0], [52.0, 15.0, None]]
    assert cohorts["retention_rate"] == [[1.0, 0.5, 0.5], [1.0, 0.5, None]]


def test_toy_weekly_periods(toy):
    # ISO weeks start on Monday, and 2024-01-01 is a Monday. The data spans the weeks of 2024-01-01
    # (A on Fri 01-05) to 2024-03-25 (B on Sat 03-30, r2 on Sun 03-31): 13 weeks.
    result = compute_kpis(*toy, period="week")
    retention = {entry["period"]: entry for entry in result["retention"]}

    assert len(result["retention"]) == 12
    assert result["retention"][0]["period"] == "2024-01-08"
    assert result["retention"][-1]["period"] == "2024-03-25"
    # Week of 01-29: A buys on Sat 02-03. No customer bought in the week of 01-22, so the rate is undefined.
    assert retention["2024-01-29"]["active_customers"] == 1
    assert retention["2024-01-29"]["active_previous"] == 0
    assert retention["2024-01-29"]["retention_rate"] is None
    assert retention["2024-01-29"]["churn_rate"] is None
    # Week of 02-19: D buys, C (week of 02-12) does not come back: rate 0, churn 1.
    assert retention["2024-02-19"]["active_previous"] == 1
    assert retention["2024-02-19"]["retained"] == 0
    assert retention["2024-02-19"]["retention_rate"] == 0.0
    assert retention["2024-02-19"]["churn_rate"] == 1.0

    cohorts = result["cohorts"]
    assert cohorts["period"] == "week"
    assert cohorts["cohorts"] == ["2024-01-01", "2024-01-15", "2024-02-12", "2024-02-19"]
    assert cohorts["periods_since"] == list(range(13))
    assert cohorts["sizes"] == [1, 1, 1, 1]
    # A comes back 4 weeks after the first purchase (week of 01-29), C 2 weeks after (week of 02-26).
    assert cohorts["customers"][0][4] == 1
    assert cohorts["revenue"][0][4] == 32.0
    assert cohorts["customers"][2][2] == 1
    # The cohort of 02-19 is 5 weeks before the last week, so columns 6..12 lie after the data.
    assert cohorts["customers"][3][5] == 0
    assert cohorts["customers"][3][6:] == [None] * 7


def test_gap_period_has_undefined_rates():
    # Purchases in December 2020 and February 2021 only. January has no active customer, so
    # February's rates are undefined, while January's are a real 0 (both December buyers left).
    lines = _frame(
        [
            ("A", "o1", "2020-12-31", 10.0, False),
            ("B", "o2", "2020-12-02", 10.0, False),
            ("A", "o3", "2021-02-10", 10.0, False),
        ],
        LINE_COLUMNS,
    )
    purchases = _frame(
        [("A", "2020-12-31", 10.0, 1), ("B", "2020-12-02", 10.0, 1), ("A", "2021-02-10", 10.0, 1)],
        PURCHASE_COLUMNS,
    )
    result = compute_kpis(*_tables(lines, purchases))

    january, february = result["retention"]
    assert january["period"] == "2021-01"
    assert january["active_customers"] == 0
    assert january["retention_rate"] == 0.0
    assert january["churn_rate"] == 1.0
    assert february["period"] == "2021-02"
    assert february["active_previous"] == 0
    assert february["retention_rate"] is None
    assert february["churn_rate"] is None
    assert result["cohorts"]["customers"] == [[2, 0, 1]]


def test_week_label_across_new_year():
    # Thursday 2020-12-31 and Friday 2021-01-01 both lie in the ISO week starting Monday 2020-12-28.
    lines = _frame(
        [("A", "o1", "2020-12-31", 10.0, False), ("B", "o2", "2021-01-01", 5.0, False)],
        LINE_COLUMNS,
    )
    purchases = _frame([("A", "2020-12-31", 10.0, 1), ("B", "2021-01-01", 5.0, 1)], PURCHASE_COLUMNS)
    cohorts = compute_kpis(*_tables(lines, purchases), period="week")["cohorts"]

    assert cohorts["cohorts"] == ["2020-12-28"]
    assert cohorts["sizes"] == [2]
    assert cohorts["revenue"] == [[15.0]]


def test_empty_tables_give_zeros_and_undefined_ratios(toy):
    lines, purchases = toy
    no_rows = ibis.literal(False)
    result = compute_kpis(lines.filter(no_rows), purchases.filter(no_rows))

    assert result["customers"] == 0
    assert result["orders"] == 0
    assert result["revenue"] == 0.0
    assert result["returns"] == 0.0
    assert result["average_order_value"] is None
    assert result["purchase_frequency"] is None
    assert result["repeat_purchase_rate"] is None
    assert result["first_date"] is None
    assert result["retention"] == []
    assert result["cohorts"]["cohorts"] == []


def test_result_is_plain_json(toy):
    for period in ("month", "week"):
        result = compute_kpis(*toy, period=period)
        # allow_nan=False rejects NaN, so undefined values must be None.
        assert json.loads(json.dumps(result, allow_nan=False)) == result


@pytest.mark.parametrize("period", ["quarter", "Month", "m", "weeks"])
def test_invalid_period_raises_config_error(toy, period):
    with pytest.raises(ConfigError, match=r"use one of: month, week"):
        compute_kpis(*toy, period=period)


def test_missing_column_raises_input_error(toy):
    lines, purchases = toy
    with pytest.raises(InputError, match=r"lines is missing the columns is_return\."):
        compute_kpis(lines.drop("is_return"), purchases)


def test_timestamp_order_date_raises_input_error(toy):
    lines, purchases = toy
    with pytest.raises(InputError, match=r"purchases.order_date must be a date column; got timestamp"):
        compute_kpis(lines, purchases.mutate(order_date=purchases.order_date.cast("timestamp")))


def test_guest_rows_in_purchases_raise_input_error(toy_frames):
    lines, purchases = toy_frames
    purchases.loc[0, "customer_id"] = None
    with pytest.raises(InputError, match=r"purchases has a NULL customer_id in 1 rows"):
        compute_kpis(*_tables(lines, purchases))


def test_kpi_labels_in_both_languages():
    chinese = kpi_labels("zh-CN")
    english = kpi_labels("en")

    assert chinese["customers"] == "客户数"
    assert chinese["orders"] == "订单数"
    assert chinese["average_order_value"] == "客单价"
    assert chinese["purchase_frequency"] == "购买频次"
    assert chinese["repeat_purchase_rate"] == "复购率"
    assert chinese["retention_rate"] == "留存率"
    assert chinese["churn_rate"] == "流失率"
    assert english["average_order_value"] == "Average order value"
    assert set(chinese) == set(english)
    for key in SUMMARY_KEYS + ["active_customers", "active_previous", "retained"]:
        assert key in chinese, key


def test_kpi_labels_reject_unknown_language():
    with pytest.raises(ConfigError, match=r"use one of: zh-CN, en"):
        kpi_labels("fr")


# --- real data: independent pandas computation ------------------------------------------------


def _purchases_from_lines(lines: pd.DataFrame) -> pd.DataFrame:
    """Merge identified lines into one row per customer-day that has at least one non-return line."""
    identified = lines[lines["customer_id"].notna()].assign(sale_order=lambda frame: frame["order_id"])
    identified.loc[identified["is_return"], "sale_order"] = None
    per_day = identified.groupby(["customer_id", "order_date"], as_index=False).agg(
        amount=("amount", "sum"), orders=("sale_order", "nunique")
    )
    return per_day[per_day["orders"] > 0].reset_index(drop=True)


def _pandas_period(dates: pd.Series, period: str) -> pd.Series:
    # W-SUN periods end on Sunday, so they start on Monday like ISO weeks.
    return dates.dt.to_period("M" if period == "month" else "W-SUN")


def _pandas_label(value: pd.Period, period: str) -> str:
    return str(value) if period == "month" else value.start_time.date().isoformat()


def _pandas_retention(purchases: pd.DataFrame, period: str) -> dict[str, float | None]:
    """Return {period label: retention rate} for every period after the first, gaps included."""
    active = purchases.assign(period=_pandas_period(purchases["order_date"], period))
    customers_by_period = active.groupby("period")["customer_id"].agg(set).to_dict()
    all_periods = pd.period_range(min(customers_by_period), max(customers_by_period))
    rates = {}
    for previous, current in zip(all_periods[:-1], all_periods[1:]):
        before = customers_by_period.get(previous, set())
        now = customers_by_period.get(current, set())
        rates[_pandas_label(current, period)] = len(before & now) / len(before) if before else None
    return rates


def _pandas_cohort_cells(purchases: pd.DataFrame, period: str) -> pd.DataFrame:
    """Return active customers and revenue per (cohort label, periods since first purchase)."""
    periods = _pandas_period(purchases["order_date"], period)
    frame = purchases.assign(ordinal=periods.array.asi8, period=periods)
    frame["cohort_ordinal"] = frame.groupby("customer_id")["ordinal"].transform("min")
    frame["periods_since"] = frame["ordinal"] - frame["cohort_ordinal"]
    frame["cohort"] = frame.groupby("customer_id")["period"].transform("min").map(
        lambda value: _pandas_label(value, period)
    )
    return frame.groupby(["cohort", "periods_since"]).agg(
        customers=("customer_id", "nunique"), revenue=("amount", "sum")
    )


def _assert_cohorts_match(cohorts: dict, cells: pd.DataFrame) -> None:
    for row, cohort in enumerate(cohorts["cohorts"]):
        for column, offset in enumerate(cohorts["periods_since"]):
            customers = cohorts["customers"][row][column]
            if customers is None:
                continue
            if (cohort, offset) in cells.index:
                expected_customers = cells.at[(cohort, offset), "customers"]
                expected_revenue = cells.at[(cohort, offset), "revenue"]
            else:
                expected_customers, expected_revenue = 0, 0.0
            assert customers == expected_customers, (cohort, offset)
            assert cohorts["revenue"][row][column] == pytest.approx(
                expected_revenue, rel=REL_TOLERANCE, abs=1e-6
            ), (cohort, offset)
            assert cohorts["retention_rate"][row][column] == pytest.approx(
                expected_customers / cohorts["sizes"][row], rel=REL_TOLERANCE
            ), (cohort, offset)


@pytest.fixture(scope="module")
def online_retail() -> tuple[pd.DataFrame, pd.DataFrame]:
    raw = pd.read_csv(
        dataset("online_retail", "online_retail.csv.gz"), dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": str}
    ).drop_duplicates()
    lines = pd.DataFrame(
        {
            "customer_id": raw["CustomerID"].str.removesuffix(".0"),
            "order_id": raw["InvoiceNo"],
            "order_date": pd.to_datetime(raw["InvoiceDate"]).dt.normalize(),
            "amount": raw["Quantity"] * raw["UnitPrice"],
            "is_return": raw["Quantity"] < 0,
        }
    ).reset_index(drop=True)
    return lines, _purchases_from_lines(lines)


@pytest.fixture(scope="module")
def online_retail_kpis(online_retail) -> dict[str, dict]:
    tables = _tables(*online_retail)
    return {period: compute_kpis(*tables, period=period) for period in ("month", "week")}


def test_online_retail_summary_matches_pandas(online_retail, online_retail_kpis):
    lines, purchases = online_retail
    result = online_retail_kpis["month"]
    sales = lines[~lines["is_return"]]
    guests = lines[lines["customer_id"].isna()]
    revenue = lines["amount"].sum()
    orders = sales["order_id"].nunique()
    purchase_days = purchases.groupby("customer_id").size()

    assert result["customers"] == purchases["customer_id"].nunique()
    assert result["orders"] == orders
    assert result["purchases"] == len(purchases)
    assert result["revenue"] == pytest.approx(revenue, rel=REL_TOLERANCE)
    assert result["gross_revenue"] == pytest.approx(sales.loc[sales["amount"] > 0, "amount"].sum(), rel=REL_TOLERANCE)
    assert result["returns"] == pytest.approx(-lines.loc[lines["is_return"], "amount"].sum(), rel=REL_TOLERANCE)
    assert result["revenue_without_customer_id"] == pytest.approx(guests["amount"].sum(), rel=REL_TOLERANCE)
    assert result["orders_without_customer_id"] == guests.loc[~guests["is_return"], "order_id"].nunique()
    assert result["average_order_value"] == pytest.approx(revenue / orders, rel=REL_TOLERANCE)
    assert result["purchase_frequency"] == pytest.approx(len(purchases) / len(purchase_days), rel=REL_TOLERANCE)
    assert result["repeat_purchase_rate"] == pytest.approx((purchase_days >= 2).mean(), rel=REL_TOLERANCE)
    assert result["first_date"] == "2010-12-01"
    assert result["last_date"] == "2011-12-09"


@pytest.mark.parametrize("period", ["month", "week"])
def test_online_retail_retention_matches_pandas(online_retail, online_retail_kpis, period):
    expected = _pandas_retention(online_retail[1], period)
    retention = online_retail_kpis[period]["retention"]

    assert [entry["period"] for entry in retention] == list(expected)
    for entry in retention:
        expected_rate = expected[entry["period"]]
        if expected_rate is None:
            assert entry["retention_rate"] is None, entry["period"]
        else:
            assert entry["retention_rate"] == pytest.approx(expected_rate, rel=REL_TOLERANCE), entry["period"]
    if period == "week":
        # No purchases in the week of 2010-12-27 (Christmas closure), so the next week's rate is undefined.
        undefined = [entry["period"] for entry in retention if entry["retention_rate"] is None]
        assert undefined == ["2011-01-03"]
    # The data runs from Wednesday 2010-12-01 to Friday 2011-12-09.
    assert retention[0]["period"] == ("2011-01" if period == "month" else "2010-12-06")
    assert retention[-1]["period"] == ("2011-12" if period == "month" else "2011-12-05")


@pytest.mark.parametrize("period", ["month", "week"])
def test_online_retail_cohorts_match_pandas(online_retail, online_retail_kpis, period):
    cells = _pandas_cohort_cells(online_retail[1], period)
    cohorts = online_retail_kpis[period]["cohorts"]

    assert cohorts["cohorts"] == sorted(cells.index.get_level_values("cohort").unique())
    assert sum(cohorts["sizes"]) == online_retail[1]["customer_id"].nunique()
    _assert_cohorts_match(cohorts, cells)


def test_cdnow_monthly_cohorts():
    raw = pd.read_csv(dataset("cdnow", "CDNOW_master.txt"), sep=r"\s+", dtype={"customer_id": str, "date": str})
    # CDNOW has no order ids. Every row is one order of one or more CDs, and none is a return.
    lines = pd.DataFrame(
        {
            "customer_id": raw["customer_id"],
            "order_id": [f"row-{number}" for number in range(len(raw))],
            "order_date": pd.to_datetime(raw["date"], format="%Y%m%d"),
            "amount": raw["dollar_value"].astype(float),
            "is_return": False,
        }
    )
    purchases = _purchases_from_lines(lines)
    cohorts = compute_kpis(*_tables(lines, purchases))["cohorts"]

    # All 23,570 customers first buy in 1997 Q1. The data ends in June 1998, 17 months after January 1997.
    assert cohorts["cohorts"] == ["1997-01", "1997-02", "1997-03"]
    assert sum(cohorts["sizes"]) == 23570
    assert cohorts["periods_since"] == list(range(18))
    assert cohorts["customers"][0][17] is not None
    assert cohorts["customers"][1][16] is not None
    assert cohorts["customers"][1][17] is None
    assert cohorts["customers"][2][15] is not None
    assert cohorts["customers"][2][16:] == [None, None]
    _assert_cohorts_match(cohorts, _pandas_cohort_cells(purchases, "month"))


# --- portability ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.spark
def test_toy_on_pyspark_matches_duckdb(toy_frames, toy, spark_session):
    lines, purchases = toy_frames
    # Build the Spark frames with an explicit schema, because ibis 12.0.0 create_table on
    # PySpark 4.0.1 turned pandas None in a string column into the text "NaN", not NULL.
    spark_session.createDataFrame(
        lines.astype(object).where(lines.notna(), None),
        "customer_id string, order_id string, order_date date, amount double, is_return boolean",
    ).createOrReplaceTempView("kpi_lines")
    spark_session.createDataFrame(
        purchases, "customer_id string, order_date date, amount double, orders long"
    ).createOrReplaceTempView("kpi_purchases")
    con = ibis.pyspark.connect(spark_session)
    for period in ("month", "week"):
        on_spark = compute_kpis(con.table("kpi_lines"), con.table("kpi_purchases"), period=period)
        assert on_spark == compute_kpis(*toy, period=period), period


def test_partial_last_period_marked_incomplete(online_retail_kpis):
    # Online Retail ends on 2011-12-09, so December 2011 is not complete but November is.
    retention = online_retail_kpis["month"]["retention"]

    assert retention[-1]["period"] == "2011-12"
    assert retention[-1]["complete"] is False
    assert retention[-2]["complete"] is True
    assert all(entry["complete"] for entry in retention[:-1])
