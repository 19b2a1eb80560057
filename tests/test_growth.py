"""The growth step inside the main job: churn, recommendations, next best action, messages, export."""

from __future__ import annotations

import datetime as dt
import re
import warnings

import pandas as pd
import pytest

from revopt.actions import ACTIONS
from revopt.audience import export_audiences, sample_messages
from revopt.cli import EXIT_INPUT_ERROR, main
from revopt.demo import DemoParameters, generate_shop, write_export
from revopt.errors import DataQualityWarning, InputError
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
