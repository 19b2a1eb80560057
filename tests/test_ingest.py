"""Ingest: formats, encodings, headers, dates, duplicates, cancellations, and real exports' counts."""

from __future__ import annotations

import csv
import datetime as dt
import gzip

import ibis
import pandas as pd
import pytest

from revopt.errors import ColumnMappingError, ConfigError, InputError, ParseError
from revopt.ingest import CORE_LINE_COLUMNS, load_orders, parse_map_options
from revopt.ingest.columns import resolve_columns
from revopt.ingest.parsing import detect_date_family, parse_timestamp

from conftest import dataset


def as_dates(series) -> list[dt.date]:
    return sorted(pd.to_datetime(series).dt.date)


def load(path, tmp_path, **options):
    con = ibis.duckdb.connect()
    tables, staged, mapping = load_orders(path, con=con, staging_dir=tmp_path / "staging", **options)
    return tables, staged, mapping


CHINESE_ROWS = [
    ["订单编号", "买家会员名", "手机号", "下单时间", "商品名称", "实付金额", "订单状态"],
    ["A001", "tb_王小明", "13800138000", "2024-06-18 20:15:00", "连衣裙", "199.00", "交易成功"],
    ["A002", "tb_王小明", "13800138000", "2024-06-18 21:00:00", "T恤", "59.90", "交易成功"],
    ["A003", "0012", "13900139000", "2024-11-11 00:05:00", "口红", "￥1,280.00", "交易成功"],
    ["A004", "0012", "13900139000", "2024-11-12 10:00:00", "面霜", "300", "交易关闭"],
    ["A005", "", "", "2024-11-12 11:00:00", "袜子", "20", "交易成功"],
]


