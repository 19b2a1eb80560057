"""Tests for the HTML report, rendered from small seeded synthetic inputs in both languages."""

from __future__ import annotations

import re
import string
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from markupsafe import escape

import revopt.report.render as render_module
from revopt.errors import ConfigError, InputError
from revopt.i18n import LANGUAGES, catalog, message
from revopt.report import ReportData, render_report, write_report

N_CUSTOMERS = 1234
REVENUE = 1_234_567.891
ROWS_READ = 10_000
END = pd.Timestamp("2023-06-30")
CALIBRATION_END = pd.Timestamp("2023-03-31")
# A customer id with every HTML special character. The data makes this customer the one with the
# most revenue at risk.
SPECIAL_ID = "<script>alert(\"x\")</script>&'id"
SEGMENTS = {
    "champions": {"en": "Champions", "zh-CN": "重要价值客户", "rule": "R ≥ 4 and F ≥ 4"},
    "loyal": {"en": "Loyal & active", "zh-CN": "忠诚 & 活跃客户", "rule": "F ≥ 3"},
    "hibernating": {"en": "Hibernating", "zh-CN": "沉睡客户", "rule": "R ≤ 2"},
}
TIERS = {"high": {"en": "High value", "zh-CN": "高价值"}, "low": {"en": "Low value", "zh-CN": "低价值"}}
SECTION_IDS = [
    "report.section.kpis",
    "report.section.data_quality",
    "report.section.cohorts",
    "report.section.clv",
    "report.section.segments",
    "report.section.alive",
    "report.section.tracking",
    "report.section.model",
    "report.section.at_risk",
]
REPORT_SOURCES = [
    Path(render_module.__file__),
    Path(render_module.__file__).with_name("charts.py"),
    Path(render_module.__file__).parent / "templates" / "report.html",
]


def make_customers(language: str, *, seed: int = 7) -> pd.DataFrame:
    """Build a customer table with plausible, internally consistent values (not fitted by a model)."""
    rng = np.random.default_rng(seed)
    first = pd.Timestamp("2022-01-03") + pd.to_timedelta(rng.integers(0, 400, N_CUSTOMERS), unit="D")
    age_weeks = (END - first).days.to_numpy() / 7.0
    frequency = rng.poisson(1.5, N_CUSTOMERS).astype(float)
    recency = np.where(frequency > 0, rng.uniform(0.0, 1.0, N_CUSTOMERS) * age_weeks, 0.0)
    orders = frequency + 1
    total_revenue = rng.lognormal(4.0, 1.0, N_CUSTOMERS) * orders
    alive = np.where(frequency > 0, rng.uniform(0.05, 1.0, N_CUSTOMERS), 1.0)
    clv = alive * rng.lognormal(4.0, 1.5, N_CUSTOMERS)
    segment = rng.choice(list(SEGMENTS), N_CUSTOMERS)
    tier = np.where(clv > np.median(clv), "high", "low")

    customers = pd.DataFrame({
        "customer_id": [f"C{index:05d}" for index in range(N_CUSTOMERS)],
        "first_purchase": first,
        "last_purchase": first + pd.to_timedelta(recency * 7, unit="D"),
        "frequency": frequency,
        "recency": recency,
        "T": age_weeks,
        "monetary_value": np.where(frequency > 0, total_revenue / orders, np.nan),
        "total_revenue": total_revenue,
        "orders": orders.astype(int),
        "probability_alive": alive,
        "expected_purchases": alive * 2.0,
        "expected_average_value": total_revenue / orders,
        "clv": clv,
        "r_score": rng.integers(1, 6, N_CUSTOMERS),
        "f_score": rng.integers(1, 6, N_CUSTOMERS),
        "m_score": rng.integers(1, 6, N_CUSTOMERS),
        "segment": segment,
        "segment_label": [SEGMENTS[code][language] for code in segment],
        "value_tier": tier,
        "value_tier_label": [TIERS[code][language] for code in tier],
    })
    customers.loc[0, ["customer_id", "probability_alive", "total_revenue", "frequency"]] = [SPECIAL_ID, 0.01, 1e6, 5.0]
    return customers


