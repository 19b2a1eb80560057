"""The same Ibis expressions on local PySpark and on DuckDB give the same customer summaries and fits."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import urllib.parse

import duckdb
import ibis
import numpy as np
import pandas as pd
import pytest

from revopt.churn import ChurnSettings, churn_features, fit_churn
from revopt.errors import ConfigError
from revopt.ingest import load_orders
from revopt.pipeline import AnalysisSettings, analyze
from revopt.recommend import recommend
from revopt.summary import customer_summary
from revopt.workspace import _check_reachable, connect_backend

from conftest import dataset

pytestmark = [pytest.mark.spark, pytest.mark.slow]


CALIBRATION_END = dt.date(1997, 9, 30)
EXACT_COLUMNS = ["customer_id", "first_purchase", "last_purchase", "purchases", "frequency", "recency_days", "T_days"]
FLOAT_COLUMNS = ["recency", "T", "revenue", "monetary_value"]


def sorted_frame(table) -> pd.DataFrame:
    frame = table.to_pandas().sort_values("customer_id").reset_index(drop=True)
    for column in ("first_purchase", "last_purchase"):
        frame[column] = pd.to_datetime(frame[column]).dt.date
    return frame


def assert_same_numbers(actual, expected, path="kpis"):
    """Compare nested KPI structures: equal keys and texts, floats to 1e-9 (sums run in another order)."""
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), path
        for key in expected:
            assert_same_numbers(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), path
        for index, (left, right) in enumerate(zip(actual, expected)):
            assert_same_numbers(left, right, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-9), path
    else:
        assert actual == expected, path


def test_cdnow_summary_same_on_spark(spark_session, tmp_path):
    tables, _, _ = load_orders(dataset("cdnow", "CDNOW_master.txt"), con=ibis.duckdb.connect(),
                               staging_dir=tmp_path)
    spark_session.createDataFrame(tables.purchases.to_pyarrow()).createOrReplaceTempView("cdnow_purchases")
    spark = ibis.pyspark.connect(spark_session)

    on_duckdb = sorted_frame(customer_summary(tables.purchases, calibration_end=CALIBRATION_END))
    on_spark = sorted_frame(customer_summary(spark.table("cdnow_purchases"), calibration_end=CALIBRATION_END))

    assert len(on_spark) == 23_570
    pd.testing.assert_frame_equal(on_spark[EXACT_COLUMNS], on_duckdb[EXACT_COLUMNS], check_dtype=False)
    for column in FLOAT_COLUMNS:
        np.testing.assert_allclose(on_spark[column], on_duckdb[column], rtol=1e-9, err_msg=column)


def test_analyze_on_spark_backend_matches_duckdb(spark_session, tmp_path):
    settings = AnalysisSettings(calibration_end=CALIBRATION_END, column_map=("2=customer_id", "3=date", "5=amount"))
    path = dataset("cdnow", "CDNOW_sample.txt")
    on_duckdb = analyze(path, tmp_path / "duckdb", settings)
    on_spark = analyze(path, tmp_path / "spark", AnalysisSettings(**{**settings.__dict__,
                                                                       "backend": ibis.pyspark.connect(spark_session)}))

    for model in ("bg_nbd", "gamma_gamma"):
        spark_params = on_spark.model["models"][model]["params"]
        for name, value in on_duckdb.model["models"][model]["params"].items():
            assert spark_params[name] == pytest.approx(value, rel=1e-6), (model, name)
    assert_same_numbers(on_spark.kpis, on_duckdb.kpis)
    np.testing.assert_allclose(on_spark.customers.clv, on_duckdb.customers.clv, rtol=1e-6)
    assert on_spark.model["holdout"]["actual_total"] == on_duckdb.model["holdout"]["actual_total"]
    # The churn features run as the same Ibis expressions on Spark, so the learned model is the same.
    np.testing.assert_allclose(on_spark.customers.churn_probability, on_duckdb.customers.churn_probability,
                               rtol=1e-6, atol=1e-9)
    assert on_spark.model["churn"]["scores"]["model"]["roc_auc"] == pytest.approx(
        on_duckdb.model["churn"]["scores"]["model"]["roc_auc"], rel=1e-9)
    assert on_spark.customers.next_best_action.tolist() == on_duckdb.customers.next_best_action.tolist()


# On the whole Online Retail file, local Spark takes about five times as long as DuckDB, mostly in
# the fixed cost of each of the many small queries of the churn and recommendation steps. The tests
# therefore run on fixed samples: customers whose MD5 of the customer id starts below a hex prefix,
# and guest orders sampled the same way by invoice number.
EIGHTH = "20"
THIRTY_SECOND = "08"
# Net revenue of a customer who returned every purchase is zero in exact arithmetic. Sums in
# another order leave a residue of about 1e-13 of either sign, far below a penny.
ZERO_NET_TOLERANCE = 1e-6


def online_retail_sample(out_path, md5_below: str):
    """Write the raw Online Retail rows of a fixed sample of customers and guest orders to ``out_path``."""
    source = dataset("online_retail", "online_retail.csv.gz")
    sampled_by = "coalesce(CustomerID, 'guest order ' || InvoiceNo)"
    duckdb.sql(
        f"COPY (SELECT * FROM read_csv('{source}', all_varchar = true) "
        f"WHERE left(md5({sampled_by}), 2) < '{md5_below}') TO '{out_path}' (HEADER)"
    )
    return out_path


def on_spark(session, name: str, table: ibis.Table) -> ibis.Table:
    """Copy a DuckDB table into ``session`` through Arrow, as the pipeline does, and return it from Spark."""
    session.createDataFrame(table.to_pyarrow()).createOrReplaceTempView(name)
    return ibis.pyspark.connect(session).table(name)


def test_online_retail_analyze_same_on_spark(spark_session, tmp_path):
    path = online_retail_sample(tmp_path / "orders.csv", EIGHTH)
    settings = AnalysisSettings(currency="GBP", growth=False)
    on_duckdb = analyze(path, tmp_path / "duckdb", settings)
    on_spark = analyze(path, tmp_path / "spark",
                       dataclasses.replace(settings, backend=ibis.pyspark.connect(spark_session)))

    spark_customers, duckdb_customers = on_spark.customers, on_duckdb.customers
    assert len(duckdb_customers) > 500
    exact = ["customer_id", "first_purchase", "last_purchase", "frequency", "orders", "r_score", "f_score",
             "m_score", "segment", "value_tier"]
    pd.testing.assert_frame_equal(spark_customers[exact], duckdb_customers[exact], check_dtype=False)
    for column in ("recency", "T", "monetary_value"):
        np.testing.assert_allclose(spark_customers[column], duckdb_customers[column], rtol=1e-9, err_msg=column)
    np.testing.assert_allclose(spark_customers.total_revenue, duckdb_customers.total_revenue, rtol=1e-9,
                               atol=ZERO_NET_TOLERANCE)
    assert_same_numbers(on_spark.kpis, on_duckdb.kpis)

    assert on_spark.model["purchase_model"] == on_duckdb.model["purchase_model"]
    assert on_spark.model["models"].keys() == on_duckdb.model["models"].keys()
    for model, fitted in on_duckdb.model["models"].items():
        spark_params = on_spark.model["models"][model]["params"]
        for name, value in fitted["params"].items():
            assert spark_params[name] == pytest.approx(value, rel=1e-6), (model, name)
    for column in ("probability_alive", "expected_purchases", "expected_average_value", "clv"):
        np.testing.assert_allclose(spark_customers[column], duckdb_customers[column], rtol=1e-6, err_msg=column)


def test_online_retail_churn_same_on_spark(spark_session, tmp_path):
    path = online_retail_sample(tmp_path / "orders.csv", THIRTY_SECOND)
    tables, _, _ = load_orders(path, con=ibis.duckdb.connect(), staging_dir=tmp_path / "staging")
    lines, purchases = tables.lines, tables.purchases
    spark_lines = on_spark(spark_session, "retail_lines", lines)
    spark_purchases = on_spark(spark_session, "retail_purchases", purchases)
    end = purchases.order_date.max().to_pyarrow().as_py()
    # Fewer boosting rounds than the default only to save time: the engine computes the features,
    # and the classifier receives the same feature table on either engine.
    settings = ChurnSettings(horizon_days=90, n_estimators=20)

    cutoff = end - dt.timedelta(days=90)
    features = churn_features(lines, purchases, cutoff=cutoff).order_by("customer_id").to_pandas()
    spark_features = churn_features(spark_lines, spark_purchases, cutoff=cutoff).order_by("customer_id").to_pandas()
    assert list(spark_features.columns) == list(features.columns)
    assert spark_features.customer_id.tolist() == features.customer_id.tolist()
    for column in features.columns.drop("customer_id"):
        np.testing.assert_allclose(spark_features[column].to_numpy(float), features[column].to_numpy(float),
                                   rtol=1e-9, atol=ZERO_NET_TOLERANCE, err_msg=column)

    model = fit_churn(lines, purchases, settings, end=end)
    spark_model = fit_churn(spark_lines, spark_purchases, settings, end=end)
    assert_same_numbers(spark_model.evaluation.to_dict(), model.evaluation.to_dict(), path="churn.evaluation")
    scores = model.score(lines, purchases, as_of=end)
    spark_scores = spark_model.score(spark_lines, spark_purchases, as_of=end)
    assert spark_scores.customer_id.tolist() == scores.customer_id.tolist()
    np.testing.assert_allclose(spark_scores.churn_probability, scores.churn_probability, rtol=1e-6, atol=1e-9)
    for rank in (1, 2, 3):
        assert spark_scores[f"churn_reason_{rank}"].tolist() == scores[f"churn_reason_{rank}"].tolist(), rank
        np.testing.assert_allclose(spark_scores[f"churn_reason_{rank}_value"], scores[f"churn_reason_{rank}_value"],
                                   rtol=1e-9, atol=ZERO_NET_TOLERANCE)


def test_online_retail_recommendations_same_on_spark(spark_session, tmp_path):
    path = online_retail_sample(tmp_path / "orders.csv", THIRTY_SECOND)
    tables, _, _ = load_orders(path, con=ibis.duckdb.connect(), staging_dir=tmp_path / "staging")
    result = recommend(tables.lines, k=10)
    spark_result = recommend(on_spark(spark_session, "retail_rec_lines", tables.lines), k=10)

    assert spark_result.method == result.method
    assert spark_result.stats == result.stats
    pd.testing.assert_frame_equal(spark_result.evaluation.drop(columns="seconds"),
                                  result.evaluation.drop(columns="seconds"), rtol=1e-9)
    for name in ("items", "upsell", "replenishment"):
        expected, actual = getattr(result, name), getattr(spark_result, name)
        pd.testing.assert_frame_equal(actual, expected, check_dtype=False, rtol=1e-6, obj=name)


SPARK_CONNECT_MODULES = ("grpc", "grpc_status", "google.rpc")


def test_connect_backend_local_master(tmp_path):
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("PySpark needs a Java runtime and none is on PATH")
    warehouse = urllib.parse.quote(str(tmp_path / "warehouse"))
    url = f"local[1]?spark.ui.enabled=false&spark.sql.warehouse.dir={warehouse}"
    # A fresh process, because a Spark session already running in this one would be reused.
    script = """
