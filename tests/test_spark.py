"""The same Ibis expressions on local PySpark and on DuckDB give the same customer summaries and fits."""

from __future__ import annotations

import datetime as dt

import ibis
import numpy as np
import pandas as pd
import pytest

from revopt.ingest import load_orders
from revopt.pipeline import AnalysisSettings, analyze
from revopt.summary import customer_summary

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