def make_cohorts() -> dict:
    """Build six monthly cohorts observed for six, five, ..., one months. Cell (1, 1) is 37% retained."""
    labels = [f"2023-0{month}" for month in range(1, 7)]
    rates = [[1.0] + [0.5 / (period + 1) for period in range(1, 6 - row)] + [None] * row for row in range(6)]
    rates[1][1] = 0.37
    sizes = [100, 120, 90, 80, 70, 60]
    customers = [[None if rate is None else round(rate * size) for rate in row] for row, size in zip(rates, sizes)]
    return {
        "period": "month",
        "cohorts": labels,
        "periods_since": list(range(6)),
        "sizes": sizes,
        "customers": customers,
        "revenue": customers,
        "retention_rate": rates,
    }


def make_tracking() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    starts = pd.date_range("2022-01-03", END, freq="7D")
    actual = rng.poisson(40, len(starts)).astype(float)
    return pd.DataFrame({"period_start": starts.date, "actual": actual, "predicted": actual * 1.03})


def make_report(language: str, *, holdout: bool = True, customers: pd.DataFrame | None = None) -> ReportData:
    customers = make_customers(language) if customers is None else customers
    segments_table = [
        {"code": code, "label": entry[language], "rule": entry["rule"]} for code, entry in SEGMENTS.items()
    ]
    return ReportData(
        language=language,
        settings={
            "source": ["orders_2022.csv", "orders_2023.xlsx"],
            "generated_at": "2023-07-01T09:00:00+08:00",
            "time_unit": "week",
            "horizon": "12M",
            "horizon_units": 52.18,
            "discount_rate": 0.1,
            "margin": 0.3,
            "currency": "CNY",
            "tz": "Asia/Shanghai",
            "calibration_end": CALIBRATION_END.date().isoformat() if holdout else None,
            "holdout_end": END.date().isoformat() if holdout else None,
        },
        kpis={
            "customers": N_CUSTOMERS,
            "orders": 3456,
            "purchases": 3300,
            "revenue": REVENUE,
            "gross_revenue": 1_300_000.0,
            "returns": 65_432.109,
            "revenue_without_customer_id": 12_345.5,
            "orders_without_customer_id": 42,
            "average_order_value": REVENUE / 3456,
            "purchase_frequency": 3456 / N_CUSTOMERS,
            "repeat_purchase_rate": 0.4321,
            "first_date": "2022-01-03",
            "last_date": END.date().isoformat(),
            "retention": [
                {"period": "2023-05", "active_customers": 300, "active_previous": 0, "retained": 0,
                 "retention_rate": None, "churn_rate": None},
                {"period": "2023-06", "active_customers": 320, "active_previous": 300, "retained": 111,
                 "retention_rate": 0.37, "churn_rate": 0.63},
            ],
            "cohorts": make_cohorts(),
        },
        model={
            "time_unit": "week",
            "calibration_end": CALIBRATION_END.date().isoformat(),
            "models": {
                "bg_nbd": {
                    "params": {"r": 0.2426, "alpha": 4.414, "a": 0.7929, "b": 2.426},
                    "standard_errors": {"r": 0.0126, "alpha": 0.3838, "a": 0.1864, "b": 0.7045},
                    "log_likelihood": -9582.43,
                    "n_customers": N_CUSTOMERS,
                    "converged": True,
                },
                "gamma_gamma": {
                    "params": {"p": 6.25, "q": 3.74, "gamma": 15.44},
                    "standard_errors": {"p": None, "q": 0.3, "gamma": 2.1},
                    "log_likelihood": -4002.5,
                    "n_customers": 900,
                    "converged": False,
                },
            },
            "holdout": (
                {
                    "customers": N_CUSTOMERS, "actual_total": 987.0, "predicted_total": 1012.5,
                    "mae": 0.8123, "rmse": 1.2345,
                }
                if holdout else None
            ),
            "spend_excluded": {"count": 3, "example_ids": ["C00001", "<b>"]},
            "rfm_edges": {
                "recency": [4.0, 12.0, 30.0, 52.0], "frequency": [1, 2, 4, 8], "monetary": [50.0, 100.0, 250.0, 600.0],
            },
        },
        customers=customers,
        segments_table=segments_table,
        ingest={
            "rows_read": ROWS_READ,
            "rows_kept": 9_500,
            "rows_rejected": 500,
            "rejected_by_reason": {"invalid_date": 300, "missing_amount": 200},
            "duplicates_dropped": 12,
            "cancelled_rows": 30,
            "return_rows": 45,
            "rows_without_customer_id": 80,
            "revenue_without_customer_id": 12_345.5,
            "purchases_merged": 156,
            "files": ["orders_2022.csv", "orders_2023.xlsx"],
        },
        tracking=make_tracking() if holdout else None,
    )


