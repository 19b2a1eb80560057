"""Tests of revopt.scalegen: a chunked demo shop written as partitioned Parquet."""

from __future__ import annotations

import dataclasses
import doctest
import json

import ibis
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from revopt.demo import ORDER_COLUMNS, STATUS_COMPLETED, TRUTH_FILE_NAME, DemoParameters, generate_shop
from revopt.errors import ConfigError
from revopt import scalegen
from revopt.ingest import load_orders
from revopt.models.bgnbd import BetaGeoModel
from revopt.scalegen import (
    PRODUCTS_FILE_NAME,
    SCALE_PARAMETERS,
    _generate_shop_with_catalogue,
    _shared_catalogue,
    write_scale_log,
)
from revopt.summary import compressed_statistics, customer_summary

SEED = 7
N_CUSTOMERS = 6_000
CHUNK_CUSTOMERS = 2_000
DAYS_PER_WEEK = 7.0
# An unbiased fit puts a parameter outside three standard errors with probability 0.3%.
RECOVERY_TOLERANCE_SE = 3.0


@pytest.fixture(scope="module")
def scale_log(tmp_path_factory):
    """Three chunks of 2,000 customers."""
    return write_scale_log(
        tmp_path_factory.mktemp("scale"), n_customers=N_CUSTOMERS, chunk_customers=CHUNK_CUSTOMERS, seed=SEED
    )


@pytest.fixture(scope="module")
def parts(scale_log):
    """Each part read back with pyarrow, as pandas frames in chunk order."""
    return [pq.read_table(chunk.path).to_pandas() for chunk in scale_log.chunks]


@pytest.fixture(scope="module")
def rows(parts):
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def truth(scale_log):
    return json.loads(scale_log.truth_path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ingested(scale_log, tmp_path_factory):
    """The orders folder read by revopt's own ingest, as ``revopt analyze`` reads it."""
    tables, staged, mapping = load_orders(
        scale_log.orders_dir, con=ibis.duckdb.connect(), staging_dir=tmp_path_factory.mktemp("staging")
    )
    return tables, staged, mapping


# ---------------------------------------------------------------------------------------------
# Same process as the demo
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [DemoParameters(n_customers=1_500, seed=11),
                                    dataclasses.replace(SCALE_PARAMETERS, n_customers=800, seed=3)],
                         ids=["demo", "scale"])
def test_chunk_reproduces_demo_shop(params):
    chunk = _generate_shop_with_catalogue(params, _shared_catalogue(params.seed))
    expected = generate_shop(params)
    for name in ("orders", "customers", "order_totals", "products"):
        pd.testing.assert_frame_equal(getattr(chunk.shop, name), getattr(expected, name), obj=name)
    assert chunk.duplicate_rows == expected.orders.duplicated().sum()
    assert (chunk.order_numbers.astype(str) == expected.order_totals["order_id"].to_numpy(dtype=str)).all()


# ---------------------------------------------------------------------------------------------
# Files and layout
# ---------------------------------------------------------------------------------------------


def test_files_written(scale_log):
    out_dir = scale_log.orders_dir.parent
    assert sorted(path.name for path in scale_log.orders_dir.iterdir()) == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"
    ]
    assert (out_dir / PRODUCTS_FILE_NAME).is_file()
    assert (out_dir / TRUTH_FILE_NAME).is_file()
    assert [chunk.customers for chunk in scale_log.chunks] == [CHUNK_CUSTOMERS] * 3


def test_parquet_schema(scale_log):
    schema = pq.read_schema(scale_log.chunks[0].path)
    assert schema.names == list(ORDER_COLUMNS)
    assert schema.field("下单时间").type == pa.timestamp("ms")
    for name in ("数量", "单价", "实付金额"):
        assert schema.field(name).type == pa.float64(), name
    for name in ("订单编号", "买家会员名", "手机号", "商品ID"):
        assert schema.field(name).type == pa.string(), name


def test_row_counts_add_up(scale_log, parts, truth):
    assert [len(part) for part in parts] == [chunk.rows for chunk in scale_log.chunks]
    assert sum(len(part) for part in parts) == scale_log.rows
    assert truth["rows"] == scale_log.rows
    assert truth["counts"]["rows"] == scale_log.rows
    assert [chunk["rows"] for chunk in truth["chunks"]] == [len(part) for part in parts]


def test_each_part_holds_its_customers(scale_log, parts):
    for chunk, part in zip(scale_log.chunks, parts):
        assert part["买家会员名"].nunique() == chunk.customers


def test_ids_disjoint_across_chunks(parts):
    for column in ("订单编号", "买家会员名", "手机号"):
        seen: set[str] = set()
        for part in parts:
            values = set(part[column].dropna())
            assert not values & seen, column
            seen |= values


def test_ids_keep_demo_format(rows):
    assert rows["订单编号"].str.fullmatch(r"[1-9]\d{17}").all()
    members = rows["买家会员名"].dropna()
    assert members.str.fullmatch(r"tb_[0-9a-f]{8}").all()
    assert rows["手机号"].str.fullmatch(r"1\d{10}").all()


