"""Tests of revopt.diagnostics, the BG/NBD count distribution and the covariance of the estimates.

Data: the CDNOW 1/10 sample. Calibration summaries (weeks) come from cdnow_customers_summary.csv;
holdout purchases, 1997-10-01 to 1998-06-30 (39 weeks), are the distinct purchase days per customer
in CDNOW_sample.txt. Independent implementation: lifetimes 0.11.3. Simulations are seeded.
"""

from __future__ import annotations

import doctest
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import dataset
from scipy.integrate import quad
from scipy.special import betaln, gammaln, logsumexp

from revopt import diagnostics
from revopt.errors import ConfigError, DataQualityWarning, FitError, InputError, NotFittedError
from revopt.models import BetaGeoModel, GammaGammaModel, customer_lifetime_value
from revopt.models import bgnbd
from revopt.models.pareto_nbd import ParetoNBDModel
from revopt.models._fitting import unique_rows

CALIBRATION_END = pd.Timestamp("1997-09-30")
HOLDOUT_END = pd.Timestamp("1998-06-30")
HOLDOUT_WEEKS = 39.0  # 1997-10-01 to 1998-06-30 is 273 days


# --- data and helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cdnow():
    """Calibration (frequency, recency, T) in weeks of the 2,357 customers, in customer-index order."""
    table = pd.read_csv(dataset("cdnow", "cdnow_customers_summary.csv"))
    assert table["ID"].tolist() == list(range(1, 2358))
    return tuple(table[column].to_numpy(dtype=float) for column in ("frequency", "recency", "T"))


@pytest.fixture(scope="module")
def cdnow_orders():
    """Order lines of the CDNOW sample with customer index 1..2357, date and dollars."""
    orders = pd.read_csv(
        dataset("cdnow", "CDNOW_sample.txt"), sep=r"\s+", header=None,
        names=["master_id", "customer", "date", "cds", "dollars"], dtype={"master_id": str, "date": str},
    )
    orders["date"] = pd.to_datetime(orders["date"], format="%Y%m%d")
    return orders


@pytest.fixture(scope="module")
def cdnow_holdout(cdnow_orders):
    """Holdout purchase days and holdout dollars per customer, in customer-index order."""
    holdout = cdnow_orders[(cdnow_orders["date"] > CALIBRATION_END) & (cdnow_orders["date"] <= HOLDOUT_END)]
    customers = pd.RangeIndex(1, 2358)
    days = holdout.groupby("customer")["date"].nunique().reindex(customers, fill_value=0)
    dollars = holdout.groupby("customer")["dollars"].sum().reindex(customers, fill_value=0.0)
    return days.to_numpy(dtype=float), dollars.to_numpy(dtype=float)


@pytest.fixture(scope="module")
def cdnow_model(cdnow):
    return BetaGeoModel().fit(*cdnow)


