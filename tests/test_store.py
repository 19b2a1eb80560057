"""Incremental loads into a workspace: daily files added one by one, the same file twice, then analyze."""

from __future__ import annotations

import warnings

import ibis
import pandas as pd
import pytest

from revopt.cli import EXIT_INPUT_ERROR, main
from revopt.demo import DemoParameters, generate_shop, write_export
from revopt.errors import ConfigError, DataQualityWarning, InputError
from revopt.pipeline import AnalysisSettings, analyze
from revopt.ingest import daily_purchases, load_orders
from revopt.store import STORE_TABLES, add_orders
from revopt.workspace import DATABASE_NAME

SPLIT_DAY = "2025-07-01"


@pytest.fixture(scope="module")
def daily_files(tmp_path_factory):
    """A demo export, and the same rows split into an early and a late file by order day."""
    folder = tmp_path_factory.mktemp("store")
    shop = generate_shop(DemoParameters(n_customers=800, seed=11))
    whole = write_export(shop, folder / "all" / "orders.csv")
    orders = pd.read_csv(whole, encoding="gbk", dtype=str)
    early = orders[orders["下单时间"] < SPLIT_DAY]
    late = orders[orders["下单时间"] >= SPLIT_DAY]
    paths = {}
    for name, part in (("early", early), ("late", late)):
        paths[name] = folder / f"{name}.csv"
        part.to_csv(paths[name], index=False, encoding="gbk")
    return whole, paths["early"], paths["late"], len(orders)


def test_same_file_twice_changes_nothing(daily_files, tmp_path):
    _, early, late, rows = daily_files
    first = add_orders(early, tmp_path / "ws", tz="Asia/Shanghai")
    second = add_orders(late, tmp_path / "ws", tz="Asia/Shanghai")
    again = add_orders(late, tmp_path / "ws", tz="Asia/Shanghai")

    assert first.lines_skipped == 0
    assert second.lines_skipped == 0
    assert first.rows_read + second.rows_read == rows
    assert again.lines_added == 0
    assert again.orders_added == 0
    assert again.lines_skipped == second.lines_added
    assert again.orders_skipped == second.orders_added
    assert again.stored_lines == second.stored_lines == first.lines_added + second.lines_added


def test_analyze_workspace_matches_one_file(daily_files, tmp_path):
    whole, early, late, _ = daily_files
    for path in (early, late, late):
        add_orders(path, tmp_path / "ws", tz="Asia/Shanghai")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataQualityWarning)
        stored = analyze(None, tmp_path / "from-ws", AnalysisSettings(tz="Asia/Shanghai", workspace=tmp_path / "ws"))
        single = analyze(whole, tmp_path / "from-file", AnalysisSettings(tz="Asia/Shanghai"))

    columns = ["customer_id", "frequency", "recency", "T", "monetary_value", "total_revenue", "clv",
               "probability_alive", "churn_probability", "next_best_action"]
    pd.testing.assert_frame_equal(stored.customers[columns], single.customers[columns])
    assert stored.ingest["rows_kept"] == single.ingest["rows_kept"]
    assert stored.ingest["rows_rejected"] == single.ingest["rows_rejected"]
    assert stored.ingest["rows_read"] == single.ingest["rows_read"]
    assert stored.ingest["rows_loaded"] > stored.ingest["rows_read"]  # the late file was loaded twice
    assert stored.ingest["lines_skipped_as_loaded"] > 0


