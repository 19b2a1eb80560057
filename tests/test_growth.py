"""The growth step inside the main job: churn, recommendations, next best action, messages, export."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import re
import warnings

import ibis
import numpy as np
import pandas as pd
import pytest

import revopt.growth as growth
from revopt.actions import ACTIONS
from revopt.audience import export_audiences, sample_messages
from revopt.churn import churn_reason
from revopt.cli import EXIT_INPUT_ERROR, main
from revopt.demo import DemoParameters, generate_shop, write_export
from revopt.errors import DataQualityWarning, InputError
from revopt.i18n import message
from revopt.ingest import load_orders
from revopt.pipeline import AnalysisSettings, analyze, recommend_orders

from conftest import dataset

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One analyze run on a small demo shop, shared by the tests that read its outputs."""
    folder = tmp_path_factory.mktemp("demo")
    shop = generate_shop(DemoParameters(n_customers=1500, seed=7))
    path = write_export(shop, folder / "orders.csv")
    settings = AnalysisSettings(tz="Asia/Shanghai", language="en", shop_name="小店")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataQualityWarning)
        result = analyze(path, folder / "out", settings)
    return result, folder / "out"


def test_customers_gain_churn_recommendations_and_actions(demo_run):
    result, out = demo_run
    customers = pd.read_parquet(out / "customers.parquet")

    assert len(customers) == len(result.customers) == customers.customer_id.nunique()
    assert customers.churn_probability.between(0, 1).all()
    likely = customers.churn_probability >= 0.5
    assert customers.loc[likely, "churn_reasons_en"].str.len().gt(0).all()
    assert customers.loc[~likely, "churn_reasons_en"].eq("").all()
    assert set(customers.next_best_action) <= set(ACTIONS)
    assert customers.next_best_action.nunique() >= 3
    contacted = customers[customers.next_best_action != "no_contact"]
    # Values are rounded to cents, so a contact worth less than half a cent shows 0.00.
    assert (contacted.action_value >= 0).all()
    assert (customers.loc[customers.next_best_action == "no_contact", "action_value"] == 0).all()
    # Every customer with a purchase in the catalogue window gets recommendations.
    assert customers.recommendation_1.notna().mean() > 0.9


def test_messages_are_complete_and_in_their_language(demo_run):
    _, out = demo_run
    customers = pd.read_parquet(out / "customers.parquet")
    contacted = customers[customers.next_best_action != "no_contact"]

    assert contacted.message_zh.notna().all()
    assert contacted.message_en.notna().all()
    assert contacted.message_zh.map(lambda text: bool(CJK.search(text))).all()
    for text in pd.concat([contacted.message_zh, contacted.message_en]):
        for leftover in ("None", "nan", "{"):
            assert leftover not in text
        assert "小店" in text
    # English text carries CJK only inside names of people and products.
    for row in contacted.head(200).itertuples():
        residue = row.message_en.replace("小店", "")
        for name in (row.customer_name, row.action_product, row.upsell_from_product_name):
            if isinstance(name, str):
                residue = residue.replace(name, "")
        assert not CJK.search(residue), row.message_en
    assert customers.loc[customers.next_best_action == "no_contact", "message_zh"].isna().all()


def test_recommendations_file_and_report_sections(demo_run):
    _, out = demo_run
    recommendations = pd.read_csv(out / "recommendations.csv", encoding="utf-8-sig", dtype={"customer_id": str})
    report = (out / "report.html").read_text(encoding="utf-8")

    assert recommendations.groupby("customer_id")["rank"].max().max() == 10
    assert recommendations.reason_zh.map(lambda text: bool(CJK.search(text))).all()
    assert not recommendations.reason_en.str.contains(r"\{").any()
    for section in ('id="churn-table"', 'id="recommendation-table"', 'id="action-table"'):
        assert section in report


