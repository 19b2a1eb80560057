"""The main job end to end: CDNOW reference values, the demo's known parameters, outputs and invariants."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from revopt.demo import DemoParameters, generate_shop, write_export
from revopt.errors import DataQualityWarning
from revopt.pipeline import OUTPUT_FILES, AnalysisSettings, analyze

from conftest import dataset

CDNOW_SAMPLE_MAP = ("2=customer_id", "3=date", "5=amount")


@pytest.fixture(scope="module")
def cdnow_sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("cdnow")
    settings = AnalysisSettings(calibration_end=dt.date(1997, 9, 30), column_map=CDNOW_SAMPLE_MAP, language="en")
    return analyze(dataset("cdnow", "CDNOW_sample.txt"), out, settings)


def test_cdnow_sample_matches_published_bg_nbd(cdnow_sample):
    # Fader, Hardie and Lee (2005), "Counting your customers the easy way", CDNOW sample, weeks.
    bg_nbd = cdnow_sample.model["models"]["bg_nbd"]
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for name, value in published.items():
        assert bg_nbd["params"][name] == pytest.approx(value, rel=0.005), name
    assert bg_nbd["log_likelihood"] == pytest.approx(-9582.4, rel=0.005)
    assert bg_nbd["n_customers"] == 2357


def test_cdnow_sample_matches_published_gamma_gamma(cdnow_sample):
    # Fader and Hardie (2013), "The Gamma-Gamma model of monetary value", CDNOW sample.
    params = cdnow_sample.model["models"]["gamma_gamma"]["params"]
    assert params["p"] == pytest.approx(6.25, rel=0.005)
    assert params["q"] == pytest.approx(3.74, rel=0.005)
    assert params["gamma"] == pytest.approx(15.44, rel=0.005)


def test_cdnow_sample_outputs_written(cdnow_sample):
    out = cdnow_sample.out_dir
    for name in OUTPUT_FILES:
        assert (out / name).is_file(), name
    assert not [p for p in out.iterdir() if p.name.startswith(".revopt-")]
    model = json.loads((out / "model.json").read_text(encoding="utf-8"))
    holdout = model["holdout"]
    assert holdout["customers"] == 2357
    sample = pd.read_csv(dataset("cdnow", "CDNOW_sample.txt"), sep=r"\s+", header=None, dtype=str)
    days = sample[[1, 2]].drop_duplicates()
    assert holdout["actual_total"] == (days[2] > "19970930").sum()
    assert holdout["predicted_total"] == pytest.approx(holdout["actual_total"], rel=0.15)
    assert (out / "customers.csv").read_bytes().startswith(b"\xef\xbb\xbf")


def test_cdnow_sample_invariants(cdnow_sample):
    customers = cdnow_sample.customers
    assert customers.probability_alive.between(0, 1).all()
    assert (customers.expected_purchases >= 0).all()
    assert (customers.recency <= customers["T"] + 1e-12).all()
    assert (customers.clv[customers.expected_purchases == 0] == 0).all()
    lines = pd.read_csv(dataset("cdnow", "CDNOW_sample.txt"), sep=r"\s+", header=None, dtype=str)
    days = lines.groupby(1)[2].nunique()
    frequency = customers.set_index("customer_id").frequency
    assert (frequency <= days.reindex(frequency.index) - 1).all()
    assert set(customers.segment) <= {"champions", "loyal", "new", "potential_loyalist", "needs_attention",
                                      "at_risk", "hibernating", "lost"}


def test_holdout_tracking_sums_to_totals(cdnow_sample):
    tracking = cdnow_sample.tracking
    holdout = cdnow_sample.model["holdout"]
    start = pd.Timestamp(holdout["holdout_start"])
    in_holdout = pd.to_datetime(tracking.period_start) >= start
    assert tracking.actual[in_holdout].sum() <= holdout["actual_total"]
    assert tracking.actual.sum() > holdout["actual_total"]
    assert np.all(np.diff(tracking.predicted.cumsum()) >= -1e-9)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    shop = generate_shop(DemoParameters(n_customers=8000, seed=7))
    path = write_export(shop, out / "demo_orders.csv")
    result = analyze(path, out, AnalysisSettings(tz="Asia/Shanghai", language="zh-CN"))
    return shop, result


def test_demo_recovers_generator_parameters(demo_run):
    shop, result = demo_run
    truth = shop.parameters
    for model, names in (("bg_nbd", ("r", "alpha", "a", "b")), ("gamma_gamma", ("p", "q", "gamma"))):
        fitted = result.model["models"][model]
        for name in names:
            estimate, error = fitted["params"][name], fitted["standard_errors"][name]
            assert abs(estimate - getattr(truth, name)) < 3.5 * error, (model, name, estimate, error)


def test_demo_noise_is_removed(demo_run):
    shop, result = demo_run
    # Exact duplicates are dropped first, so a duplicated cancelled row counts once as cancelled.
    statuses = shop.orders.drop_duplicates()["订单状态"]
    assert result.ingest["cancelled_rows"] == statuses.isin(["交易关闭", "退款成功"]).sum()
    assert result.ingest["duplicates_dropped"] > 0
    assert result.ingest["rows_without_customer_id"] > 0
    assert len(result.customers) == shop.parameters.n_customers


def test_demo_report_in_chinese(demo_run):
    _, result = demo_run
    html = (result.out_dir / "report.html").read_text(encoding="utf-8")
    assert 'lang="zh-CN"' in html
    assert "重要价值客户" in html or "重要挽留客户" in html
    assert result.customers.segment_zh.notna().all()


def test_time_unit_leaves_predictions_unchanged(cdnow_sample, tmp_path):
    settings = AnalysisSettings(calibration_end=dt.date(1997, 9, 30), column_map=CDNOW_SAMPLE_MAP,
                                time_unit="day", horizon="52W")
    daily = analyze(dataset("cdnow", "CDNOW_sample.txt"), tmp_path, settings)
    weekly = cdnow_sample.customers

    assert daily.model["models"]["bg_nbd"]["params"]["alpha"] == pytest.approx(
        7 * cdnow_sample.model["models"]["bg_nbd"]["params"]["alpha"], rel=1e-4)
    np.testing.assert_allclose(daily.customers.probability_alive, weekly.probability_alive, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(daily.customers["T"], weekly["T"] * 7, rtol=1e-12)


def test_margin_scales_clv(cdnow_sample, tmp_path):
    settings = AnalysisSettings(calibration_end=dt.date(1997, 9, 30), column_map=CDNOW_SAMPLE_MAP, margin=0.25)
    quarter = analyze(dataset("cdnow", "CDNOW_sample.txt"), tmp_path, settings)

    # Two separate fits agree to the optimizer's tolerance, not to the last bit: DuckDB may add the
    # spend sums in another order, which moves the optimum by about 1e-9.
    np.testing.assert_allclose(quarter.customers.clv, 0.25 * cdnow_sample.customers.clv, rtol=1e-6)


def test_discounting_lowers_clv(cdnow_sample, tmp_path):
    settings = AnalysisSettings(calibration_end=dt.date(1997, 9, 30), column_map=CDNOW_SAMPLE_MAP, discount_rate=0.0)
    undiscounted = analyze(dataset("cdnow", "CDNOW_sample.txt"), tmp_path, settings)
    customers = cdnow_sample.customers

    assert (undiscounted.customers.clv >= customers.clv - 1e-12).all()
    # Without discounting, CLV is expected purchases over the horizon times expected order value.
    np.testing.assert_allclose(
        undiscounted.customers.clv,
        undiscounted.customers.expected_purchases * undiscounted.customers.expected_average_value, rtol=1e-6,
    )


def test_repeat_spend_netting_to_zero_is_excluded(tmp_path):
    sample = pd.read_csv(dataset("cdnow", "CDNOW_sample.txt"), sep=r"\s+", header=None, dtype=str)
    orders = pd.DataFrame({"customer_id": sample[1], "date": sample[2], "amount": sample[4]})
    # 0.1 + 0.2 - 0.3 is 5.6e-17 in floating point, not 0: the repeat spend must still count as zero.
    extra = pd.DataFrame({"customer_id": ["netzero"] * 4, "date": ["19970105", "19970301", "19970301", "19970301"],
                          "amount": ["5.0", "0.1", "0.2", "-0.3"]})
    path = tmp_path / "orders.csv"
    pd.concat([orders, extra]).to_csv(path, index=False)

    result = analyze(path, tmp_path / "out", AnalysisSettings(calibration_end=dt.date(1997, 9, 30)))

    assert "netzero" in result.model["spend_excluded"]["example_ids"]
    assert result.model["models"]["gamma_gamma"]["n_customers"] == 946


def test_auto_chooses_lowest_holdout_error(cdnow_sample):
    selection = cdnow_sample.model["selection"]
    rows = {row["option"]: row for row in selection["comparison"]}

    assert set(rows) == {"bg-nbd", "mbg-nbd", "pareto-nbd"}
    best = min(rows.values(), key=lambda row: row["holdout_mae"])
    assert best["chosen"] is True
    assert selection["chosen"] == best["option"]
    assert cdnow_sample.model["purchase_model"] == cdnow_sample.model["models"][best["name"].replace("-", "_")]["name"]


def test_cdnow_sample_matches_published_pareto_nbd(cdnow_sample):
    # Fader, Hardie and Lee (2005), "A note on implementing the Pareto/NBD model in MATLAB", CDNOW sample.
    pareto = cdnow_sample.model["models"]["pareto_nbd"]
    published = {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}
    for name, value in published.items():
        assert pareto["params"][name] == pytest.approx(value, rel=0.005), name
    assert pareto["log_likelihood"] == pytest.approx(-9595.0, abs=0.1)


def test_intervals_contain_point_predictions(cdnow_sample):
    customers = cdnow_sample.customers
    assert (customers.expected_purchases_low <= customers.expected_purchases + 1e-12).all()
    assert (customers.expected_purchases <= customers.expected_purchases_high + 1e-12).all()
    assert (customers.clv_low <= customers.clv + 1e-9).all()
    assert (customers.clv <= customers.clv_high + 1e-9).all()
    assert (customers.expected_purchases_high > customers.expected_purchases_low).mean() > 0.99


def test_next_purchase_date_for_bg_nbd(tmp_path):
    settings = AnalysisSettings(calibration_end=dt.date(1997, 9, 30), column_map=CDNOW_SAMPLE_MAP, model="bg-nbd")
    result = analyze(dataset("cdnow", "CDNOW_sample.txt"), tmp_path, settings)
    customers = result.customers
    dated = customers.next_purchase_date.notna()

    assert dated.any()
    assert (customers.probability_alive[dated] > 0.5).all()
    assert (pd.to_datetime(customers.next_purchase_date[dated]) > pd.Timestamp("1998-06-30")).all()
    assert result.model["selection"]["chosen"] == "bg-nbd"
    both = dated & customers.next_purchase_date_early.notna() & customers.next_purchase_date_late.notna()
    assert both.any()
    assert (customers.next_purchase_date_early[both] <= customers.next_purchase_date[both]).all()
    assert (customers.next_purchase_date[both] <= customers.next_purchase_date_late[both]).all()


def test_bg_nbd_on_one_time_buyers_warns(tmp_path):
    settings = AnalysisSettings(calibration_end=dt.date(1997, 9, 30), column_map=CDNOW_SAMPLE_MAP, model="bg-nbd")
    # 1,411 of the sample's 2,357 customers (60%) bought once before the calibration end.
    with pytest.warns(DataQualityWarning, match="60% of customers bought only once"):
        result = analyze(dataset("cdnow", "CDNOW_sample.txt"), tmp_path, settings)

    assert any("60%" in entry["en"] for entry in result.model["warnings"])
    assert any("60%" in entry["zh-CN"] for entry in result.model["warnings"])
    assert "60% of customers bought only once" in (tmp_path / "report.html").read_text(encoding="utf-8")


def no_dropout_orders(path, *, customers: int, seed: int):
    """Write orders of customers who never drop out: Poisson purchases at gamma-distributed rates, one year."""
    rng = np.random.default_rng(seed)
    rows = []
    start = pd.Timestamp("2024-01-01")
    for customer in range(customers):
        rate = rng.gamma(2.0, 0.02)  # purchases per day
        first = rng.integers(0, 60)
        days = first + np.concatenate([[0], np.cumsum(rng.exponential(1 / rate, 40))])
        for day in days[days < 365]:
            rows.append((f"c{customer}", (start + pd.Timedelta(days=int(day))).date().isoformat(), "10"))
    pd.DataFrame(rows, columns=["customer_id", "date", "amount"]).to_csv(path, index=False)
    return path


def test_fit_without_dropout_warns(tmp_path):
    # On Online Retail up to 2011-09-01 every model fits away its dropout (a or s near 1e-7).
    settings = AnalysisSettings(calibration_end=dt.date(2011, 9, 1), model="bg-nbd", currency="GBP")
    with pytest.warns(DataQualityWarning, match="finds almost no dropout"):
        result = analyze(dataset("online_retail", "online_retail.csv.gz"), tmp_path, settings)

    assert (result.customers.probability_alive > 0.99).mean() >= 0.99


def test_few_customers_warn(tmp_path):
    path = no_dropout_orders(tmp_path / "orders.csv", customers=30, seed=6)
    with pytest.warns(DataQualityWarning, match="only 30 customers"):
        analyze(path, tmp_path / "out", AnalysisSettings(model="bg-nbd"))


def test_rejected_file_lists_each_rejected_row_with_its_reason(tmp_path):
    # The CDNOW sample with two extra rows: an exact copy of line 1 and an unreadable date.
    source = dataset("cdnow", "CDNOW_sample.txt")
    lines = source.read_text().splitlines()
    lines += [lines[0], lines[1].replace("19970118", "19971318")]
    orders = tmp_path / "orders.txt"
    orders.write_text("\n".join(lines) + "\n")
    settings = AnalysisSettings(column_map=("2=customer_id", "3=date", "5=amount"), duplicates="drop",
                                growth=False, language="zh-CN")
    result = analyze(orders, tmp_path / "out", settings)

    raw = (tmp_path / "out" / "rejected.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfsource_file,source_row,reason,reason_text,")
    rejected = pd.read_csv(tmp_path / "out" / "rejected.csv", encoding="utf-8-sig", dtype=str)
    assert len(rejected) == result.ingest["rows_rejected"]
    by_row = rejected.set_index("source_row")
    assert by_row.loc[str(len(lines) - 1), "reason"] == "duplicate"
    assert by_row.loc[str(len(lines)), "reason"] == "invalid_date"
    assert by_row.loc[str(len(lines)), "raw_date"] == "19971318"
    assert by_row.loc[str(len(lines)), "reason_text"] == "下单时间无法解析"
    assert rejected.source_row.astype(int).is_monotonic_increasing


def test_report_says_growth_was_switched_off(tmp_path):
    settings = AnalysisSettings(column_map=("2=customer_id", "3=date", "5=amount"), growth=False, language="en")
    result = analyze(dataset("cdnow", "CDNOW_sample.txt"), tmp_path / "out", settings)
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")

    assert result.model["growth"] is False
    assert page.count("this run was started with --no-growth") == 3  # churn, recommendations, actions
    assert "see the warnings above" not in page


@pytest.mark.parametrize("auto", [False, True], ids=["bg-nbd requested", "auto chose bg-nbd"])
def test_one_time_warning_suggests_auto_unless_used(auto):
    from revopt.models import BetaGeoModel
    from revopt.pipeline import _warn_one_time_buyers

    stats = pd.DataFrame({"frequency": [0, 1, 3], "count": [80, 15, 5]})  # 80% bought once
    model = BetaGeoModel().fit([0, 2, 5, 1, 0, 3, 1, 6, 0, 2], [0, 30, 36, 2, 0, 8, 25, 37, 0, 5], [38] * 10)
    with pytest.warns(DataQualityWarning) as caught:
        _warn_one_time_buyers(stats, model, auto=auto)
    texts = [warning.message.localized(language) for warning in caught for language in ("en", "zh-CN")]
    assert all("80%" in text and "--model mbg-nbd" in text for text in texts)
    english, chinese = texts
    # Auto is suggested as a remedy only when it was not what chose BG/NBD.
    assert ("or --model auto" in english) == (not auto)
    assert ("或 --model auto" in chinese) == (not auto)
    assert ("--model auto chose" in english) == auto


def test_customer_files_column_types(tmp_path):
    import pyarrow.parquet as pq

    from revopt.pipeline import ARROW_DATE, _write_customer_files

    customers = pd.DataFrame({
        "customer_id": ["a", "b"],
        "segment": pd.Categorical(["champions", "lost"]),
        "customer_name": pd.Series([None, None], dtype=object),  # an export without names
        "next_purchase_date": pd.Series([dt.date(2024, 1, 2), None], dtype=ARROW_DATE),
        "replenish_due_date": pd.to_datetime(["2024-03-05 00:00", "2024-03-06 12:00"]),
    })
    _write_customer_files(tmp_path, customers)
    schema = pq.read_schema(tmp_path / "customers.parquet")
    assert str(schema.field("segment").type) in ("string", "large_string")
    assert str(schema.field("customer_name").type) in ("string", "large_string")
    assert str(schema.field("next_purchase_date").type) == "date32[day]"
    assert str(schema.field("replenish_due_date").type) == "date32[day]"
    assert schema.metadata is None or b"pandas" not in schema.metadata
    text = (tmp_path / "customers.csv").read_text(encoding="utf-8-sig").splitlines()
    assert text[0] == '"customer_id","segment","customer_name","next_purchase_date","replenish_due_date"'
    assert text[1] == '"a","champions",,2024-01-02,2024-03-05'
    assert text[2] == '"b","lost",,,2024-03-06'


def test_model_comparison_says_when_there_was_no_holdout(demo_run, cdnow_sample):
    without = (demo_run[1].out_dir / "report.html").read_text(encoding="utf-8")
    with_holdout = (cdnow_sample.out_dir / "report.html").read_text(encoding="utf-8")
    assert "未做留出验证" in without
    assert "no holdout" not in with_holdout
    assert "未做留出验证" not in with_holdout