def stored_purchases(workspace) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stored purchases, and the purchases recomputed from all stored lines, both sorted."""
    con = ibis.duckdb.connect(str(workspace / DATABASE_NAME))
    order = ["customer_id", "order_date"]
    stored = con.table(STORE_TABLES["purchases"]).to_pandas().sort_values(order, ignore_index=True)
    rebuilt = daily_purchases(con.table(STORE_TABLES["lines"])).to_pandas().sort_values(order, ignore_index=True)
    con.disconnect()
    return stored, rebuilt


def test_shared_days_update_purchases(daily_files, tmp_path):
    whole, _, _, _ = daily_files
    orders = pd.read_csv(whole, encoding="gbk", dtype=str)
    # Split by order, not by day: both files contain lines of the same customers on the same days.
    odd = orders["订单编号"].str[-1].isin(list("13579"))
    for name, part in (("odd", orders[odd]), ("even", orders[~odd])):
        part.to_csv(tmp_path / f"{name}.csv", index=False, encoding="gbk")
        add_orders(tmp_path / f"{name}.csv", tmp_path / "ws", tz="Asia/Shanghai")
    add_orders(tmp_path / "odd.csv", tmp_path / "ws", tz="Asia/Shanghai")

    stored, rebuilt = stored_purchases(tmp_path / "ws")
    pd.testing.assert_frame_equal(stored, rebuilt)
    single = load_orders(whole, con=ibis.duckdb.connect(), staging_dir=tmp_path / "staging", tz="Asia/Shanghai")[0]
    assert len(stored) == single.stats["purchases"]
    assert stored.orders.sum() == single.purchases.orders.sum().execute()


def test_purchase_nets_stored_returns(tmp_path):
    header = "order_id,customer_id,date,amount\n"
    (tmp_path / "first.csv").write_text(header + "R1,alice,2025-03-01,-10\nA1,alice,2025-02-01,30\n", encoding="utf-8")
    (tmp_path / "second.csv").write_text(header + "A2,alice,2025-03-01,50\nB1,bob,2025-03-01,20\n", encoding="utf-8")
    add_orders(tmp_path / "first.csv", tmp_path / "ws")
    first, _ = stored_purchases(tmp_path / "ws")
    add_orders(tmp_path / "second.csv", tmp_path / "ws")
    second, rebuilt = stored_purchases(tmp_path / "ws")

    assert first.order_date.astype(str).tolist() == ["2025-02-01"]  # a day of returns only is no purchase
    assert second.amount.tolist() == [30.0, 40.0, 20.0]  # alice's return counts on the day she buys again
    assert second.orders.tolist() == [1, 1, 1]
    pd.testing.assert_frame_equal(second, rebuilt)


def test_workspace_errors(tmp_path, capsys):
    with pytest.raises(InputError, match="holds no orders yet"):
        analyze(None, tmp_path / "out", AnalysisSettings(workspace=tmp_path / "empty"))
    with pytest.raises(ConfigError, match="no orders file was given"):
        analyze(None, tmp_path / "out", AnalysisSettings())

    assert main(["ingest", "orders.csv", "--lang", "en"]) == EXIT_INPUT_ERROR
    assert "needs --workspace" in capsys.readouterr().err


def test_ingest_rejects_bad_memory_limit(daily_files, tmp_path, capsys):
    _, early, _, _ = daily_files
    arguments = ["ingest", str(early), "--workspace", str(tmp_path / "ws"), "--memory-limit", "abc", "--lang", "en"]

    assert main(arguments) == EXIT_INPUT_ERROR
    assert "memory limit 'abc' is not valid" in capsys.readouterr().err
    assert not (tmp_path / "ws").exists()


def test_ingest_command_reports_skips(daily_files, tmp_path, capsys):
    _, early, _, _ = daily_files
    arguments = ["ingest", str(early), "--workspace", str(tmp_path / "ws"), "--tz", "Asia/Shanghai", "--lang", "en",
                 "-q"]
    assert main(arguments) == 0
    first = capsys.readouterr().out
    assert main(arguments) == 0
    second = capsys.readouterr().out

    assert "Added" in first
    assert "Skipped" not in first
    assert "Added 0 order lines of 0 new orders" in second
    assert "that were already in the workspace" in second


def test_workspace_that_is_a_file_or_missing(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    assert main(["ingest", "orders.csv", "--workspace", str(blocker), "--lang", "en"]) == EXIT_INPUT_ERROR
    assert "cannot be created" in capsys.readouterr().err

    assert main(["analyze", "--workspace", str(tmp_path / "typo"), "--out", str(tmp_path / "out"),
                 "--lang", "en"]) == EXIT_INPUT_ERROR
    assert "holds no orders yet" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()