def import_lifetimes():
    """lifetimes sets pandas options and warning filters at import; keep both out of the session."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import lifetimes
    return lifetimes


def lifetimes_bgnbd(params: dict):
    """A lifetimes BetaGeoFitter that predicts with the given parameters, without fitting."""
    fitter = import_lifetimes().BetaGeoFitter()
    fitter.params_ = pd.Series(params)
    return fitter


def fitted_bgnbd(r, alpha, a, b) -> BetaGeoModel:
    """A BG/NBD model with given parameters, bypassing fit (to evaluate formulas at chosen points)."""
    model = BetaGeoModel()
    model.params_ = {"r": r, "alpha": alpha, "a": a, "b": b}
    return model


def simulate_bgnbd(rng, r, alpha, a, b, T, *, dropout_at_first_purchase=False):
    """Simulate BG/NBD customers acquired at time 0 and observed until T (one value per customer).

    With ``dropout_at_first_purchase`` the customers may also drop out right after the first
    purchase, as in the MBG/NBD. Returns each customer's repeat purchases x in (0, T], the time t_x
    of the last one, and the wait from T to the next purchase (inf for customers who dropped out
    after a purchase before T).
    """
    size = T.size
    rate = rng.gamma(r, 1.0 / alpha, size)
    dropout = rng.beta(a, b, size)
    x, t_x, clock = np.zeros(size), np.zeros(size), np.zeros(size)
    wait = np.full(size, np.inf)
    active = np.arange(size)
    if dropout_at_first_purchase:
        active = active[rng.random(size) >= dropout]
    while active.size:
        clock[active] += rng.standard_exponential(active.size) / rate[active]
        beyond = clock[active] > T[active]
        done = active[beyond]
        wait[done] = clock[done] - T[done]
        buying = active[~beyond]
        x[buying] += 1.0
        t_x[buying] = clock[buying]
        drops = rng.random(buying.size) < dropout[buying]  # a customer drops out only right after a purchase
        active = buying[~drops]
    return x, t_x, wait


def log_likelihood_hessian(likelihood, point: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """Hessian of a log-likelihood by second differences of its value (not of its gradient)."""
    k = point.size
    h = step * point
    value = lambda p: likelihood(p)[0]  # noqa: E731
    hessian = np.empty((k, k))
    for i in range(k):
        for j in range(k):
            ei, ej = np.eye(k)[i] * h[i], np.eye(k)[j] * h[j]
            hessian[i, j] = (
                value(point + ei + ej) - value(point + ei - ej) - value(point - ei + ej) + value(point - ei - ej)
            ) / (4.0 * h[i] * h[j])
    return hessian


# --- covariance of the estimates ----------------------------------------------------------------


def test_covariance_matches_inverse_finite_difference_hessian(cdnow, cdnow_model):
    likelihood = bgnbd._Likelihood(*cdnow, np.ones_like(cdnow[0]))
    point = np.array([cdnow_model.params_[name] for name in bgnbd.PARAMS])
    expected = np.linalg.inv(-log_likelihood_hessian(likelihood, point))
    covariance = np.array(cdnow_model.fit_result_.covariance)

    assert covariance.shape == (4, 4)
    np.testing.assert_allclose(covariance, covariance.T, rtol=0, atol=0)
    standard_errors = np.sqrt(np.diag(covariance))
    # Compare on the scale of the standard errors, because a and b correlate at 0.94 and inverting
    # the noisy second differences moves the small entries by up to 1e-4 of their own size. With
    # steps from 3e-5 to 1e-3 the scaled difference was between 4e-6 and 5e-5.
    scale = np.outer(standard_errors, standard_errors)
    np.testing.assert_allclose(covariance / scale, expected / scale, rtol=0, atol=2e-5)
    np.testing.assert_allclose(np.diag(covariance), np.diag(expected), rtol=2e-5)
    assert standard_errors == pytest.approx([cdnow_model.standard_errors_[name] for name in bgnbd.PARAMS], rel=1e-12)


def test_standard_errors_agree_with_lifetimes(cdnow, cdnow_model):
    # lifetimes 0.11.3 inverts the Hessian of its own fit. Only its diagonal is comparable, since its
    # variance_matrix_ scales column j of the log-scale inverse by theta_j**2 instead of theta_i * theta_j.
    theirs = import_lifetimes().BetaGeoFitter().fit(*cdnow)
    for name in bgnbd.PARAMS:
        assert cdnow_model.standard_errors_[name] == pytest.approx(theirs.standard_errors_[name], rel=1e-4), name


def test_covariance_in_to_dict(cdnow_model):
    entry = json.loads(json.dumps(cdnow_model.fit_result_.to_dict(), allow_nan=False))
    assert entry["covariance"] == pytest.approx(np.array(cdnow_model.fit_result_.covariance))
    assert entry["standard_errors"] == pytest.approx(cdnow_model.standard_errors_)


def test_singular_information_gives_no_covariance():
    # Without repeat purchases a and b do not enter the likelihood, so the Hessian is singular.
    T = np.linspace(10.0, 40.0, 200)
    with pytest.warns(DataQualityWarning, match="not negative definite"):
        model = BetaGeoModel().fit(np.zeros(200), np.zeros(200), T)
    assert model.fit_result_.covariance is None
    assert model.fit_result_.to_dict()["covariance"] is None
    with pytest.raises(FitError, match="no covariance matrix because the Hessian .* is not negative definite"):
        diagnostics.parameter_draws(model, seed=1)


# --- BG/NBD count distribution (eq. 8) ----------------------------------------------------------


def probability_by_tail_sum(t, n, r, alpha, a, b):
    """P(X(t) = n) of eq. 8 with its tail 1 - sum_{j<n} NB(j) summed upward as sum_{j>=n} NB(j).

    Every term is positive, so the sum keeps full precision where the head sum cancels.
    """
    z = t / (alpha + t)

    def log_nb(j):
        return gammaln(r + j) - gammaln(r) - gammaln(j + 1.0) + r * np.log(alpha / (alpha + t)) + j * np.log(z)

    stay = np.exp(betaln(a, b + n) - betaln(a, b) + log_nb(n))
    if n == 0:
        return stay
    j = np.arange(n, n + 200_000, dtype=float)
    terms = log_nb(j)
    assert terms[-1] < terms.max() - 60  # the truncated tail is negligible
    return stay + np.exp(betaln(a + 1.0, b + n - 1.0) - betaln(a, b) + logsumexp(terms))


@pytest.mark.parametrize("t", [0.5, 39.0, 520.0], ids=["half-week", "39-weeks", "10-years"])
def test_count_distribution_sums_to_one(cdnow_model, t):
    probabilities = cdnow_model.probability_of_n_purchases(t, np.arange(100_000))
    assert np.all(probabilities >= 0)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-10)


def test_count_distribution_mean_is_expected_purchases(cdnow_model):
    n = np.arange(100_000)
    for t in (1.0, 39.0, 104.0):
        mean = np.sum(n * cdnow_model.probability_of_n_purchases(t, n))
        assert mean == pytest.approx(cdnow_model.expected_purchases_new_customer(t), rel=1e-9), t


def test_count_distribution_matches_lifetimes(cdnow_model):
    theirs = lifetimes_bgnbd(cdnow_model.params_)
    for t in (1.0, 39.0, 78.0):
        for n in range(12):
            expected = theirs.probability_of_n_purchases_up_to_time(t, n)
            assert cdnow_model.probability_of_n_purchases(t, n) == pytest.approx(expected, rel=1e-9), (t, n)


@pytest.mark.parametrize(
    ("t", "n"),
    [(1.0, 20), (1.0, 60), (39.0, 150), (5000.0, 500), (5000.0, 3000)],
    ids=["short-20", "short-60", "39-weeks-150", "long-500", "long-3000"],
)
def test_count_distribution_is_accurate_for_large_n(t, n):
    # lifetimes' 1 - sum form loses all digits at t = 1, n = 20, and Gamma(r + n) overflows past n ~ 170.
    params = (0.8, 4.4, 0.79, 2.4)
    ours = fitted_bgnbd(*params).probability_of_n_purchases(t, n)
    assert np.isfinite(ours)
    assert ours > 0
    assert ours == pytest.approx(probability_by_tail_sum(t, n, *params), rel=1e-9)


def test_count_distribution_at_time_zero_and_broadcasting(cdnow_model):
    assert cdnow_model.probability_of_n_purchases(0.0, [0, 1, 5]).tolist() == [1.0, 0.0, 0.0]
    grid = cdnow_model.probability_of_n_purchases(np.array([1.0, 39.0])[:, None], np.arange(3))
    assert grid.shape == (2, 3)
    assert grid[1, 2] == cdnow_model.probability_of_n_purchases(39.0, 2)


@pytest.mark.parametrize(("t", "n"), [(1.0, 1.5), (1.0, -1), (-1.0, 1), (1.0, np.nan)], ids=["fractional", "negative-n", "negative-t", "nan"])
def test_count_distribution_rejects_bad_arguments(cdnow_model, t, n):
    with pytest.raises(ConfigError, match=r"(n must be a whole number in|t must be in) \[0, inf\)"):
        cdnow_model.probability_of_n_purchases(t, n)


# --- conditional expectations and the repeat-purchase histogram ---------------------------------


def test_holdout_counts_agree_with_lifetimes(cdnow, cdnow_orders, cdnow_holdout):
    # lifetimes builds calibration and holdout counts from the same transactions on its own. Under
    # pandas 3 its holdout step fails unless the orders carry a column besides id and date, so
    # dollars go in as the monetary value.
    utils = import_lifetimes().utils
    theirs = utils.calibration_and_holdout_data(
        cdnow_orders, "customer", "date", calibration_period_end=CALIBRATION_END, observation_period_end=HOLDOUT_END,
        freq="D", monetary_value_col="dollars",
    ).reindex(range(1, 2358))
    assert theirs["frequency_cal"].to_numpy() == pytest.approx(cdnow[0])
    assert theirs["frequency_holdout"].to_numpy() == pytest.approx(cdnow_holdout[0])
    assert theirs["duration_holdout"].iloc[0] == HOLDOUT_WEEKS * 7


def test_conditional_expectations_match_direct_computation(cdnow, cdnow_holdout, cdnow_model):
    x, t_x, T = cdnow
    actual = cdnow_holdout[0]
    table = diagnostics.conditional_expectations(cdnow_model, x, t_x, T, actual, HOLDOUT_WEEKS)

    # The lifetimes plot_calibration_purchases_vs_holdout_purchases computation, with 7+ pooled,
    # predicting with lifetimes' own eq. 10 at our estimates.
    predicted = lifetimes_bgnbd(cdnow_model.params_).conditional_expected_number_of_purchases_up_to_time(HOLDOUT_WEEKS, x, t_x, T)
    frame = pd.DataFrame({"group": np.minimum(x, 7), "actual": actual, "predicted": predicted})
    expected = frame.groupby("group").agg(customers=("actual", "size"), actual=("actual", "mean"), predicted=("predicted", "mean"))

    assert table["frequency"].tolist() == ["0", "1", "2", "3", "4", "5", "6", "7+"]
    assert table["customers"].tolist() == expected["customers"].tolist()
    assert table["customers"].tolist() == [1411, 439, 214, 100, 62, 38, 29, 64]
    np.testing.assert_allclose(table["actual"], expected["actual"], rtol=1e-12)
    np.testing.assert_allclose(table["predicted"], expected["predicted"], rtol=1e-8)


def test_conditional_expectations_invariants(cdnow, cdnow_holdout, cdnow_model):
    x, t_x, T = cdnow
    actual = cdnow_holdout[0]
    table = diagnostics.conditional_expectations(cdnow_model, x, t_x, T, actual, HOLDOUT_WEEKS, max_frequency=3)
    assert table["frequency"].tolist() == ["0", "1", "2", "3+"]
    assert table["customers"].sum() == x.size
    assert (table["customers"] * table["actual"]).sum() == pytest.approx(actual.sum(), rel=1e-12)
    total_predicted = cdnow_model.expected_purchases(HOLDOUT_WEEKS, x, t_x, T).sum()
    assert (table["customers"] * table["predicted"]).sum() == pytest.approx(total_predicted, rel=1e-12)

    per_customer = diagnostics.conditional_expectations(cdnow_model, x, t_x, T, actual, np.full(x.size, HOLDOUT_WEEKS), max_frequency=3)
    pd.testing.assert_frame_equal(per_customer, table)


def test_conditional_expectations_empty_group_is_nan(cdnow_model):
    table = diagnostics.conditional_expectations(cdnow_model, [0, 0, 2], [0, 0, 5], [10, 10, 10], [1, 0, 3], 5.0, max_frequency=3)
    assert table["customers"].tolist() == [2, 0, 1, 0]
    assert table["actual"].iloc[0] == 0.5
    assert np.isnan(table["actual"].iloc[1])
    assert np.isnan(table["predicted"].iloc[3])


@pytest.mark.parametrize(
    ("holdout", "length", "match"),
    [
        ([1, -1, 0], 5.0, r"1 of 3 customers break the rule 'holdout_purchases >= 0' \(row positions 1\)"),
        ([1, 0], 5.0, "holdout_purchases has 2 values but the customers number 3"),
        ([1, 0, 2], -1.0, r"holdout_length >= 0 and finite"),
        ([1, 0, 2], [5.0, 5.0], r"holdout_length has shape \(2,\)"),
    ],
    ids=["negative", "length", "negative-length", "length-shape"],
)
def test_conditional_expectations_rejects_bad_holdout(cdnow_model, holdout, length, match):
    with pytest.raises(InputError, match=match):
        diagnostics.conditional_expectations(cdnow_model, [0, 1, 2], [0, 1, 5], [10, 10, 10], holdout, length)


def test_repeat_purchase_histogram_matches_lifetimes(cdnow, cdnow_model):
    x, _, T = cdnow
    table = diagnostics.repeat_purchase_histogram(cdnow_model, x, T)

    theirs = lifetimes_bgnbd(cdnow_model.params_)
    expected = np.array([sum(theirs.probability_of_n_purchases_up_to_time(t, n) for t in T) for n in range(7)])

    assert table["repeat_purchases"].tolist() == ["0", "1", "2", "3", "4", "5", "6", "7+"]
    assert table["actual"].tolist() == [1411, 439, 214, 100, 62, 38, 29, 64]
    np.testing.assert_allclose(table["predicted"].iloc[:7], expected, rtol=1e-9)
    assert table["predicted"].iloc[7] == pytest.approx(x.size - expected.sum(), rel=1e-9)
    assert table["predicted"].sum() == pytest.approx(x.size, rel=1e-12)


def test_repeat_purchase_histogram_needs_count_distribution():
    spend_model = GammaGammaModel().fit([1, 2, 3, 1, 4, 2], [10.0, 12.0, 30.0, 8.0, 20.0, 15.0])
    with pytest.raises(InputError, match=r"GammaGammaModel has no probability_of_n_purchases\(\) method"):
        diagnostics.repeat_purchase_histogram(spend_model, [1, 2], [10.0, 10.0])


# --- holdout errors and ranking -----------------------------------------------------------------


def test_holdout_errors_by_hand():
    errors = diagnostics.holdout_errors([1.0, 2.0, 0.5, 0.0], [0.0, 4.0, 0.5, 1.0])
    # errors 1, -2, 0, -1: MAE 4/4 = 1, RMSE sqrt(6/4)
    assert errors == {"customers": 4, "actual_total": 5.5, "predicted_total": 3.5, "mae": 1.0, "rmse": pytest.approx(np.sqrt(1.5))}


def test_holdout_errors_reject_mismatched_arrays():
    with pytest.raises(InputError, match="actual has 2 values but the customers number 3"):
        diagnostics.holdout_errors([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(InputError, match=r"1 of 2 customers break the rule 'predicted is finite'"):
        diagnostics.holdout_errors([1.0, np.nan], [1.0, 2.0])


def test_ranking_quality_by_hand_with_ties():
    # Ranked by prediction: 3 -> 4; the tied 2s share (0 + 2) / 2 = 1 each; 1 -> 2. Total 8.
    # Shares L = 0.5, 0.625, 0.75, 1 against k / n = 0.25, 0.5, 0.75, 1: area 0.375 / 4.
    # Ranked by actual (4, 2, 2, 0): L = 0.5, 0.75, 1, 1, area 0.75 / 4. Gini = 0.5.
    # Top 10 % of 4 customers is 0.4 of the first one: 0.4 * 4 / 8 = 0.2.
    quality = diagnostics.ranking_quality([3.0, 2.0, 2.0, 1.0], [4.0, 0.0, 2.0, 2.0])
    assert quality["gini"] == pytest.approx(0.5, rel=1e-12)
    assert quality["top_decile_capture"] == pytest.approx(0.2, rel=1e-12)
    assert quality["customers"] == 4


def test_ranking_quality_extremes():
    actual = np.array([5.0, 0.0, 1.0, 3.0, 0.0, 2.0, 8.0, 0.0, 1.0, 4.0])
    perfect = diagnostics.ranking_quality(actual, actual)
    assert perfect["gini"] == pytest.approx(1.0, rel=1e-12)
    assert perfect["top_decile_capture"] == pytest.approx(8.0 / 24.0, rel=1e-12)  # one customer of ten
    reverse = diagnostics.ranking_quality(-actual, actual)
    assert reverse["gini"] == pytest.approx(-1.0, rel=1e-12)
    constant = diagnostics.ranking_quality(np.ones(10), actual)
    assert constant["gini"] == pytest.approx(0.0, abs=1e-12)
    assert constant["top_decile_capture"] == pytest.approx(0.1, rel=1e-12)


def test_ranking_quality_ignores_input_order_among_ties():
    rng = np.random.default_rng(11)
    predicted = rng.integers(0, 4, 500).astype(float)  # many ties
    actual = rng.gamma(0.5, 10.0, 500)
    order = rng.permutation(500)
    first = diagnostics.ranking_quality(predicted, actual)
    shuffled = diagnostics.ranking_quality(predicted[order], actual[order])
    assert shuffled["gini"] == pytest.approx(first["gini"], rel=1e-12)
    assert shuffled["top_decile_capture"] == pytest.approx(first["top_decile_capture"], rel=1e-12)


def test_ranking_gini_matches_auc():
    # For 0/1 actual values the normalised Gini equals 2 AUC - 1, AUC counting tied pairs as one half.
    rng = np.random.default_rng(5)
    predicted = np.round(rng.normal(size=400), 1)
    actual = (rng.random(400) < 1.0 / (1.0 + np.exp(-2.0 * predicted))).astype(float)
    buyers, others = predicted[actual == 1.0], predicted[actual == 0.0]
    difference = buyers[:, None] - others[None, :]
    auc = np.mean((difference > 0) + 0.5 * (difference == 0))
    assert diagnostics.ranking_quality(predicted, actual)["gini"] == pytest.approx(2.0 * auc - 1.0, rel=1e-10)


def test_ranking_quality_on_cdnow(cdnow, cdnow_holdout, cdnow_model):
    predicted = cdnow_model.expected_purchases(HOLDOUT_WEEKS, *cdnow)
    quality = diagnostics.ranking_quality(predicted, cdnow_holdout[1])
    assert 0.0 < quality["gini"] < 1.0
    assert 0.1 < quality["top_decile_capture"] < 1.0
    assert quality["customers"] == 2357


def test_ranking_quality_undefined_cases_warn():
    with pytest.warns(DataQualityWarning, match="total actual value is 0"):
        quality = diagnostics.ranking_quality([1.0, 2.0], [0.0, 0.0])
    assert np.isnan(quality["gini"])
    assert np.isnan(quality["top_decile_capture"])
    with pytest.warns(DataQualityWarning, match="same actual value"):
        quality = diagnostics.ranking_quality([1.0, 2.0, 3.0], [0.1, 0.1, 0.1])  # 0.1 is inexact in binary
    assert np.isnan(quality["gini"])
    assert quality["top_decile_capture"] == pytest.approx(0.1, rel=1e-12)
    with pytest.raises(InputError, match="'actual_value >= 0'"):
        diagnostics.ranking_quality([1.0, 2.0], [1.0, -1.0])


# --- model comparison ---------------------------------------------------------------------------


def test_model_comparison_by_hand(cdnow, cdnow_holdout, cdnow_model):
    predicted = cdnow_model.expected_purchases(HOLDOUT_WEEKS, *cdnow)
    table = diagnostics.model_comparison(
        {"bg_nbd": cdnow_model}, n_customers=2357, holdout={"bg_nbd": (predicted, cdnow_holdout[0])}
    )
    row = table.iloc[0]
    assert row["name"] == "bg_nbd"
    assert row["parameters"] == 4
    assert row["log_likelihood"] == cdnow_model.log_likelihood_
    # Published log-likelihood -9582.4 (Fader, Hardie and Lee 2005) gives AIC 19172.8.
    assert row["aic"] == pytest.approx(19172.8, abs=0.1)
    assert row["bic"] == pytest.approx(4 * np.log(2357) - 2 * cdnow_model.log_likelihood_, rel=1e-12)
    errors = diagnostics.holdout_errors(predicted, cdnow_holdout[0])
    assert row["holdout_mae"] == errors["mae"]
    assert row["holdout_rmse"] == errors["rmse"]


def test_model_comparison_labels_sequence_by_name(cdnow_model):
    table = diagnostics.model_comparison([cdnow_model], n_customers=2357)
    assert table.columns.tolist() == ["name", "parameters", "log_likelihood", "aic", "bic"]
    assert table["name"].tolist() == ["bg_nbd"]


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"n_customers": 1000}, InputError, "fitted to 2357 customers, not n_customers = 1000"),
        ({"n_customers": 2357, "holdout": {}}, InputError, r"holdout has no predictions for \['bg_nbd'\]"),
        ({"n_customers": 0}, ConfigError, r"n_customers must be in \(0, inf\]"),
    ],
    ids=["other-customers", "missing-holdout", "zero-customers"],
)
def test_model_comparison_rejects_bad_arguments(cdnow_model, arguments, error, match):
    with pytest.raises(error, match=match):
        diagnostics.model_comparison({"bg_nbd": cdnow_model}, **arguments)


def test_model_comparison_needs_fitted_models():
    with pytest.raises(NotFittedError, match="BetaGeoModel is not fitted yet"):
        diagnostics.model_comparison([BetaGeoModel()], n_customers=10)


# --- parameter draws and prediction intervals ---------------------------------------------------


def test_parameter_draws_follow_log_scale_normal(cdnow_model):
    draws = diagnostics.parameter_draws(cdnow_model, draws=20_000, seed=3)
    names = list(bgnbd.PARAMS)
    assert list(draws) == names
    logs = np.log(np.column_stack([draws[name] for name in names]))
    estimates = np.array([cdnow_model.params_[name] for name in names])
    expected = np.array(cdnow_model.fit_result_.covariance) / np.outer(estimates, estimates)  # delta method

    log_sd = np.sqrt(np.diag(expected))
    # The mean of 20,000 normal draws lies within 4 / sqrt(20,000) standard deviations of the centre.
    assert np.all(np.abs(logs.mean(axis=0) - np.log(estimates)) < 4 * log_sd / np.sqrt(20_000))
    # A sample variance from 20,000 draws has relative standard error sqrt(2 / 20,000) = 1 %.
    np.testing.assert_allclose(np.var(logs, axis=0), np.diag(expected), rtol=0.05)
    correlation = expected / np.outer(log_sd, log_sd)
    np.testing.assert_allclose(np.corrcoef(logs, rowvar=False), correlation, atol=0.03)


def test_parameter_draws_repeat_with_seed(cdnow_model):
    first = diagnostics.parameter_draws(cdnow_model, draws=50, seed=9)
    second = diagnostics.parameter_draws(cdnow_model, draws=50, seed=9)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
        assert np.all(first[name] > 0)


def test_parameter_draws_need_fit():
    with pytest.raises(NotFittedError, match="BetaGeoModel is not fitted yet"):
        diagnostics.parameter_draws(BetaGeoModel(), seed=1)
    with pytest.raises(ConfigError, match="draws must be a whole number"):
        diagnostics.parameter_draws(BetaGeoModel(), draws=2.5, seed=1)


def test_prediction_interval_covers_point_and_shrinks_with_sample(cdnow):
    x, t_x, T = cdnow
    rows, _ = unique_rows(x, t_x, T)

    def widths(model):
        interval = diagnostics.prediction_interval(
            model, lambda p: diagnostics.with_params(model, p).expected_purchases(HOLDOUT_WEEKS, *rows), draws=500, seed=17
        )
        assert np.all(interval["lower"] <= interval["point"])
        assert np.all(interval["point"] <= interval["upper"])
        return interval["upper"] - interval["lower"]

    full = BetaGeoModel().fit(x, t_x, T)
    quarter = np.random.default_rng(2).permutation(x.size)[: x.size // 4]
    subsample = BetaGeoModel().fit(x[quarter], t_x[quarter], T[quarter])
    ratio = widths(subsample) / widths(full)
    # Widths shrink as 1 / sqrt(customers), so a quarter of the sample should about double them.
    assert np.all(ratio > 1.0)
    assert 1.5 < np.median(ratio) < 3.0


def test_prediction_interval_for_clv(cdnow, cdnow_model):
    # Compressed the way the docstring of prediction_interval suggests.
    x, t_x, T = cdnow
    rows, inverse = np.unique(np.column_stack([x, t_x, T]), axis=0, return_inverse=True)
    rows_x, rows_t_x, rows_t = rows.T

    def clv(params):
        model = diagnostics.with_params(cdnow_model, params)
        return customer_lifetime_value(model, 35.0, rows_x, rows_t_x, rows_t, horizon=52, discount_rate=0.1, time_unit="week")

    interval = diagnostics.prediction_interval(cdnow_model, clv, level=0.8, draws=100, seed=4)
    point = interval["point"][inverse]
    expected = customer_lifetime_value(cdnow_model, 35.0, x, t_x, T, horizon=52, discount_rate=0.1, time_unit="week")
    np.testing.assert_allclose(point, expected, rtol=1e-12)
    assert np.all((interval["lower"] <= interval["point"]) & (interval["point"] <= interval["upper"]))
    assert np.all(interval["upper"] > interval["lower"])


def test_delta_interval_agrees_with_many_draws(cdnow, cdnow_model):
    # Independent computation: the quantiles of 20,000 parameter draws. Their Monte Carlo error at
    # the 5% and 95% quantiles is well under 1%, so a 5% tolerance tests the approximation itself.
    rows, _ = unique_rows(*cdnow)

    def expected(params):
        return diagnostics.with_params(cdnow_model, params).expected_purchases(HOLDOUT_WEEKS, *rows)

    drawn = diagnostics.prediction_interval(cdnow_model, expected, draws=20_000, seed=3)
    delta = diagnostics.delta_interval(cdnow_model, expected)
    np.testing.assert_allclose(delta["point"], drawn["point"], rtol=1e-12)
    np.testing.assert_allclose(delta["lower"], drawn["lower"], rtol=0.05)
    np.testing.assert_allclose(delta["upper"], drawn["upper"], rtol=0.05)
    assert np.all((delta["lower"] < delta["point"]) & (delta["point"] < delta["upper"]))


def test_delta_interval_is_nan_where_the_prediction_is_not_positive(cdnow_model):
    interval = diagnostics.delta_interval(cdnow_model, lambda p: np.array([1.0, 0.0]) * p["r"])
    assert np.isfinite(interval["lower"][0])
    assert np.isnan(interval["lower"][1])
    assert np.isnan(interval["upper"][1])
    with pytest.raises(ConfigError, match=r"level must be in \(0, 1\)"):
        diagnostics.delta_interval(cdnow_model, lambda p: np.ones(2), level=0.0)


def test_prediction_interval_rejects_bad_arguments(cdnow_model):
    with pytest.raises(ConfigError, match=r"level must be in \(0, 1\)"):
        diagnostics.prediction_interval(cdnow_model, lambda p: np.zeros(2), level=1.0, seed=1)
    shapes = iter([np.zeros(3)] + [np.zeros(2)] * 10)
    with pytest.raises(InputError, match=r"function returned shape \(2,\) for a parameter draw but \(3,\)"):
        diagnostics.prediction_interval(cdnow_model, lambda p: next(shapes), draws=5, seed=1)
    with pytest.raises(InputError, match="params names"):
        diagnostics.with_params(cdnow_model, {"r": 1.0})


def test_prediction_interval_coverage_by_simulation():
    # Refit on 100 simulated samples. The 90 % interval for a new customer's expected purchases in
    # 39 weeks should contain the true value about 90 times, with a binomial standard deviation of 3.
    # Scaling the covariance by 1/4 or by 4 gave 60 and 100 here, so the bounds can fail.
    truth = (0.5, 6.0, 0.8, 2.5)
    true_value = fitted_bgnbd(*truth).expected_purchases_new_customer(HOLDOUT_WEEKS)
    rng = np.random.default_rng(2024)
    covered = 0
    for _ in range(100):
        T = rng.uniform(27.0, 39.0, 2000)
        x, t_x, _ = simulate_bgnbd(rng, *truth, T)
        model = BetaGeoModel().fit(x, t_x, T)
        interval = diagnostics.prediction_interval(
            model, lambda p, m=model: diagnostics.with_params(m, p).expected_purchases_new_customer(HOLDOUT_WEEKS),
            draws=400, seed=rng,
        )
        covered += bool(interval["lower"] <= true_value <= interval["upper"])
    assert 80 <= covered <= 98


# --- time to the next purchase ------------------------------------------------------------------


def modified_bgnbd(r, alpha, a, b):
    """An MBG/NBD model with given parameters, bypassing fit."""
    from revopt.models.mbgnbd import ModifiedBetaGeoModel

    model = ModifiedBetaGeoModel()
    model.params_ = {"r": r, "alpha": alpha, "a": a, "b": b}
    return model


@pytest.mark.parametrize("model_name", ["bg_nbd", "mbg_nbd"])
def test_next_purchase_time_matches_simulation(model_name):
    truth = (0.24, 4.4, 0.79, 2.4)  # near the CDNOW estimates
    modified = model_name == "mbg_nbd"
    rng = np.random.default_rng(42)
    T = rng.uniform(27.0, 39.0, 100_000)
    x, t_x, wait = simulate_bgnbd(rng, *truth, T, dropout_at_first_purchase=modified)
    model = modified_bgnbd(*truth) if modified else fitted_bgnbd(*truth)
    quantiles = (0.1, 0.3, 0.5)
    table = diagnostics.next_purchase_time(model, x, t_x, T, quantiles=quantiles)

    # P(buys again) is each customer's P(alive): the simulated share that bought must match its mean.
    bought = np.isfinite(wait)
    alive = table["probability_alive"].to_numpy()
    assert abs(bought.mean() - alive.mean()) < 4 * np.sqrt(np.sum(alive * (1 - alive))) / x.size

    # Each customer with a finite q-time has bought by then with probability exactly q, so the share
    # of such customers who had bought by their own q-time is a binomial proportion around q.
    for q, column in zip(quantiles, ("time_p10", "time_p30", "time_p50")):
        times = table[column].to_numpy()
        for subset in (x == 0, x > 0):
            finite = subset & np.isfinite(times)
            assert finite.sum() > 1000
            share = np.mean(wait[finite] <= times[finite])
            assert abs(share - q) < 4 * np.sqrt(q * (1 - q) / finite.sum()), (q, subset.sum())
        assert np.all(np.isnan(times[alive <= q]))


def test_next_purchase_time_by_hand():
    r, alpha, a, b = 0.5, 10.0, 1.0, 3.0
    model = fitted_bgnbd(r, alpha, a, b)
    table = diagnostics.next_purchase_time(model, [0, 2], [0.0, 15.0], [20.0, 20.0], quantiles=(0.5,))
    # x = 0: alive for certain; (30 / (30 + t))^0.5 = 0.5 gives t = 30 * (4 - 1) = 90.
    assert table["probability_alive"].iloc[0] == 1.0
    assert table["time_p50"].iloc[0] == pytest.approx(90.0, rel=1e-12)
    # x = 2: P(alive) = 1 / (1 + a / (b + 1) (30 / 25)^2.5) = 0.717; the median needs P(alive) > 0.5.
    alive = 1.0 / (1.0 + a / (b + 1.0) * 1.2**2.5)
    assert table["probability_alive"].iloc[1] == pytest.approx(alive, rel=1e-12)
    expected = 30.0 * ((1.0 - 0.5 / alive) ** (-1.0 / 2.5) - 1.0)
    assert table["time_p50"].iloc[1] == pytest.approx(expected, rel=1e-12)


PARETO_PARAMS = {"r": 0.55, "alpha": 10.6, "s": 0.61, "beta": 11.7}  # near the CDNOW estimates, in weeks


def fitted_pareto_nbd(params: dict) -> ParetoNBDModel:
    """A Pareto/NBD model with given parameters, bypassing fit (to evaluate formulas at chosen points)."""
    model = ParetoNBDModel()
    model.params_ = dict(params)
    return model


def pareto_nbd_purchase_probability(params: dict, x: float, T: float, t: float) -> float:
    """P(buys within t, before dropping out | alive at T), by adaptive quadrature over the waiting time.

    The density at u is E[lambda exp(-(lambda + mu) u)] with lambda ~ Gamma(r + x, alpha + T) and
    mu ~ Gamma(s, beta + T), the two gamma Laplace transforms multiplied.
    """
    shape, rate = params["r"] + x, params["alpha"] + T
    dropout_rate = params["beta"] + T

    def density(u):
        return shape / rate * (1 + u / rate) ** -(shape + 1) * (1 + u / dropout_rate) ** -params["s"]

    return quad(density, 0.0, t, epsabs=0.0, epsrel=1e-12, limit=200)[0]


def test_next_purchase_time_pareto_nbd_matches_simulation():
    model = fitted_pareto_nbd(PARETO_PARAMS)
    x = np.array([0.0, 2.0, 10.0, 1.0])
    t_x = np.array([0.0, 20.0, 30.0, 35.0])
    T = np.array([38.0, 38.0, 38.0, 39.0])
    quantiles = (0.05, 0.1, 0.3, 0.5)
    table = diagnostics.next_purchase_time(model, x, t_x, T, quantiles=quantiles)
    alive = table["probability_alive"].to_numpy()

    rng = np.random.default_rng(7)
    draws = 400_000
    for customer in range(x.size):
        shape, rate = PARETO_PARAMS["r"] + x[customer], PARETO_PARAMS["alpha"] + T[customer]
        purchase_rate = rng.gamma(shape, 1.0 / rate, draws)
        dropout_rate = rng.gamma(PARETO_PARAMS["s"], 1.0 / (PARETO_PARAMS["beta"] + T[customer]), draws)
        is_alive = rng.random(draws) < alive[customer]
        wait = rng.exponential(1.0 / purchase_rate)
        lifetime = rng.exponential(1.0 / dropout_rate)
        wait = np.where(is_alive & (wait < lifetime), wait, np.inf)  # inf: never buys again

        ever = np.isfinite(wait).mean()
        for q in quantiles:
            time = table[f"time_p{100 * q:g}"].iloc[customer]
            tolerance = 4 * np.sqrt(q * (1 - q) / draws)
            if np.isnan(time):
                assert ever < q + tolerance, (customer, q, ever)
            else:
                assert abs(np.mean(wait <= time) - q) < tolerance, (customer, q)
    # The chosen customers cover both cases: some levels are reachable and some are not.
    times = table[[f"time_p{100 * q:g}" for q in quantiles]].to_numpy()
    assert np.isnan(times).any()
    assert np.isfinite(times).any()


def test_next_purchase_time_pareto_nbd_matches_quadrature():
    model = fitted_pareto_nbd(PARETO_PARAMS)
    x = np.array([0.0, 0.0, 3.0, 25.0, 1.0])
    t_x = np.array([0.0, 0.0, 10.0, 30.0, 0.5])
    T = np.array([0.0, 50.0, 40.0, 31.0, 1.0])
    quantiles = (0.01, 0.1, 0.3, 0.6, 0.9)
    table = diagnostics.next_purchase_time(model, x, t_x, T, quantiles=quantiles)
    alive = table["probability_alive"].to_numpy()
    for customer in range(x.size):
        for q in quantiles:
            time = table[f"time_p{100 * q:g}"].iloc[customer]
            if np.isfinite(time):
                bought = alive[customer] * pareto_nbd_purchase_probability(PARETO_PARAMS, x[customer], T[customer], time)
                assert bought == pytest.approx(q, rel=1e-8), (customer, q)


def test_next_purchase_time_pareto_nbd_unreachable_nan():
    # Alpha < beta and alpha > beta take different branches of the hypergeometric form.
    for params in (PARETO_PARAMS, {"r": 1.3, "alpha": 4.0, "s": 2.5, "beta": 0.5}):
        model = fitted_pareto_nbd(params)
        x = np.array([0.0, 1.0, 4.0, 12.0, 40.0])
        t_x = np.array([0.0, 5.0, 20.0, 25.0, 30.0])
        T = np.array([30.0, 30.0, 30.0, 30.0, 30.0])
        quantiles = np.round(np.arange(0.02, 1.0, 0.04), 2)
        table = diagnostics.next_purchase_time(model, x, t_x, T, quantiles=quantiles)
        alive = table["probability_alive"].to_numpy()
        for customer in range(x.size):
            ever = alive[customer] * pareto_nbd_purchase_probability(params, x[customer], T[customer], np.inf)
            for q in quantiles:
                assert abs(q - ever) > 1e-6, "pick levels away from the boundary"
                time = table[f"time_p{100 * q:g}"].iloc[customer]
                assert np.isnan(time) == (q >= ever), (params, customer, q, ever)


def test_next_purchase_time_pareto_nbd_increases_with_level():
    model = fitted_pareto_nbd(PARETO_PARAMS)
    quantiles = np.round(np.arange(0.01, 1.0, 0.01), 2)
    table = diagnostics.next_purchase_time(model, [0, 3, 20], [0.0, 30.0, 38.0], [39.0, 39.0, 39.0], quantiles=quantiles)
    for customer in range(3):
        times = table.iloc[customer, 1:].to_numpy(dtype=float)
        finite = times[np.isfinite(times)]
        assert finite.size > 10
        # Finite times come first, then NaN from the first unreachable level on.
        assert np.all(np.isfinite(times[: finite.size]))
        assert np.all(np.diff(finite) > 0)
        assert finite[0] > 0
    # The probability of buying within t also increases with t (checked by quadrature).
    probabilities = [pareto_nbd_purchase_probability(PARETO_PARAMS, 3.0, 39.0, t) for t in (0.0, 1.0, 10.0, 100.0, 1e4)]
    assert probabilities[0] == 0.0
    assert np.all(np.diff(probabilities) > 0)


def test_next_purchase_time_pareto_nbd_on_cdnow(cdnow):
    model = ParetoNBDModel().fit(*cdnow)
    frequency, recency, T = cdnow
    table = diagnostics.next_purchase_time(model, frequency, recency, T)
    assert list(table.columns) == ["probability_alive", "time_p10", "time_p50", "time_p90"]
    assert len(table) == frequency.size
    alive = table["probability_alive"].to_numpy()
    assert np.all((alive >= 0) & (alive <= 1))

    # Whether a level is reachable depends on P(alive) and on (x, T): check every distinct row.
    rows = pd.DataFrame({"x": frequency, "T": T, "alive": alive}).drop_duplicates()
    ever = {
        (row.x, row.T): pareto_nbd_purchase_probability(model.params_, row.x, row.T, np.inf)
        for row in rows.drop_duplicates(["x", "T"]).itertuples()
    }
    reachable_share = alive * np.array([ever[key] for key in zip(frequency, T)])
    for q, column in ((0.1, "time_p10"), (0.5, "time_p50"), (0.9, "time_p90")):
        times = table[column].to_numpy()
        clear = np.abs(reachable_share - q) > 1e-9
        assert np.all(np.isfinite(times[clear & (reachable_share > q)])), column
        assert np.all(times[np.isfinite(times)] > 0), column
        assert np.all(np.isnan(times[clear & (reachable_share < q)])), column
    assert np.isfinite(table["time_p10"]).sum() > 1000
    assert np.isfinite(table["time_p50"]).sum() > 100

    # The times of a sample of customers solve P(alive) P(buys within t) = q.
    rng = np.random.default_rng(3)
    for customer in rng.choice(np.flatnonzero(np.isfinite(table["time_p50"])), 20, replace=False):
        bought = pareto_nbd_purchase_probability(model.params_, frequency[customer], T[customer], table["time_p50"].iloc[customer])
        assert alive[customer] * bought == pytest.approx(0.5, rel=1e-8)


def test_next_purchase_time_rejects_other_models_and_quantiles(cdnow_model):
    spend_model = GammaGammaModel().fit([1, 2, 3, 1, 4, 2], [10.0, 12.0, 30.0, 8.0, 20.0, 15.0])
    with pytest.raises(InputError, match="GammaGammaModel is not one"):
        diagnostics.next_purchase_time(spend_model, [1], [1.0], [2.0])
    with pytest.raises(ConfigError, match=r"quantile must be in \(0, 1\)"):
        diagnostics.next_purchase_time(cdnow_model, [1], [1.0], [2.0], quantiles=(0.5, 1.0))
    with pytest.raises(ConfigError, match="quantiles must be distinct"):
        diagnostics.next_purchase_time(cdnow_model, [1], [1.0], [2.0], quantiles=(0.5, 0.5))


def test_docstring_examples_run():
    failures, tried = doctest.testmod(diagnostics)
    assert tried > 0
    assert failures == 0