def write_csv(path, rows, encoding):
    with open(path, "w", encoding=encoding, newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


@pytest.mark.parametrize("encoding", ["gbk", "gb18030", "utf-8", "utf-8-sig"])
def test_chinese_headers_any_encoding(tmp_path, encoding):
    path = write_csv(tmp_path / "orders.csv", CHINESE_ROWS, encoding)
    tables, staged, mapping = load(path, tmp_path)

    assert mapping.columns["customer_id"] == "买家会员名"
    assert mapping.columns["order_id"] == "订单编号"
    assert mapping.columns["date"] == "下单时间"
    assert mapping.columns["amount"] == "实付金额"
    lines = tables.lines.to_pandas().sort_values("source_row")
    assert lines.customer_id.tolist()[:3] == ["tb_王小明", "tb_王小明", "0012"]
    assert pd.isna(lines.customer_id.iloc[3])
    assert lines.amount.tolist() == [199.0, 59.9, 1280.0, 20.0]
    assert tables.stats["cancelled_rows"] == 1
    assert tables.stats["rows_without_customer_id"] == 1


def test_same_day_orders_merge_into_one_purchase(tmp_path):
    path = write_csv(tmp_path / "orders.csv", CHINESE_ROWS, "gbk")
    tables, _, _ = load(path, tmp_path)

    purchases = tables.purchases.to_pandas().set_index("customer_id")
    assert purchases.loc["tb_王小明", "amount"] == pytest.approx(258.9)
    assert purchases.loc["tb_王小明", "orders"] == 2
    assert tables.stats["purchases_merged"] == 1


def test_leading_zeros_and_phone_stay_text(tmp_path):
    rows = [["手机号", "下单时间", "实付金额"], ["013800138000", "2024-01-02", "10"], ["13800138000", "2024-01-03", "5"]]
    tables, _, mapping = load(write_csv(tmp_path / "o.csv", rows, "utf-8"), tmp_path)

    assert mapping.columns["customer_id"] == "手机号"
    assert sorted(tables.lines.to_pandas().customer_id) == ["013800138000", "13800138000"]


def test_business_time_zone_moves_the_day(tmp_path):
    rows = [["customer_id", "order_time", "amount"], ["c1", "2024-03-01T17:30:00Z", "10"]]
    path = write_csv(tmp_path / "o.csv", rows, "utf-8")
    shanghai, _, _ = load(path, tmp_path, tz="Asia/Shanghai")
    utc, _, _ = load(path, tmp_path, tz="UTC")

    assert as_dates(shanghai.lines.to_pandas().order_date) == [dt.date(2024, 3, 2)]
    assert as_dates(utc.lines.to_pandas().order_date) == [dt.date(2024, 3, 1)]


def test_xlsx_with_dates_and_numbers(tmp_path):
    frame = pd.DataFrame({
        "会员ID": ["007", "008"],
        "下单时间": [pd.Timestamp("2024-05-01 10:00"), pd.Timestamp("2024-05-02 11:00")],
        "数量": [2, 1],
        "单价": [9.5, 100.0],
    })
    path = tmp_path / "orders.xlsx"
    frame.to_excel(path, index=False)
    tables, staged, mapping = load(path, tmp_path)

    lines = tables.lines.to_pandas().sort_values("source_row")
    assert lines.customer_id.tolist() == ["007", "008"]
    assert lines.amount.tolist() == [19.0, 100.0]
    assert as_dates(lines.order_date) == [dt.date(2024, 5, 1), dt.date(2024, 5, 2)]
    assert lines.source_row.tolist() == [2, 3]


def test_excel_serial_dates(tmp_path):
    rows = [["customer", "date", "amount"], ["a", "45292", "1"], ["b", "45293.5", "2"]]
    tables, _, _ = load(write_csv(tmp_path / "o.csv", rows, "utf-8"), tmp_path)

    assert as_dates(tables.lines.to_pandas().order_date) == [dt.date(2024, 1, 1), dt.date(2024, 1, 2)]


@pytest.mark.parametrize("dates", [
    ["2024/6/18", "2024/11/11 20:15"],
    ["2024.06.18", "2024.11.11"],
    ["20240618", "20241111"],
    ["2024年6月18日", "2024年11月11日 09:30:00"],
])
def test_date_forms(tmp_path, dates):
    rows = [["customer", "date", "amount"], ["a", dates[0], "1"], ["b", dates[1], "2"]]
    tables, _, _ = load(write_csv(tmp_path / "o.csv", rows, "utf-8"), tmp_path)

    assert as_dates(tables.lines.to_pandas().order_date) == [dt.date(2024, 6, 18), dt.date(2024, 11, 11)]


def test_ambiguous_day_month_stops(tmp_path):
    rows = [["customer", "date", "amount"], ["a", "03/04/2024", "1"], ["b", "05/06/2024", "2"]]
    path = write_csv(tmp_path / "o.csv", rows, "utf-8")

    with pytest.raises(ParseError, match="--dayfirst"):
        load(path, tmp_path)
    tables, _, _ = load(path, tmp_path, dayfirst=True)
    assert as_dates(tables.lines.to_pandas().order_date) == [dt.date(2024, 4, 3), dt.date(2024, 6, 5)]
    tables, _, _ = load(path, tmp_path, date_format="%m/%d/%Y")
    assert as_dates(tables.lines.to_pandas().order_date) == [dt.date(2024, 3, 4), dt.date(2024, 5, 6)]


def test_day_first_detected_when_day_above_twelve(tmp_path):
    rows = [["customer", "date", "amount"], ["a", "25/12/2024", "1"], ["b", "05/06/2024", "2"]]
    tables, _, _ = load(write_csv(tmp_path / "o.csv", rows, "utf-8"), tmp_path)

    assert as_dates(tables.lines.to_pandas().order_date) == [dt.date(2024, 6, 5), dt.date(2024, 12, 25)]


def test_bad_inputs_give_clear_errors(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        load(empty, tmp_path)

    binary = tmp_path / "picture.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 20)
    with pytest.raises(InputError, match="binary"):
        load(binary, tmp_path)

    no_customer = write_csv(tmp_path / "nc.csv", [["date", "amount"], ["2024-01-01", "3"]], "utf-8")
    with pytest.raises(ColumnMappingError, match="customer_id.*columns found: date, amount"):
        load(no_customer, tmp_path)

    bad_dates = write_csv(tmp_path / "bd.csv", [["customer", "date", "amount"], ["a", "yesterday", "1"]], "utf-8")
    with pytest.raises(ParseError, match="no value parses as a date"):
        load(bad_dates, tmp_path)

    rows = [["customer", "date", "amount"]] + [["a", "2024-01-01", "abc"]] * 3 + [["b", "2024-01-02", "4"]]
    with pytest.raises(ParseError, match=r"3 of 4 rows have amounts that are not numbers.*bd2.csv row 2, column amount"):
        load(write_csv(tmp_path / "bd2.csv", rows, "utf-8"), tmp_path)

    with pytest.raises(ColumnMappingError, match="mapped twice"):
        parse_map_options(["a=customer_id", "b=customer_id"])


def test_missing_amount_suggests_a_free_column_for_it(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("order_id,customer_id,date,note\nA1,alice,2025-03-01,x\n", encoding="utf-8")

    with pytest.raises(ColumnMappingError, match="--map note=amount, or by 1-based position, for example --map 4=amount"):
        load(path, tmp_path)


def test_ambiguous_headers_stop(tmp_path):
    with pytest.raises(ColumnMappingError, match="all look like the customer_id field"):
        resolve_columns(["CustomerID", "customer_id", "date", "amount"], source="x.csv")


def test_few_bad_rows_are_rejected_not_fatal(tmp_path):
    rows = [["customer", "date", "amount"]] + [["a", f"2024-01-{day:02d}", "1"] for day in range(1, 31)]
    rows.append(["b", "2024-02-30", "2"])
    tables, _, _ = load(write_csv(tmp_path / "o.csv", rows, "utf-8"), tmp_path, max_invalid_share=0.05)

    rejected = tables.rejected.to_pandas()
    assert rejected.reason.tolist() == ["invalid_date"]
    assert rejected.source_row.tolist() == [32]
    assert rejected.raw_date.tolist() == ["2024-02-30"]


def test_folder_of_files_read_as_one(tmp_path):
    folder = tmp_path / "daily"
    folder.mkdir()
    write_csv(folder / "a.csv", [["customer", "date", "amount"], ["a", "2024-01-01", "1"]], "utf-8")
    write_csv(folder / "b.csv", [["customer", "date", "amount"], ["a", "2024-01-05", "2"]], "gbk")
    tables, staged, _ = load(folder, tmp_path)

    assert len(staged) == 2
    assert tables.purchases.count().execute() == 2


def test_online_retail_counts_match_source(tmp_path):
    path = dataset("online_retail", "online_retail.csv.gz")
    kept, _, _ = load(path, tmp_path, duplicates="keep")
    lines = kept.lines
    is_cancellation = lines.order_id.startswith("C")
    counts = lines.aggregate(
        cancellations=is_cancellation.sum(),
        other_negative=((lines.quantity < 0) & ~is_cancellation).sum(),
        without_customer=lines.customer_id.isnull().sum(),
    ).to_pandas().iloc[0]

    # Figures stated in the dataset's SOURCE.md (UCI Online Retail).
    assert kept.stats["rows_read"] == 541_909
    assert counts.cancellations == 9_288
    assert counts.other_negative == 1_336
    assert counts.without_customer == 135_080
    # Returns also include the 2 "Adjust bad debt" lines with a negative price.
    assert kept.stats["return_rows"] == 9_288 + 1_336 + 2

    deduplicated, _, _ = load(path, tmp_path)
    assert deduplicated.stats["duplicates_dropped"] == 5_268
    assert deduplicated.stats["rejected_by_reason"] == {"duplicate": 5_268}
    assert deduplicated.stats["rows_kept"] == 541_909 - 5_268


def test_core_line_columns_are_the_same_lines(tmp_path, online_retail_lines):
    path = dataset("online_retail", "online_retail.csv.gz")
    core, _, _ = load(path, tmp_path, line_columns=CORE_LINE_COLUMNS)

    assert core.lines.columns == CORE_LINE_COLUMNS
    order = ["customer_id", "order_id", "order_date", "amount"]
    narrow = core.lines.to_pandas().sort_values(order, ignore_index=True)
    full = online_retail_lines.select(*CORE_LINE_COLUMNS).to_pandas().sort_values(order, ignore_index=True)
    pd.testing.assert_frame_equal(narrow, full)
    # A purchase is a customer's day with a line that is not a return.
    bought = online_retail_lines.filter(online_retail_lines.customer_id.notnull() & ~online_retail_lines.is_return)
    assert core.stats["purchases"] == int(bought.select("customer_id", "order_date").distinct().count().execute())


def test_unknown_line_column_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="line_columns has unknown columns colour"):
        load(dataset("online_retail", "online_retail.csv.gz"), tmp_path, line_columns=("customer_id", "colour"))


def test_cdnow_master_whitespace_file(tmp_path):
    tables, staged, mapping = load(dataset("cdnow", "CDNOW_master.txt"), tmp_path)

    assert staged[0].delimiter == "whitespace"
    assert mapping.columns == {"customer_id": "customer_id", "date": "date", "amount": "dollar_value"}
    # SOURCE.md: 69,659 rows, 23,570 customers, 2,068 rows on the same customer and day as another row.
    assert tables.stats["rows_read"] == 69_659
    assert tables.purchases.customer_id.nunique().execute() == 23_570
    assert tables.stats["purchases_merged"] == 2_068
    # Without an order id identical rows can be separate orders, so the 255 are kept.
    assert tables.stats["identical_rows_kept"] == 255
    assert tables.lines.customer_id.min().execute() == "00001"


def test_groceries_day_first_detected(tmp_path):
    path = dataset("groceries", "groceries_member_date_item.csv")
    table = ibis.duckdb.connect().read_csv(str(path), all_varchar=True)

    family = detect_date_family(table, "Date", dayfirst=None, source=str(path), column_label="Date")
    parsed = table.aggregate(
        first=parse_timestamp(table.Date, family).min(), last=parse_timestamp(table.Date, family).max(),
        failed=parse_timestamp(table.Date, family).isnull().sum(),
    ).to_pandas().iloc[0]

    # SOURCE.md: dd-mm-yyyy dates from 2014-01-01 to 2015-12-30.
    assert family.name == "dmy_dash"
    assert parsed.failed == 0
    assert parsed["first"] == pd.Timestamp("2014-01-01")
    assert parsed["last"] == pd.Timestamp("2015-12-30")


def test_gzip_text_gbk(tmp_path):
    path = tmp_path / "orders.csv.gz"
    with gzip.open(path, "wt", encoding="gbk") as handle:
        csv.writer(handle).writerows(CHINESE_ROWS)
    tables, staged, _ = load(path, tmp_path)

    assert staged[0].encoding == "gb18030"
    assert tables.stats["rows_read"] == 5


def test_apparel_id_and_price_recognised(tmp_path):
    tables, _, mapping = load(dataset("clvtools_apparel", "apparelTrans.csv"), tmp_path)

    assert mapping.columns == {"customer_id": "Id", "date": "Date", "amount": "Price"}
    # SOURCE.md: 3,187 transactions of 600 customers; 4 customers have two on one date.
    assert tables.stats["rows_read"] == 3_187
    assert tables.purchases.customer_id.nunique().execute() == 600
    assert tables.stats["purchases_merged"] == 4


def test_utc_offset_needs_time_zone(tmp_path):
    rows = [["customer_id", "order_time", "amount"], ["c1", "2024-03-01T17:30:00+08:00", "10"]]
    with pytest.raises(ConfigError, match="--tz"):
        load(write_csv(tmp_path / "o.csv", rows, "utf-8"), tmp_path)


def test_folder_skips_revopt_outputs(tmp_path):
    write_csv(tmp_path / "orders.csv", [["customer", "date", "amount"], ["a", "2024-01-01", "1"]], "utf-8")
    write_csv(tmp_path / "customers.csv", [["customer_id", "frequency"], ["a", "0"]], "utf-8")
    tables, staged, _ = load(tmp_path, tmp_path)

    assert [file.path.name for file in staged] == ["orders.csv"]


def test_profile_and_product_fields_recognised(tmp_path):
    rows = [
        ["订单编号", "买家会员名", "收货人姓名", "性别", "下单时间", "商品ID", "类目", "数量", "单价", "优惠金额", "实付金额"],
        ["B001", "tb_1", "王伟", "男", "2024-06-18 20:15:00", "0042", "美妆", "2", "89.00", "10", "168.00"],
        ["B002", "tb_2", "", "", "2024-06-19 09:00:00", "0043", "", "1", "15", "", "15"],
    ]
    tables, _, mapping = load(write_csv(tmp_path / "orders.csv", rows, "gbk"), tmp_path)
    lines = tables.lines.order_by("order_id").to_pandas()

    assert {"category", "discount", "customer_name", "gender", "unit_price"} <= set(mapping.columns)
    assert lines.customer_name.iloc[0] == "王伟"
    assert pd.isna(lines.customer_name.iloc[1])
    assert lines.gender.iloc[0] == "男"
    assert pd.isna(lines.gender.iloc[1])
    assert lines.category.iloc[0] == "美妆"
    assert pd.isna(lines.category.iloc[1])
    assert lines.unit_price.tolist() == [89.0, 15.0]
    assert lines.discount.iloc[0] == 10.0
    assert pd.isna(lines.discount.iloc[1])
    assert lines.product_id.tolist() == ["0042", "0043"]


def test_baskets_without_amounts_load_only_when_allowed(tmp_path):
    path = dataset("groceries", "groceries_member_date_item.csv")
    with pytest.raises(ColumnMappingError, match="amount"):
        load(path, tmp_path)

    tables, _, _ = load(path, tmp_path, require_amount=False)
    counts = tables.lines.aggregate(n=tables.lines.count(), amounts=tables.lines.amount.count()).to_pandas().iloc[0]
    # SOURCE.md: 38,765 rows, no order id, so the 759 repeated member-day-item rows stay as lines.
    assert counts.n == 38_765
    assert counts.amounts == 0
    assert tables.rejected.count().to_pyarrow().as_py() == 0


def test_quoted_line_breaks_and_null_texts(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text(
        "订单编号,买家会员名,收货人姓名,性别,下单时间,实付金额\n"
        'A1,m1,"王\n小明",男,2024-01-02 10:00:00,10\n'
        "A2,m2,None,nan,2024-01-03 10:00:00,20\n"
        'A3,m1,"王\n小明",男,2024-02-03 10:00:00,30\n',
        encoding="utf-8",
    )
    tables, _, _ = load(path, tmp_path)
    lines = tables.lines.order_by("order_id").to_pandas()

    assert lines.order_id.tolist() == ["A1", "A2", "A3"]
    assert lines.customer_name.iloc[0] == "王\n小明"
    assert pd.isna(lines.customer_name.iloc[1])
    assert pd.isna(lines.gender.iloc[1])
    # Rows count as records, so a quoted cell spanning two lines does not shift later row numbers.
    assert lines.source_row.tolist() == [2, 3, 4]


# --- Parquet: typed columns read in place ----------------------------------------------------------


def test_parquet_keeps_types_and_reads_each_row_once(tmp_path):
    frame = pd.DataFrame({
        "order_id": [101, 102, 102, 103, 104],
        "customer_id": [7, 8, 8, None, 7],
        "order_time": pd.to_datetime(["2024-06-18 20:15", "2024-06-19 09:00", "2024-06-19 09:00",
                                      "2024-06-20 10:00", None]),
        "amount": [19.9, 5.0, 5.0, 3.0, 4.0],
        "status": ["paid", "paid", "paid", "paid", "cancelled"],
    })
    frame.to_parquet(tmp_path / "orders.parquet", index=False)
    tables, staged, _ = load(tmp_path / "orders.parquet", tmp_path)

    assert staged[0].encoding == "parquet"
    assert tables.date_family == "typed"
    lines = tables.lines.order_by("source_row").to_pandas()
    assert lines.source_row.tolist() == [1, 2, 4]
    assert lines.customer_id.tolist()[:2] == ["7", "8"]  # integer ids become text
    assert pd.isna(lines.customer_id.iloc[2])
    assert lines.order_time.iloc[0] == pd.Timestamp("2024-06-18 20:15")
    assert lines.amount.tolist() == [19.9, 5.0, 3.0]
    rejected = tables.rejected.to_pandas().set_index("source_row")
    assert rejected.reason.to_dict() == {3: "duplicate", 5: "cancelled_status"}
    assert rejected.loc[3, "raw_amount"] == "5.0"
    assert tables.stats["rows_read"] == 5
    assert tables.stats["duplicates_dropped"] == 1


def test_parquet_time_zone_aware_times_need_and_use_tz(tmp_path):
    times = pd.to_datetime(["2024-06-18 17:30", "2024-06-19 01:00"]).tz_localize("UTC")
    frame = pd.DataFrame({"order_id": ["a", "b"], "customer_id": ["c1", "c1"], "order_time": times,
                          "amount": [10.0, 12.0]})
    frame.to_parquet(tmp_path / "orders.parquet", index=False)
    with pytest.raises(ConfigError, match="--tz"):
        load(tmp_path / "orders.parquet", tmp_path)
    tables, _, _ = load(tmp_path / "orders.parquet", tmp_path, tz="Asia/Shanghai")
    dates = as_dates(tables.lines.order_by("source_row").to_pandas().order_date)
    # 17:30 UTC is 01:30 the next day in Shanghai.
    assert dates == [dt.date(2024, 6, 19), dt.date(2024, 6, 19)]


def test_parquet_and_csv_give_the_same_lines(tmp_path):
    rows = [["order_id", "customer_id", "order_time", "amount"],
            ["1", "a", "2024-01-02 10:00:00", "10.5"], ["2", "b", "2024-01-03 11:00:00", "7.25"],
            ["2", "b", "2024-01-03 11:00:00", "7.25"], ["3", "a", "2024-02-01 09:30:00", "3"]]
    write_csv(tmp_path / "orders.csv", rows, "utf-8")
    typed = pd.DataFrame(rows[1:], columns=rows[0]).astype({"amount": float})
    typed["order_time"] = pd.to_datetime(typed.order_time)
    typed.to_parquet(tmp_path / "orders.parquet", index=False)
    columns = ["order_id", "customer_id", "order_time", "order_date", "amount", "is_return"]
    from_csv, _, _ = load(tmp_path / "orders.csv", tmp_path / "a")
    from_parquet, _, _ = load(tmp_path / "orders.parquet", tmp_path / "b")
    pd.testing.assert_frame_equal(from_parquet.lines.order_by("order_id").to_pandas()[columns],
                                  from_csv.lines.order_by("order_id").to_pandas()[columns])
    assert from_parquet.stats["duplicates_dropped"] == from_csv.stats["duplicates_dropped"] == 1


def test_parquet_out_of_memory_names_the_memory_limit(tmp_path):
    from revopt.scalegen import write_scale_log
    from revopt.workspace import open_workspace

    write_scale_log(tmp_path / "log", n_customers=500, seed=1)
    con = open_workspace(tmp_path / "ws", memory_limit="100KB")
    with pytest.raises(ConfigError) as caught:
        load_orders(tmp_path / "log" / "orders", con=con, staging_dir=tmp_path / "ws" / "staging", tz="Asia/Shanghai")
    assert caught.value.message_id == "errors.out_of_memory"
    assert "--memory-limit" in caught.value.localized("en")
    assert "--memory-limit" in caught.value.localized("zh-CN")