def test_model_json_records_churn_and_recommendation_evaluation(demo_run):
    result, _ = demo_run
    churn = result.model["churn"]
    assert churn["horizon_days"] == 90
    assert set(churn["scores"]) == {"model", "bgnbd_p_alive", "bgnbd_no_purchase"}
    methods = {row["method"] for row in result.model["recommendations"]["evaluation"]}
    assert {"popularity", "co_occurrence", "als"} <= methods
    by_action = {row["next_best_action"]: row["customers"] for row in result.model["actions"]["by_action"]}
    assert sum(by_action.values()) == len(result.customers)


def test_export_writes_one_audience_per_action(demo_run, tmp_path):
    result, out = demo_run
    written = export_audiences(out, tmp_path, "zh-CN")
    counts = result.customers.next_best_action.value_counts()

    assert set(written) == set(counts.index) - {"no_contact"}
    for action, path in written.items():
        assert path.read_bytes().startswith(b"\xef\xbb\xbf")
        frame = pd.read_csv(path, encoding="utf-8-sig", dtype={"customer_id": str})
        assert len(frame) == counts[action]
        assert frame.action_value.is_monotonic_decreasing
        assert frame.message.map(lambda text: bool(CJK.search(text))).all()


def test_preview_and_export_from_cli(demo_run, tmp_path, capsys):
    _, out = demo_run
    assert main(["preview", str(out), "--lang", "en", "-n", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert 2 <= len(lines) <= 2 * len(ACTIONS)
    assert all(line.startswith("[") for line in lines)

    assert main(["export", str(out), "--out", str(tmp_path / "aud"), "--lang", "zh-CN"]) == 0
    assert sorted(p.name for p in (tmp_path / "aud").iterdir())
    assert "->" in capsys.readouterr().out


def test_export_replaces_earlier_audiences_and_rounds(demo_run, tmp_path):
    _, out = demo_run
    (tmp_path / "audience_old_action.csv").write_text("stale", encoding="utf-8")
    written = export_audiences(out, tmp_path, "en")
    frame = pd.read_csv(next(iter(written.values())), encoding="utf-8-sig")

    assert not (tmp_path / "audience_old_action.csv").exists()
    assert (frame.action_value.round(2) == frame.action_value).all()


def test_export_and_preview_bad_places(demo_run, tmp_path, capsys):
    _, out = demo_run
    target = tmp_path / "a-file"
    target.write_text("x", encoding="utf-8")
    assert main(["export", str(out), "--out", str(target), "--lang", "en"]) == EXIT_INPUT_ERROR
    assert capsys.readouterr().err.count("\n") == 1

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "customers.parquet").write_bytes((out / "customers.parquet").read_bytes()[:500])
    assert main(["preview", str(damaged), "--lang", "en"]) == EXIT_INPUT_ERROR
    assert "is damaged" in capsys.readouterr().err


def test_preview_uses_the_run_language(demo_run, capsys):
    _, out = demo_run
    assert main(["preview", str(out), "-n", "1"]) == 0
    # The demo run was written in English, whatever this process's locale is.
    assert "Dear" in capsys.readouterr().out


def test_preview_unknown_action_and_missing_run(demo_run, tmp_path, capsys):
    _, out = demo_run
    with pytest.raises(InputError, match="no customer has the next best action"):
        sample_messages(out, "en", action="teleport")
    assert main(["export", str(tmp_path / "nothing-here"), "--lang", "en"]) == EXIT_INPUT_ERROR
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "revopt analyze" in error


def test_cdnow_without_products_skips_recommendations(tmp_path):
    path = dataset("cdnow", "CDNOW_sample.txt")
    settings = AnalysisSettings(calibration_end=dt.date(1997, 9, 30), language="en", currency="USD",
                                column_map=("2=customer_id", "3=date", "5=amount"))
    with pytest.warns(DataQualityWarning) as caught:
        result = analyze(path, tmp_path / "out", settings)
    texts = [str(warning.message) for warning in caught]

    assert any("recommendations were skipped" in text for text in texts)
    assert any("costs and coupons are in CNY, but amounts here are in USD" in text for text in texts)
    contacted = result.customers[result.customers.next_best_action != "no_contact"]
    assert not contacted.message_en.str.contains("¥").any()

    recommendations = pd.read_csv(tmp_path / "out" / "recommendations.csv", encoding="utf-8-sig")
    assert recommendations.empty
    assert result.model["recommendations"] is None
    assert result.customers.churn_probability.notna().all()
    assert not {"cross_sell", "upsell", "replenishment_reminder"} & set(result.customers.next_best_action)


def test_recommend_groceries_baskets_from_names(tmp_path):
    path = dataset("groceries", "groceries_member_date_item.csv")
    result = recommend_orders(path, tmp_path, AnalysisSettings(language="en"), k=5, basket="customer_day",
                              customers=("1808",))
    items = pd.read_csv(tmp_path / "recommendations.csv", encoding="utf-8-sig", dtype={"customer_id": str})

    # SOURCE.md: 3,898 members; the file names items without ids, so names identify products.
    assert result.stats["customers_recommended"] == items.customer_id.nunique() <= 3898
    assert (items.groupby("customer_id")["rank"].max() <= 5).all()
    assert items.product_id.equals(items.product_name)
    assert result.stats["customers_without_recommendations"] == []
    assert not items.bought_before.all()
    evaluation = pd.read_csv(tmp_path / "recommendation_evaluation.csv", encoding="utf-8-sig")
    assert "popularity" in set(evaluation.method)


def test_recommend_unknown_customer_exits_2(tmp_path, capsys):
    path = dataset("groceries", "groceries_member_date_item.csv")
    code = main(["recommend", str(path), "--out", str(tmp_path / "out"), "--basket", "customer_day", "--lang", "en",
                 "-q", "--customer", "not-a-member", "--customer", "1808"])
    error = capsys.readouterr().err

    assert code == EXIT_INPUT_ERROR
    assert "1 of the customers asked for are not in the export, for example not-a-member" in error
    assert not (tmp_path / "out").exists()


def test_recommend_prints_customer_lists(tmp_path, capsys):
    path = dataset("groceries", "groceries_member_date_item.csv")
    code = main(["recommend", str(path), "--out", str(tmp_path), "--basket", "customer_day", "--lang", "en", "-q",
                 "--customer", "1808", "-k", "3"])
    out = capsys.readouterr().out

    assert code == 0
    assert "1808 #3:" in out
    assert "1808 #4:" not in out


def test_recommend_without_product_column(tmp_path, capsys):
    path = tmp_path / "orders.csv"
    path.write_text("customer,date,amount\na,2024-01-01,5\nb,2024-02-01,6\n", encoding="utf-8")
    code = main(["recommend", str(path), "--out", str(tmp_path / "out"), "--lang", "en"])

    assert code == EXIT_INPUT_ERROR
    assert "no product id column" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_preview_no_contact_explains(demo_run):
    _, out = demo_run
    with pytest.raises(InputError, match="get no message"):
        sample_messages(out, "en", action="no_contact")


def test_no_growth_stops_after_clv(tmp_path):
    path = dataset("cdnow", "CDNOW_sample.txt")
    settings = AnalysisSettings(calibration_end=dt.date(1997, 9, 30), language="en", growth=False,
                                column_map=("2=customer_id", "3=date", "5=amount"))
    result = analyze(path, tmp_path / "out", settings)

    assert "churn_probability" not in result.customers.columns
    assert result.model["churn"] is None
    assert result.model["actions"] is None
    assert "churn" not in result.timings
    assert (tmp_path / "out" / "report.html").is_file()


# ---------------------------------------------------------------------------------------
# Chunks of customers
# ---------------------------------------------------------------------------------------


def grown_in_chunks(path, customers, tmp_path, monkeypatch, caplog, *, chunk: int, tz=None, shop_name=None):
    """Run grow_customers in one chunk on ``customers``, then in chunks of ``chunk`` on them shuffled."""
    tables, _, _ = load_orders(path, con=ibis.duckdb.connect(), staging_dir=tmp_path / "staging", tz=tz)
    observation_end = pd.Timestamp(tables.purchases.order_date.max().execute()).date()
    shuffled = customers.sample(frac=1.0, random_state=3)
    runs = []
    for size, frame in ((len(customers) + 1, customers), (chunk, shuffled)):
        monkeypatch.setattr(growth, "CHUNK_CUSTOMERS", size)
        target = tmp_path / f"recommendations-{size}.csv"
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="revopt.growth"), warnings.catch_warnings():
            warnings.simplefilter("ignore", DataQualityWarning)
            result = growth.grow_customers(
                tables.lines, tables.purchases, frame, observation_end=observation_end, clv_margin=1.0,
                settings=growth.GrowthSettings(shop_name=shop_name), step=lambda name: contextlib.nullcontext(),
                recommendations_path=target)
        chunks = sum("event=growth_chunk " in record.getMessage() for record in caplog.records)
        runs.append((result, target.read_bytes(), chunks))
    return runs