@pytest.fixture(scope="module", params=LANGUAGES)
def rendered(request) -> tuple[str, str]:
    return request.param, render_report(make_report(request.param))


def section(html: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', html, flags=re.DOTALL)
    assert match, f"section {anchor} not found"
    return match.group(1)


def test_report_has_no_external_references(rendered):
    _, html = rendered
    references = re.findall(r'\b(?:src|href)\s*=\s*["\']([^"\']*)', html, flags=re.IGNORECASE)
    external = [reference for reference in references if not reference.startswith(("#", "data:"))]
    assert references
    assert external == []
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    assert "@import" not in html
    assert not re.search(r"url\(\s*['\"]?(?!#)", html)


def test_report_headings_in_its_language_only(rendered):
    language, html = rendered
    (other,) = [candidate for candidate in LANGUAGES if candidate != language]
    assert f'<html lang="{language}">' in html
    for message_id in SECTION_IDS:
        assert str(escape(message(message_id, language))) in html, message_id
        assert str(escape(message(message_id, other))) not in html, message_id


def test_kpi_tiles_show_input_numbers(rendered):
    _, html = rendered
    tile_pattern = r'id="kpi-([a-z-]+)">\s*<div class="label">.*?</div>\s*<div class="value">(.*?)</div>'
    tiles = dict(re.findall(tile_pattern, html, flags=re.DOTALL))
    assert tiles["customers"] == "1,234"
    assert tiles["orders"] == "3,456"
    assert tiles["revenue"] == "¥1,234,567.89"
    assert tiles["repeat-purchase-rate"] == "43.2%"
    assert tiles["retention"] == "37.0%"
    assert tiles["churn"] == "63.0%"
    clv = make_customers("en")["clv"]
    assert tiles["mean-clv"] == f"¥{clv.mean():,.2f}"
    assert tiles["total-clv"] == f"¥{clv.sum():,.2f}"


def test_data_quality_counts_and_reasons(rendered):
    language, html = rendered
    quality = section(html, "data-quality")
    assert "10,000" in quality
    assert message("ingest.count.rows_read", language) in quality
    assert message("ingest.reason.invalid_date", language) in quality
    assert "¥12,345.50" in quality


def test_at_risk_table_matches_independent_ranking(rendered):
    language, html = rendered
    customers = make_customers(language)
    customers = customers[customers["probability_alive"] < render_module.AT_RISK_MAX_ALIVE]
    expected = (
        customers.assign(score=(1 - customers["probability_alive"]) * customers["total_revenue"])
        .sort_values("score", ascending=False, kind="stable")["customer_id"]
        .head(render_module.AT_RISK_ROWS)
        .tolist()
    )
    table_ids = re.findall(r'<td class="id">(.*?)</td>', section(html, "at-risk"))
    assert table_ids == [str(escape(customer_id)) for customer_id in expected]
    assert expected[0] == SPECIAL_ID


def test_special_characters_are_escaped(rendered):
    language, html = rendered
    assert SPECIAL_ID not in html
    assert str(escape(SPECIAL_ID)) in html
    assert "<b>" not in html
    assert SEGMENTS["loyal"][language] not in html
    assert str(escape(SEGMENTS["loyal"][language])) in html


def test_concentration_table_matches_sorted_values(rendered):
    language, html = rendered
    clv = make_customers(language)["clv"]
    top_ten = clv.nlargest(-(-10 * N_CUSTOMERS // 100)).sum() / clv.sum()
    assert f"{top_ten:.1%}" in section(html, "clv")


def test_cohort_cells_are_annotated(rendered):
    _, html = rendered
    assert "37%" in section(html, "cohorts")


def test_holdout_section_only_with_tracking():
    with_holdout = render_report(make_report("en", holdout=True))
    without_holdout = render_report(make_report("en", holdout=False))
    no_holdout = str(escape(message("report.tracking.no_holdout", "en")))

    assert 'id="tracking-chart"' in with_holdout
    assert 'id="holdout-metrics"' in with_holdout
    assert "1,012.50" in section(with_holdout, "tracking")
    assert no_holdout not in with_holdout

    assert 'id="tracking-chart"' not in without_holdout
    assert 'id="holdout-metrics"' not in without_holdout
    assert no_holdout in without_holdout
    assert message("report.section.tracking", "en") in without_holdout


def test_chart_ids_are_unique_across_charts(rendered):
    _, html = rendered
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))


def test_render_is_deterministic():
    data = make_report("zh-CN")
    assert render_report(data) == render_report(data)


def test_render_leaves_matplotlib_settings_unchanged():
    before = dict(matplotlib.rcParams)
    render_report(make_report("en"))
    assert dict(matplotlib.rcParams) == before


def test_render_leaves_customers_unchanged():
    customers = make_customers("en")
    before = customers.copy()
    render_report(make_report("en", customers=customers))
    pd.testing.assert_frame_equal(customers, before)


def test_write_report_writes_utf8(tmp_path):
    data = make_report("zh-CN", holdout=False)
    path = write_report(data, tmp_path / "report.html")
    assert path.read_text(encoding="utf-8") == render_report(data)


def test_render_without_customers():
    empty = make_customers("en").iloc[0:0]
    html = render_report(make_report("en", customers=empty))
    assert message("report.clv.empty", "en") in html
    assert message("report.at_risk.empty", "en", amount="¥0.01", max_alive="50.0%") in html
    assert message("report.segments.empty", "en") in html


def test_at_risk_empty_when_all_alive():
    customers = make_customers("en").assign(probability_alive=1.0 - 1e-12)
    html = render_report(make_report("en", customers=customers))
    assert message("report.at_risk.empty", "en", amount="¥0.01", max_alive="50.0%") in html
    assert 'id="at-risk-table"' not in html


def test_rfm_bins_in_score_bins_form():
    # The form of revopt.segments.ScoreBins.to_dict: bins with score, lower, upper and customers.
    bins = {
        "dimension": "monetary",
        "bins": [
            {"score": 1, "lower": None, "upper": None, "customers": 7},
            {"score": 2, "lower": 10.0, "upper": 10.0, "customers": 5},
            {"score": 3, "lower": 10.5, "upper": 2500.0, "customers": 1222},
        ],
        "missing_score": 1,
    }
    data = make_report("en")
    model = {**data.model, "rfm_edges": {"monetary": bins}}
    html = render_report(ReportData(
        language="en", settings=data.settings, kpis=data.kpis, model=model, customers=data.customers,
    ))
    segments = section(html, "segments")
    assert message("report.segments.missing_bin", "en", score=1, customers="7") in segments
    assert message("report.segments.single_value_bin", "en", score=2, value="10", customers="5") in segments
    expected = message("report.segments.bin", "en", score=3, lower="10.50", upper="2,500", customers="1,222")
    assert expected in segments
    assert message("report.segments.rfm_units", "en", currency="CNY") in segments


def test_unsupported_language_is_rejected():
    data = make_report("en")
    with pytest.raises(ConfigError, match="'fr' is not supported"):
        ReportData(language="fr", settings=data.settings, kpis=data.kpis, model=data.model, customers=data.customers)


def test_missing_customer_column_is_named():
    data = make_report("en")
    with pytest.raises(InputError, match="missing the columns probability_alive"):
        ReportData(
            language="en", settings=data.settings, kpis=data.kpis, model=data.model,
            customers=data.customers.drop(columns="probability_alive"),
        )


def test_report_messages_have_both_languages():
    messages = {message_id: texts for message_id, texts in catalog().items() if message_id.startswith("report.")}
    assert messages
    for message_id, texts in messages.items():
        fields = {}
        for language in LANGUAGES:
            assert texts[language].strip(), (message_id, language)
            fields[language] = {name for _, name, _, _ in string.Formatter().parse(texts[language]) if name}
        assert fields["en"] == fields["zh-CN"], message_id


def test_report_ids_used_in_code_exist():
    used = set()
    for source in REPORT_SOURCES:
        used |= set(re.findall(r"""["'](report(?:\.[a-z_]+)+)["']""", source.read_text(encoding="utf-8")))
    used.discard("report.html")  # the template's file name, not a message id
    assert "report.section.kpis" in used
    assert "report.title" in used
    assert sorted(used - set(catalog())) == []


@pytest.mark.parametrize(("option", "english", "chinese"), [
    ("12M", "12 months", "12 个月"), ("1Y", "1 year", "1 年"), ("52w", "52 weeks", "52 周"), ("90 D", "90 days", "90 天"),
    ("1.5M", "1.5 months", "1.5 个月"), ("soon", "soon", "soon"),
])
def test_horizon_option_is_written_in_words(option, english, chinese):
    from revopt.i18n import Translator
    from revopt.report.render import _Formats

    assert _Formats(translate=Translator("en"), currency="CNY").horizon(option) == english
    assert _Formats(translate=Translator("zh-CN"), currency="CNY").horizon(option) == chinese