import json, sys
import ibis
from pyspark.sql import SparkSession
from revopt.errors import ConfigError
from revopt.workspace import connect_backend

backend = connect_backend(sys.argv[1])
session = SparkSession.getActiveSession()
total = backend.execute(ibis.memtable({"x": [1, 2, 3]}).x.sum())
try:
    connect_backend("local[2]")
    other_master = None
except ConfigError as error:
    other_master = str(error)
print(json.dumps({"backend": backend.name, "master": session.sparkContext.master,
                  "ui": session.conf.get("spark.ui.enabled"), "total": int(total), "other_master": other_master,
                  "driver_host": session.conf.get("spark.driver.host"),
                  "bind_address": session.conf.get("spark.driver.bindAddress")}))
session.stop()
"""
    done = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True, timeout=180,
                          cwd=tmp_path, env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])

    assert report["backend"] == "pyspark"
    assert report["master"] == "local[1]"
    assert report["ui"] == "false"
    assert report["total"] == 6
    assert "already running" in report["other_master"]
    assert report["driver_host"] == "127.0.0.1"
    assert report["bind_address"] == "127.0.0.1"


def test_connect_backend_spark_connect_without_packages(monkeypatch):
    for module in SPARK_CONNECT_MODULES:
        monkeypatch.setitem(sys.modules, module, None)  # makes the import fail as if not installed
    with pytest.raises(ConfigError, match="grpcio, grpcio-status, googleapis-common-protos") as raised:
        connect_backend("sc://127.0.0.1:15002/;token=secret")

    assert "pyspark[connect]==" in str(raised.value)
    assert "secret" not in str(raised.value)
    assert "secret" not in raised.value.localized("zh-CN")


@pytest.mark.parametrize("url, detail", [
    ("local[1]?executor.memory=2g", "not a Spark setting"),
    ("local[1]?spark.ui.enabled", "bad query field"),
    ("pyspark://host:7077", "takes no host or path"),
    ("nosuch://127.0.0.1", "Don't know how to connect"),
    ("spark://", "needs the master's HOST:PORT"),
], ids=["setting-without-spark-prefix", "setting-without-value", "pyspark-with-host", "unknown-scheme",
        "spark-without-host"])
def test_connect_backend_rejects_bad_urls(url, detail):
    with pytest.raises(ConfigError, match=detail):
        connect_backend(url)


def test_spark_connect_server_that_does_not_answer():
    # Port 1 on loopback has no server, so the probe fails at once instead of the client retrying forever.
    with pytest.raises(ConfigError, match="no Spark Connect server answers at 127.0.0.1:1"):
        _check_reachable("sc://127.0.0.1:1/;token=secret")
