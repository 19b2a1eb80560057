"""Shared fixtures: where the real datasets live, and a skip when they are absent."""

from __future__ import annotations

from pathlib import Path

import pytest

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def dataset(*parts: str) -> Path:
    """Return the path of a shared dataset file, skipping the test when it is not there."""
    path = DATASETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"dataset {path} is not present; the real-data tests need ../shared/datasets beside the repo")
    return path


@pytest.fixture(scope="session")
def online_retail_lines(tmp_path_factory):
    """The clean order lines of Online Retail, loaded once per test session (an Ibis table on DuckDB)."""
    import ibis

    from revopt.ingest import load_orders

    path = dataset("online_retail", "online_retail.csv.gz")
    tables, _, _ = load_orders(path, con=ibis.duckdb.connect(), staging_dir=tmp_path_factory.mktemp("staging"))
    return tables.lines


@pytest.fixture(scope="session")
def spark_session(tmp_path_factory):
    """One local PySpark session for every Spark test, stopped at the end; skips without PySpark or Java."""
    import shutil

    pyspark_sql = pytest.importorskip("pyspark.sql")
    if shutil.which("java") is None:
        pytest.skip("PySpark needs a Java runtime and none is on PATH")
    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    session = (
        pyspark_sql.SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
