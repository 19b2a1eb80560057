"""The recommendation evaluation on a fixed MD5 sample of test-window customers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math

import ibis
import pandas as pd
import pytest

from revopt.errors import ConfigError
from revopt.i18n import LANGUAGES, message
from revopt.recommend import MAX_EVALUATION_CUSTOMERS, evaluate, fit_recommendations, prepare_training, purchase_lines
from revopt.recommend.evaluate import _test_items
from revopt.report import render_report
from revopt.sampling import HASH_BUCKETS, HASH_DIGITS, customer_sample
from test_report import make_report, section

# A test window from 2011-08-01 to the end of the data (2011-12-09): about 2,000 customers who
# also bought before the split, the most Online Retail offers.
SPLIT = dt.date(2011, 8, 1)
TEST_DAYS = 131
SAMPLED = 1000


def md5_prefix(customer_id: str) -> str:
    return hashlib.md5(customer_id.encode("utf-8")).hexdigest()[:HASH_DIGITS]


def metrics(evaluation) -> pd.DataFrame:
    """The table without the timing column, which differs between runs."""
    return evaluation.table.drop(columns="seconds")


# ---------------------------------------------------------------------------------------
# The sample helper
# ---------------------------------------------------------------------------------------


def test_sample_keeps_all_up_to_target():
    assert not customer_sample(500, 500).sampled
    assert not customer_sample(500, None).sampled
    assert customer_sample(500, None).share == 1.0


def test_sample_bound_hand_computed():
    # ceil(100 / 1000 * 16^5) = ceil(104,857.6) = 104,858 = 0x1999a.
    sample = customer_sample(1000, 100)

    assert sample.kept_buckets == 104_858
    assert sample.bound == "1999a"
    assert sample.share == pytest.approx(0.1, abs=1 / HASH_BUCKETS)


def test_sample_within_one_bucket_keeps_all():
    # 2,000,000 / 2,000,001 of 16^5 buckets rounds up to every bucket, whose bound has six digits.
    sample = customer_sample(2_000_001, 2_000_000)

    assert not sample.sampled
    assert sample.share == 1.0


def test_sample_filter_matches_hashlib():
    ids = [f"C{number:05d}" for number in range(3000)] + ["客户-7", "x"]
    table = ibis.memtable(pd.DataFrame({"customer_id": [*ids, None]}))
    sample = customer_sample(len(ids), 300)

    kept_ids = set(sample.apply(table).to_pandas().customer_id)

    assert kept_ids == {customer for customer in ids if md5_prefix(customer) < sample.bound}


# ---------------------------------------------------------------------------------------
# Online Retail
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def online_retail(online_retail_lines):
    return online_retail_lines


@pytest.fixture(scope="module")
def training(online_retail):
    return prepare_training(online_retail, as_of=SPLIT)


@pytest.fixture(scope="module")
def qualifying(online_retail, training) -> pd.DataFrame:
    """(customer_id, product_id) bought in the test window by training customers, filtered in pandas."""
    lines = online_retail
    test_end = SPLIT + dt.timedelta(days=TEST_DAYS)
    window = lines.filter((lines.order_date >= ibis.date(SPLIT)) & (lines.order_date < ibis.date(test_end)))
    pairs = purchase_lines(window).select("customer_id", "product_id").distinct().to_pandas()
    return pairs[pairs.customer_id.isin(training.customers)]


def run(lines, training, max_customers):
    return evaluate(lines, split_date=SPLIT, test_days=TEST_DAYS, training=training, max_customers=max_customers)


@pytest.fixture(scope="module")
def full(online_retail, training):
    return run(online_retail, training, None)


@pytest.fixture(scope="module")
def sampled(online_retail, training):
    return run(online_retail, training, SAMPLED)


def test_full_scores_every_qualifying_customer(full, qualifying):
    assert full.sample_share == 1.0
    assert (full.table.customers == qualifying.customer_id.nunique()).all()
    assert full.relevant_items == len(qualifying)


def test_default_limit_equals_no_limit(online_retail, training, full, qualifying):
    assert qualifying.customer_id.nunique() < MAX_EVALUATION_CUSTOMERS
    default = evaluate(online_retail, split_date=SPLIT, test_days=TEST_DAYS, training=training)

    pd.testing.assert_frame_equal(metrics(default), metrics(full))
    assert default.sample_share == 1.0
    assert default.relevant_items == full.relevant_items


def test_sample_size_near_target(sampled, qualifying):
    population = qualifying.customer_id.nunique()
    share = sampled.sample_share
    count = sampled.table.customers.iloc[0]

    assert share == math.ceil(SAMPLED / population * HASH_BUCKETS) / HASH_BUCKETS
    assert (sampled.table.customers == count).all()
    # MD5 places each customer in the sample independently with probability `share`, so the count
    # is binomial: about 2,000 x 0.5, with a standard deviation near 22 (2.2% of 1,000). Three
    # standard deviations leave a 0.3% chance that a fair hash fails.
    deviation = math.sqrt(population * share * (1 - share))
    assert abs(count - population * share) < 3 * deviation
    assert share < 1


def test_sample_is_md5_prefix_below_bound(online_retail, training, sampled, qualifying):
    bound = format(round(sampled.sample_share * HASH_BUCKETS), f"0{HASH_DIGITS}x")
    expected = qualifying[qualifying.customer_id.map(md5_prefix) < bound]

    relevant, share = _test_items(online_retail, training, split_date=SPLIT,
                                  test_end=SPLIT + dt.timedelta(days=TEST_DAYS), settings=training.settings,
                                  exclude=None, max_customers=SAMPLED)

    assert share == sampled.sample_share
    assert set(relevant.customer_id) == set(expected.customer_id)
    assert sampled.table.customers.iloc[0] == expected.customer_id.nunique()
    assert sampled.relevant_items == len(expected)


def test_sample_is_deterministic(online_retail, training, sampled):
    again = run(online_retail, training, SAMPLED)

    pd.testing.assert_frame_equal(metrics(again), metrics(sampled))
    assert again.relevant_items == sampled.relevant_items


def test_sampled_recall_near_full(full, sampled):
    population = full.table.customers.iloc[0]
    size = sampled.table.customers.iloc[0]
    for method in full.table.index:
        recall = full.table.loc[method, "recall@10"]
        # A customer's recall lies in [0, 1], so its variance is at most recall (1 - recall), the
        # Bernoulli variance at that mean. The sample mean's standard error is then at most
        # sqrt(recall (1 - recall) / size (1 - size / population)), with the finite-population
        # factor for a sample of half the customers. Four standard errors: about 0.02 here.
        error = math.sqrt(recall * (1 - recall) / size * (1 - size / population))
        assert abs(sampled.table.loc[method, "recall@10"] - recall) < 4 * error, method


def test_fit_recommendations_keeps_share(online_retail):
    model = fit_recommendations(online_retail, method="popularity", split_date=SPLIT, max_customers=300)

    assert 0 < model.evaluation_sample_share < 1
    customers = model.evaluation.loc["popularity", "customers"]
    assert 200 < customers < 400
    assert model.customers.size > customers  # fitted and served on every customer


@pytest.mark.parametrize("value", [0, -3], ids=["zero", "negative"])
def test_max_customers_below_one_rejected(value):
    lines = ibis.memtable(pd.DataFrame({"customer_id": ["a"]}))
    with pytest.raises(ConfigError, match=rf"max_customers must be in \[1, inf\]; got {value}"):
        evaluate(lines, split_date=SPLIT, max_customers=value)
    with pytest.raises(ConfigError, match=rf"max_customers must be in \[1, inf\]; got {value}"):
        fit_recommendations(lines, max_customers=value)


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def report_with_share(language: str, share: float | None) -> str:
    data = make_report(language)
    record = {"method": "popularity", "customers": 1000, "recall@10": 0.05, "precision@10": 0.1}
    recommendations = {"method": "popularity", "k": 10, "split_date": "2023-05-31", "as_of": "2023-07-01",
                       "evaluation": [record], "evaluation_sample_share": share}
    data = dataclasses.replace(data, model={**data.model, "recommendations": recommendations})
    return section(render_report(data), "recommendations")


@pytest.mark.parametrize("language", LANGUAGES)
def test_report_states_sample_share(language):
    html = report_with_share(language, 0.0954)

    assert message("report.recommendations.sampled", language, share="9.5%") in html


@pytest.mark.parametrize("share", [1.0, None], ids=["whole", "no_evaluation_share"])
@pytest.mark.parametrize("language", LANGUAGES)
def test_report_silent_without_sample(language, share):
    html = report_with_share(language, share)
    sentence = message("report.recommendations.sampled", language, share="#")
    before_share = sentence.split("#")[0]

    assert 'id="recommendation-table"' in html
    assert before_share not in html