def assert_same_growth(runs, customers: pd.DataFrame, chunk: int) -> None:
    (whole, whole_file, whole_chunks), (parts, parts_file, parts_chunks) = runs
    assert whole_chunks == 1
    assert parts_chunks == math.ceil(len(customers) / chunk)
    assert parts_file == whole_file
    assert whole_file.startswith(b"\xef\xbb\xbf")
    assert whole_file.count(b"\xef\xbb\xbf") == 1
    assert parts.recommendation_rows == whole.recommendation_rows == whole_file.count(b"\n") - 1

    # Rows come back in the order of the customers passed in, which the second run shuffled.
    assert whole.columns.customer_id.tolist() == customers.customer_id.tolist()
    realigned = parts.columns.set_index("customer_id").loc[whole.columns.customer_id].reset_index()
    pd.testing.assert_frame_equal(realigned, whole.columns, check_exact=True)
    # The sums run over customers in another order, so they agree to rounding only.
    for table in ("by_action", "by_segment"):
        expected = pd.DataFrame(whole.summary["actions"][table])
        got = pd.DataFrame(parts.summary["actions"][table])
        pd.testing.assert_frame_equal(got.drop(columns="value"), expected.drop(columns="value"))
        np.testing.assert_allclose(got.value, expected.value, rtol=1e-12)
    assert parts.summary["churn"] == whole.summary["churn"]