def test_one_phone_per_member(rows):
    members = rows.dropna(subset=["买家会员名"])
    phones_per_member = members.groupby("买家会员名")["手机号"].nunique()
    assert (phones_per_member == 1).all()
    assert members["手机号"].nunique() == N_CUSTOMERS


def test_guest_orders_have_own_phones(rows):
    guests = rows[rows["买家会员名"].isna()]
    member_phones = set(rows["手机号"][rows["买家会员名"].notna()])
    assert len(guests) > 0
    assert not set(guests["手机号"]) & member_phones
    # One phone per guest order: duplicate rows and multi-line orders repeat it, other orders do not.
    assert guests.groupby("手机号")["订单编号"].nunique().max() == 1


def test_line_amount_is_quantity_times_unit_price(rows):
    # Unit prices are whole cents, so the product is exact up to float rounding.
    np.testing.assert_allclose(rows["实付金额"], rows["数量"] * rows["单价"], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Catalogue and truth
# ---------------------------------------------------------------------------------------------


def test_products_match_demo_catalogue(scale_log):
    products = pq.read_table(scale_log.products_path).to_pandas()
    demo_products = generate_shop(DemoParameters(n_customers=50, seed=SEED)).products
    assert products["product_id"].tolist() == demo_products["product_id"].tolist()
    assert products["name"].tolist() == demo_products["name"].tolist()
    np.testing.assert_array_equal(products["list_price"], demo_products["list_price"])


def test_every_chunk_sells_from_one_catalogue(scale_log, parts):
    products = pq.read_table(scale_log.products_path).to_pandas().set_index("product_id")
    for part in parts:
        sold = part.drop_duplicates("商品ID").set_index("商品ID")
        assert sold.index.isin(products.index).all()
        assert (sold["商品名称"] == products.loc[sold.index, "name"]).all()
        assert (sold["类目"] == products.loc[sold.index, "category"]).all()


def test_truth_describes_log(truth, scale_log, rows):
    assert truth["seed"] == SEED
    assert truth["n_customers"] == N_CUSTOMERS
    assert truth["parameters"]["n_customers"] == N_CUSTOMERS
    for name in ("r", "alpha", "a", "b", "p", "q", "gamma"):
        assert truth["parameters"][name] == getattr(SCALE_PARAMETERS, name), name
    assert [chunk["seed"] for chunk in truth["chunks"]] == [chunk.seed for chunk in scale_log.chunks]
    assert len(set(chunk.seed for chunk in scale_log.chunks)) == len(scale_log.chunks)
    assert truth["counts"]["duplicate_rows"] == rows.duplicated().sum()
    assert truth["counts"]["products"] == len(pq.read_table(scale_log.products_path))


def test_preset_about_ten_lines_per_customer(scale_log):
    # The preset measured 10.3 lines per customer at 1,000,000 customers, with a standard deviation
    # of 13.5 lines per customer, so the mean over 6,000 customers has a standard deviation of 0.17.
    assert 9.5 < scale_log.rows / scale_log.n_customers < 11.0


# ---------------------------------------------------------------------------------------------
# Determinism and reruns
# ---------------------------------------------------------------------------------------------


def _file_bytes(log) -> dict[str, bytes]:
    files = [chunk.path for chunk in log.chunks] + [log.products_path, log.truth_path]
    return {path.name: path.read_bytes() for path in files}


def test_same_seed_same_files(tmp_path):
    first = write_scale_log(tmp_path / "first", n_customers=600, chunk_customers=300, seed=SEED)
    second = write_scale_log(tmp_path / "second", n_customers=600, chunk_customers=300, seed=SEED)
    assert _file_bytes(first) == _file_bytes(second)


def test_other_seed_other_orders(tmp_path):
    first = write_scale_log(tmp_path / "first", n_customers=600, chunk_customers=300, seed=SEED)
    other = write_scale_log(tmp_path / "other", n_customers=600, chunk_customers=300, seed=SEED + 1)
    assert first.chunks[0].path.read_bytes() != other.chunks[0].path.read_bytes()


def test_catalogue_seed_sets_products(tmp_path):
    log = write_scale_log(tmp_path, n_customers=200, seed=SEED, catalogue_seed=SEED + 1)
    products = pq.read_table(log.products_path).to_pandas()
    expected = generate_shop(DemoParameters(n_customers=50, seed=SEED + 1)).products
    assert products["product_id"].tolist() == expected["product_id"].tolist()


def test_rerun_replaces_earlier_parts(tmp_path):
    write_scale_log(tmp_path, n_customers=900, chunk_customers=300, seed=SEED)
    log = write_scale_log(tmp_path, n_customers=600, chunk_customers=300, seed=SEED)
    assert sorted(path.name for path in log.orders_dir.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert pq.read_table(log.orders_dir).num_rows == log.rows


def test_uneven_split_sizes(tmp_path):
    log = write_scale_log(tmp_path, n_customers=701, chunk_customers=300, seed=SEED)
    assert [chunk.customers for chunk in log.chunks] == [234, 234, 233]


@pytest.mark.parametrize(
    "arguments, match",
    [
        ({"n_customers": 0}, "n_customers"),
        ({"n_customers": 100, "chunk_customers": 0}, "chunk_customers"),
        ({"n_customers": 100, "seed": -1}, "seed"),
        ({"n_customers": 100, "catalogue_seed": -2}, "catalogue_seed"),
    ],
    ids=["no-customers", "empty-chunks", "negative-seed", "negative-catalogue-seed"],
)
def test_rejects_out_of_range(tmp_path, arguments, match):
    with pytest.raises(ConfigError, match=match):
        write_scale_log(tmp_path, **arguments)


def test_docstring_examples_run():
    assert doctest.testmod(scalegen).failed == 0


@pytest.mark.parametrize("arguments", [{"n_customers": 100.5}, {"n_customers": 100, "seed": 1.5}],
                         ids=["fractional-customers", "fractional-seed"])
def test_rejects_non_integers(tmp_path, arguments):
    with pytest.raises(TypeError):
        write_scale_log(tmp_path, **arguments)


def test_rejects_file_as_out_dir(tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot be created"):
        write_scale_log(blocker, n_customers=100)


# ---------------------------------------------------------------------------------------------
# Read back by revopt
# ---------------------------------------------------------------------------------------------


def test_ingest_reads_every_part(ingested, scale_log):
    tables, staged, mapping = ingested
    assert [file.path for file in staged] == [chunk.path for chunk in scale_log.chunks]
    assert tables.stats["rows_read"] == scale_log.rows
    for field, column in (("customer_id", "买家会员名"), ("order_id", "订单编号"), ("date", "下单时间"),
                          ("amount", "实付金额"), ("status", "订单状态"), ("product_id", "商品ID")):
        assert mapping.columns[field] == column, field


def test_ingest_keeps_completed_distinct_lines(ingested, rows):
    tables, _, _ = ingested
    completed = rows.drop_duplicates()
    completed = completed[completed["订单状态"] == STATUS_COMPLETED]
    assert tables.lines.count().execute() == len(completed)
    assert tables.lines.customer_id.nunique().execute() == N_CUSTOMERS
    assert tables.stats["rows_without_customer_id"] == completed["买家会员名"].isna().sum()


def test_ingest_keeps_times_and_amounts(ingested, rows):
    tables, _, _ = ingested
    lines = tables.lines.select("order_id", "product_id", "order_time", "amount").to_pandas()
    expected = rows.drop_duplicates(subset=["订单编号", "商品ID"])
    merged = lines.merge(expected, left_on=["order_id", "product_id"], right_on=["订单编号", "商品ID"], how="left")
    assert (pd.to_datetime(merged["order_time"]) == merged["下单时间"]).all()
    np.testing.assert_allclose(merged["amount"], merged["实付金额"], rtol=0, atol=1e-9)


@pytest.fixture(scope="module")
def bgnbd_fit(ingested):
    tables, _, _ = ingested
    summary = customer_summary(tables.purchases, calibration_end=SCALE_PARAMETERS.end, time_unit="day")
    compressed = compressed_statistics(summary).to_pandas()
    return BetaGeoModel().fit(
        compressed["frequency"].to_numpy(dtype=float),
        compressed["recency_days"].to_numpy(dtype=float) / DAYS_PER_WEEK,
        compressed["T_days"].to_numpy(dtype=float) / DAYS_PER_WEEK,
        weights=compressed["count"].to_numpy(dtype=float),
    )


@pytest.mark.parametrize("name", ["r", "alpha", "a", "b"])
def test_pooled_bgnbd_recovers_parameter(bgnbd_fit, name):
    estimate, standard_error = bgnbd_fit.params_[name], bgnbd_fit.standard_errors_[name]
    true_value = getattr(SCALE_PARAMETERS, name)
    assert abs(estimate - true_value) < RECOVERY_TOLERANCE_SE * standard_error, (estimate, standard_error)


def test_pooled_bgnbd_standard_errors_small(bgnbd_fit):
    # Recovery within three standard errors means something only if the errors are small.
    for name, estimate in bgnbd_fit.params_.items():
        assert bgnbd_fit.standard_errors_[name] < 0.15 * estimate, name


def test_generate_command_writes_parts(tmp_path, capsys):
    from revopt.cli import main

    assert main(["generate", "--out", str(tmp_path / "log"), "--customers", "1500", "--chunk", "600", "--lang", "en",
                 "-q"]) == 0
    out = capsys.readouterr().out
    parts = sorted((tmp_path / "log" / "orders").glob("*.parquet"))

    assert len(parts) == 3
    assert "1,500 customers in 3 Parquet parts" in out
    assert (tmp_path / "log" / "truth.json").is_file()