def test_demo_chunks_match_one_chunk(demo_run, tmp_path, monkeypatch, caplog):
    result, out = demo_run
    customers = result.customers[["customer_id", "segment", "probability_alive", "expected_purchases", "clv"]]
    runs = grown_in_chunks(out.parent / "orders.csv", customers, tmp_path, monkeypatch, caplog, chunk=97,
                           tz="Asia/Shanghai", shop_name="小店")

    assert_same_growth(runs, customers, chunk=97)
    recommendations = pd.read_csv(tmp_path / "recommendations-97.csv", encoding="utf-8-sig",
                                  dtype={"customer_id": str})
    keys = list(zip(recommendations.customer_id, recommendations["rank"]))
    assert keys == sorted(keys)
    # The demo shop has categories and prices, so every offer column is filled for some customer.
    assert runs[0][0].columns[list(growth.OFFER_COLUMNS)].notna().any().all()


@pytest.mark.slow
def test_online_retail_chunks_match_one_chunk(tmp_path, monkeypatch, caplog):
    path = dataset("online_retail", "online_retail.csv.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataQualityWarning)
        scored = analyze(path, tmp_path / "out", AnalysisSettings(language="en", growth=False)).customers
    customers = scored[["customer_id", "segment", "probability_alive", "expected_purchases", "clv"]]
    runs = grown_in_chunks(path, customers, tmp_path, monkeypatch, caplog, chunk=500)

    assert_same_growth(runs, customers, chunk=500)
    # Online Retail has no categories, so upsell columns are empty and come last.
    columns = list(runs[0][0].columns)
    assert columns.index("upsell_product_name") > columns.index("replenish_due_date")
    assert runs[0][0].columns.upsell_product_name.isna().all()


def test_recommend_file_same_in_chunks(tmp_path, monkeypatch):
    path = dataset("groceries", "groceries_member_date_item.csv")
    written = {}
    for size in (10_000, 700):
        monkeypatch.setattr(growth, "CHUNK_CUSTOMERS", size)
        result = recommend_orders(path, tmp_path / str(size), AnalysisSettings(language="en"), k=5,
                                  basket="customer_day", customers=("1808", "3000"))
        written[size] = ((tmp_path / str(size) / "recommendations.csv").read_bytes(), result)

    (whole, whole_result), (parts, parts_result) = written[10_000], written[700]
    assert parts == whole
    assert parts_result.stats["customers_recommended"] == whole_result.stats["customers_recommended"]
    pd.testing.assert_frame_equal(parts_result.items, whole_result.items, check_exact=True)
    assert set(parts_result.items.customer_id) == {"1808", "3000"}
    file_rows = pd.read_csv(tmp_path / "700" / "recommendations.csv", encoding="utf-8-sig",
                            dtype={"customer_id": str})
    requested = file_rows[file_rows.customer_id.isin(["1808", "3000"])].reset_index(drop=True)
    assert requested[["product_id", "rank", "reason_en"]].equals(
        parts_result.items[["product_id", "rank", "reason_en"]].reset_index(drop=True))


def reason_texts_one_by_one(scores: pd.DataFrame, language: str, horizon_days: int) -> list[str]:
    """The churn reason texts written customer by customer, as the growth step once did."""
    one_day = message("churn.reason.one_purchase_day", language)
    few_days = message("churn.reason.few_purchase_days", language)
    separator = {"zh-CN": "；", "en": "; "}[language]
    texts = []
    for row in scores.itertuples(index=False):
        if not row.churn_probability >= growth.REASONS_MIN_PROBABILITY:
            texts.append("")
            continue
        pairs = [(row.churn_reason_1, row.churn_reason_1_value), (row.churn_reason_2, row.churn_reason_2_value),
                 (row.churn_reason_3, row.churn_reason_3_value)]
        parts = [churn_reason(feature, value, language, horizon_days=horizon_days)
                 for feature, value in pairs if isinstance(feature, str)]
        if one_day in parts:
            parts = [part for part in parts if part != few_days]
        texts.append(separator.join(dict.fromkeys(parts)))
    return texts


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_reason_texts_match_one_by_one(language):
    nan = np.nan
    rows = [
        # probability, (feature, value) x 3
        (0.9, "recency_days", 45.0, "frequency", 1.0, None, nan),
        (0.9, "recency_days", 45.0, "frequency", 1.0, None, nan),  # a repeated row
        (0.7, "gap_mean", nan, "gap_std", nan, "gap_last", nan),  # one purchase day drops "few days"
        (0.7, "gap_std", nan, "gap_trend", nan, "spend_total", 12.5),
        (0.6, "gap_trend", 0.0, "recency_gap_ratio", -0.0, None, nan),  # 0.00 and -0.00 stay apart
        (0.6, "recency_gap_ratio", 0.0, "gap_trend", -0.0, "spend_trend", nan),
        (0.5, None, nan, None, nan, None, nan),  # at the threshold, no feature pushes churn up
        (0.49, "recency_days", 45.0, None, nan, None, nan),  # below the threshold: no text
        (nan, "recency_days", 45.0, None, nan, None, nan),
    ]
    scores = pd.DataFrame(rows, columns=["churn_probability", "churn_reason_1", "churn_reason_1_value",
                                         "churn_reason_2", "churn_reason_2_value", "churn_reason_3",
                                         "churn_reason_3_value"])
    texts = growth._reason_texts(scores, language, 90)

    assert list(texts) == reason_texts_one_by_one(scores, language, 90)
    assert texts[2] == message("churn.reason.one_purchase_day", language)
    assert texts[7] == texts[8] == ""
    assert "-0.00" in texts[4]
    assert "0.00" in texts[4].replace("-0.00", "")


def test_reason_texts_on_demo_scores(demo_run):
    _, out = demo_run
    customers = pd.read_parquet(out / "customers.parquet")
    likely = customers.churn_probability >= growth.REASONS_MIN_PROBABILITY

    # Likely churners get a text and the others get none.
    assert customers.loc[likely, "churn_reasons_en"].str.len().gt(0).all()
    assert customers.loc[~likely, "churn_reasons_en"].eq("").all()
    assert not customers.churn_reasons_en.str.contains("; ; ").any()
