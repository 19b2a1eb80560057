"""Tests of the BG/BB model in three layers: published estimates, independent computations, invariants.

Data: the charity donation panel in ``donations.csv`` (11,104 donors, 6 opportunities, aggregated
to 22 rows with counts) from the shared datasets folder. Tests that need it skip when it is absent.
Independent implementation: lifetimes 0.11.3 (``BetaGeoBetaBinomFitter``).
"""

from __future__ import annotations

import doctest
import json
from math import fsum

import numpy as np
import pandas as pd
import pytest
from conftest import dataset
from scipy.special import betaln, comb
from test_models import central_differences, import_lifetimes

from revopt.errors import ConfigError, InputError, NotFittedError
from revopt.models import bgbb
from revopt.models.bgbb import BetaGeoBetaBinomialModel

PARAMS = ("alpha", "beta", "gamma", "delta")


# --- data and helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def donations():
    """frequency, recency, periods and weights (donors per row) of the donation panel."""
    table = pd.read_csv(dataset("cdnow", "donations.csv"))
    return tuple(table[column].to_numpy(dtype=float) for column in ("frequency", "recency", "periods", "weights"))


@pytest.fixture(scope="module")
def donations_model(donations):
    x, t_x, n, weights = donations
    return BetaGeoBetaBinomialModel().fit(x, t_x, n, weights=weights)


def fitted_bgbb(alpha, beta, gamma, delta) -> BetaGeoBetaBinomialModel:
    """A BG/BB model with given parameters, bypassing fit (to evaluate formulas at chosen points)."""
    model = BetaGeoBetaBinomialModel()
    model.params_ = {"alpha": alpha, "beta": beta, "gamma": gamma, "delta": delta}
    return model


def direct_likelihood(params, x, t_x, n) -> float:
    """The BG/BB likelihood of one history, term by term with scipy's betaln (Fader, Hardie and Shang 2010)."""
    alpha, beta, gamma, delta = params
    alive = np.exp(betaln(alpha + x, beta + n - x) - betaln(alpha, beta) + betaln(gamma, delta + n) - betaln(gamma, delta))
    inactive = [
        np.exp(betaln(alpha + x, beta + t_x - x + i) - betaln(alpha, beta) + betaln(gamma + 1, delta + t_x + i) - betaln(gamma, delta))
        for i in range(int(n - t_x))
    ]
    return fsum([alive, *inactive])


def simulate(rng, params, periods: np.ndarray):
    """Simulate BG/BB histories: x, t_x per customer, and whether each is alive at opportunity n + 1."""
    alpha, beta, gamma, delta = params
    size = periods.size
    p = rng.beta(alpha, beta, size)
    theta = rng.beta(gamma, delta, size)
    alive = np.ones(size, dtype=bool)
    x = np.zeros(size)
    t_x = np.zeros(size)
    for opportunity in range(1, int(periods.max()) + 1):
        open_ = opportunity <= periods
        alive &= ~(open_ & (rng.random(size) < theta))  # drop-out at the start of the opportunity
        transacts = open_ & alive & (rng.random(size) < p)
        x += transacts
        t_x = np.where(transacts, opportunity, t_x)
    alive_next = alive & (rng.random(size) >= theta)
    return x, t_x, alive_next


# --- published estimates ------------------------------------------------------------------------


def test_reproduces_published_donation_estimates(donations_model):
    # Fader, Hardie and Shang (2010), Marketing Science 29(6), on this panel:
    # alpha = 1.204, beta = 0.750, gamma = 0.657, delta = 2.783, LL = -33,225.58.
    published = {"alpha": 1.204, "beta": 0.750, "gamma": 0.657, "delta": 2.783}
    for name, value in published.items():
        assert donations_model.params_[name] == pytest.approx(value, rel=5e-3), name
    assert donations_model.log_likelihood_ == pytest.approx(-33225.58, abs=0.1)
    assert donations_model.fit_result_.converged
    assert donations_model.fit_result_.n_customers == 11104
    assert all(0 < se < np.inf for se in donations_model.standard_errors_.values())


# --- independent implementation -----------------------------------------------------------------


def test_agrees_with_lifetimes_on_donations(donations, donations_model):
    lifetimes = import_lifetimes()
    x, t_x, n, weights = donations
    theirs = lifetimes.BetaGeoBetaBinomFitter().fit(x.astype(int), t_x.astype(int), n.astype(int), weights=weights)
    their_params = [float(theirs.params_[name]) for name in PARAMS]

    their_ll = fsum(fitted_bgbb(*their_params).log_likelihood(x, t_x, n) * weights)
    assert donations_model.log_likelihood_ >= their_ll - 1e-6
    for name, value in zip(PARAMS, their_params):
        assert donations_model.params_[name] == pytest.approx(value, rel=1e-3), name

    np.testing.assert_allclose(donations_model.probability_alive(x, t_x, n), theirs.conditional_probability_alive(1, x, t_x, n), rtol=1e-4)
    for n_star in (1, 5, 10):
        np.testing.assert_allclose(
            donations_model.expected_purchases(n_star, x, t_x, n),
            theirs.conditional_expected_number_of_purchases_up_to_time(n_star, x, t_x, n),
            rtol=1e-4,
        )
    their_counts = theirs.expected_number_of_transactions_in_first_n_periods(6)["model"]
    np.testing.assert_allclose(
        donations_model.probability_of_n_purchases(6, their_counts.index.to_numpy()) * weights.sum(), their_counts.to_numpy(), rtol=1e-4
    )


# --- independent computations -------------------------------------------------------------------


@pytest.fixture(scope="module")
def varied_histories():
    """Simulated histories with 1 to 12 opportunities, plus rows at the edges of the rules."""
    rng = np.random.default_rng(20240612)
    periods = rng.integers(1, 13, 3000).astype(float)
    x, t_x, _ = simulate(rng, (1.2, 0.75, 0.66, 2.8), periods)
    edges_x, edges_t_x, edges_n = [0.0, 0.0, 3.0, 3.0, 5.0], [0.0, 0.0, 3.0, 9.0, 5.0], [0.0, 12.0, 3.0, 12.0, 12.0]
    return np.concatenate([x, edges_x]), np.concatenate([t_x, edges_t_x]), np.concatenate([periods, edges_n])


@pytest.mark.parametrize("params", [(1.2, 0.75, 0.66, 2.8), (0.05, 3.0, 4.0, 0.2), (20.0, 0.3, 1.0, 15.0)], ids=["donations", "rare-buyers", "gamma=1"])
def test_likelihood_matches_direct_summation(varied_histories, params):
    x, t_x, n = varied_histories
    ours = fitted_bgbb(*params).log_likelihood(x, t_x, n)
    (distinct_x, distinct_t_x, distinct_n), inverse = bgbb.unique_rows(x, t_x, n)
    direct = np.log([direct_likelihood(params, *row) for row in zip(distinct_x, distinct_t_x, distinct_n)])[inverse]
    np.testing.assert_allclose(ours, direct, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("params", [(1.2, 0.75, 0.66, 2.8), (0.05, 3.0, 4.0, 0.2), (20.0, 0.3, 1.0, 15.0)], ids=["donations", "rare-buyers", "gamma=1"])
def test_gradient_matches_finite_differences(varied_histories, donations, params):
    point = np.array(params)
    for x, t_x, n, weights in (donations, (*varied_histories, np.ones_like(varied_histories[0]))):
        likelihood = bgbb._Likelihood(x, t_x, n, weights)
        numeric = central_differences(lambda p: likelihood(p)[0], point)
        # abs: a difference quotient of a log-likelihood of order 1e4 carries about 1e-6 of rounding noise.
        assert likelihood(point)[1] == pytest.approx(numeric, rel=1e-6, abs=1e-5)


def test_per_customer_log_likelihood_sums_to_fitted_value(donations, donations_model):
    x, t_x, n, weights = donations
    assert fsum(donations_model.log_likelihood(x, t_x, n) * weights) == pytest.approx(donations_model.log_likelihood_, rel=1e-12)


@pytest.mark.parametrize("gamma", [0.657, 1.0, 1.0 + 3e-9, 1.0 - 2e-4, 2.5, 40.0], ids=["donations", "gamma=1", "near-1", "close-to-1", "gamma>1", "large-gamma"])
def test_conditional_expectation_matches_direct_sum(gamma):
    # E(X(n, n + n*)) = B(alpha + x + 1, beta + n - x) / B(alpha, beta) / L * sum_k B(gamma, delta + k) / B(gamma, delta),
    # k = n + 1 .. n + n*: transact at each future opportunity at which the customer is alive.
    alpha, beta, delta = 1.2, 0.75, 2.8
    params = (alpha, beta, gamma, delta)
    histories = [(0, 0, 6), (1, 1, 6), (4, 6, 6), (6, 6, 6), (30, 90, 100)]
    for n_star in (1, 10, 200):
        for x, t_x, n in histories:
            k = np.arange(n + 1, n + n_star + 1)
            alive_sum = fsum(np.exp(betaln(gamma, delta + k) - betaln(gamma, delta)))
            transaction = np.exp(betaln(alpha + x + 1, beta + n - x) - betaln(alpha, beta))
            expected = transaction * alive_sum / direct_likelihood(params, x, t_x, n)
            ours = fitted_bgbb(*params).expected_purchases(n_star, [x], [t_x], [n])[0]
            assert ours == pytest.approx(expected, rel=1e-10), (n_star, x, t_x, n)


def discounted_transactions_by_direct_sum(params, x, t_x, n, discount_rate) -> float:
    """DERT of one history as sum_k P(transaction at n + k | history) / (1 + d)**k, with betaln.

    Each term is at most 1 / (1 + d) times the one before, so the tail after term K is at most
    term_K / d. The sum stops once that bound is below 1e-12 times the partial sum.
    """
    alpha, beta, gamma, delta = params
    transaction = betaln(alpha + x + 1, beta + n - x) - betaln(alpha, beta) - np.log(direct_likelihood(params, x, t_x, n))
    terms = []
    k = 0
    while True:
        block = np.arange(k + 1, k + 1001)
        log_terms = transaction + betaln(gamma, delta + n + block) - betaln(gamma, delta) - block * np.log1p(discount_rate)
        terms.extend(np.exp(log_terms))
        k += block.size
        if terms[-1] / discount_rate < 1e-12 * fsum(terms):
            return fsum(terms)


@pytest.mark.parametrize("gamma", [0.657, 1.0, 2.5], ids=["donations", "gamma=1", "gamma>1"])
@pytest.mark.parametrize("discount_rate", [0.5, 0.1, 0.01])
def test_discounted_residual_matches_direct_sum(gamma, discount_rate):
    params = (1.2, 0.75, gamma, 2.8)
    histories = [(0, 0, 6), (1, 1, 6), (4, 6, 6), (6, 6, 6), (30, 90, 100)]
    x, t_x, n = (np.array(column, dtype=float) for column in zip(*histories))
    ours = fitted_bgbb(*params).discounted_expected_residual_purchases(x, t_x, n, discount_rate=discount_rate)
    for row, history in enumerate(histories):
        expected = discounted_transactions_by_direct_sum(params, *history, discount_rate)
        assert ours[row] == pytest.approx(expected, rel=1e-8), history


def test_discounted_residual_matches_expected_purchase_increments(donations, donations_model):
    # expected_purchases(k) - expected_purchases(k - 1) is P(transaction at n + k | history).
    x, t_x, n, _ = donations
    discount_rate = 0.1
    horizons = np.arange(0, 401)
    cumulative = donations_model.expected_purchases(horizons[:, None], x, t_x, n)
    per_opportunity = np.diff(cumulative, axis=0)
    discount = (1.0 + discount_rate) ** -horizons[1:, None]
    tail_bound = per_opportunity[-1] / discount_rate * discount[-1]
    expected = np.sum(per_opportunity * discount, axis=0)
    assert np.all(tail_bound < 1e-12 * expected)

    ours = donations_model.discounted_expected_residual_purchases(x, t_x, n, discount_rate=discount_rate)
    np.testing.assert_allclose(ours, expected, rtol=1e-8)


@pytest.mark.parametrize("gamma", [0.657, 1.0, 2.5], ids=["donations", "gamma=1", "gamma>1"])
def test_new_customer_expectation_is_mean_of_distribution(gamma):
    model = fitted_bgbb(1.2, 0.75, gamma, 2.8)
    for n in (1, 6, 40):
        mean = fsum(np.arange(n + 1) * model.probability_of_n_purchases(n, np.arange(n + 1)))
        assert model.expected_purchases_new_customer(n) == pytest.approx(mean, rel=1e-10), n


def test_distribution_matches_simulation(donations_model):
    rng = np.random.default_rng(20240613)
    size = 200_000
    params = tuple(donations_model.params_[name] for name in PARAMS)
    x, _, _ = simulate(rng, params, np.full(size, 6.0))
    observed = np.bincount(x.astype(int), minlength=7) / size
    predicted = donations_model.probability_of_n_purchases(6, np.arange(7))
    standard_error = np.sqrt(predicted * (1 - predicted) / size)
    assert np.all(np.abs(observed - predicted) < 4.5 * standard_error)


def test_probability_alive_matches_simulation(donations_model):
    # Among simulated customers with one history, the share still alive at opportunity 7.
    rng = np.random.default_rng(20240614)
    size = 300_000
    params = tuple(donations_model.params_[name] for name in PARAMS)
    x, t_x, alive_next = simulate(rng, params, np.full(size, 6.0))
    for history in [(0, 0), (1, 1), (1, 6), (3, 4), (6, 6)]:
        group = (x == history[0]) & (t_x == history[1])
        predicted = donations_model.probability_alive([history[0]], [history[1]], [6])[0]
        standard_error = np.sqrt(predicted * (1 - predicted) / group.sum())
        assert abs(alive_next[group].mean() - predicted) < 4.5 * standard_error, history


def test_fit_recovers_simulated_parameters():
    # Three cohorts with 4, 8 and 12 opportunities, so the rows differ in n as well as x and t_x.
    rng = np.random.default_rng(20240615)
    truth = {"alpha": 0.9, "beta": 1.6, "gamma": 0.4, "delta": 1.8}
    periods = np.repeat([4.0, 8.0, 12.0], 20_000)
    x, t_x, _ = simulate(rng, tuple(truth.values()), periods)
    model = BetaGeoBetaBinomialModel().fit(x, t_x, periods)
    assert model.fit_result_.converged
    for name, value in truth.items():
        assert abs(model.params_[name] - value) < 4 * model.standard_errors_[name], name


# --- invariants ---------------------------------------------------------------------------------


def test_weighted_rows_fit_like_expanded_rows(donations, donations_model):
    x, t_x, n, weights = donations
    counts = weights.astype(int)
    expanded = BetaGeoBetaBinomialModel().fit(np.repeat(x, counts), np.repeat(t_x, counts), np.repeat(n, counts))
    assert expanded.fit_result_.n_customers == donations_model.fit_result_.n_customers
    assert expanded.fit_result_.n_distinct == donations_model.fit_result_.n_distinct == 22
    assert expanded.log_likelihood_ == pytest.approx(donations_model.log_likelihood_, rel=1e-10)
    for name, value in donations_model.params_.items():
        assert expanded.params_[name] == pytest.approx(value, rel=1e-6), name


@pytest.mark.parametrize("n", [0, 1, 6, 30])
def test_distribution_sums_to_one(donations_model, n):
    probabilities = donations_model.probability_of_n_purchases(n, np.arange(n + 1))
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    assert fsum(probabilities) == pytest.approx(1.0, abs=1e-12)


def test_probabilities_and_expectations_are_well_behaved(donations, donations_model):
    x, t_x, n, _ = donations
    alive = donations_model.probability_alive(x, t_x, n)
    assert np.all((alive > 0) & (alive < 1))
    # Among customers with two transactions, the later the last one, the likelier they are alive.
    two = x == 2
    assert np.all(np.diff(alive[two][np.argsort(t_x[two])]) > 0)

    horizons = np.array([0, 1, 5, 10, 50, 500])
    expected = donations_model.expected_purchases(horizons[:, None], x, t_x, n)
    assert expected.shape == (horizons.size, x.size)
    assert np.all(expected[0] == 0)
    assert np.all(np.diff(expected, axis=0) > 0)
    assert np.all(np.diff(donations_model.expected_purchases_new_customer(horizons)) > 0)


def test_extreme_histories_give_finite_results():
    # Hundreds of transactions and opportunities, and a long silence.
    model = fitted_bgbb(1.2, 0.75, 0.66, 2.8)
    x, t_x, n = [450.0, 450.0, 0.0, 300.0], [500.0, 460.0, 0.0, 300.0], [500.0, 500.0, 1000.0, 900.0]
    alive = model.probability_alive(x, t_x, n)
    expected = model.expected_purchases(52, x, t_x, n)
    likelihood = model.log_likelihood(x, t_x, n)
    for values in (alive, expected, likelihood):
        assert np.all(np.isfinite(values))
    assert np.all((alive >= 0) & (alive <= 1))
    assert alive[0] > 0.99  # transacted at 450 of 500 opportunities, including the last
    assert alive[3] < 1e-6  # 300 transactions in a row, then 600 opportunities without one


def test_discounted_residual_decreases_with_discount_rate(donations, donations_model):
    x, t_x, n, _ = donations
    rates = [1e-4, 1e-3, 0.01, 0.1, 0.5, 1.0]
    values = np.array([donations_model.discounted_expected_residual_purchases(x, t_x, n, discount_rate=rate) for rate in rates])
    assert np.all(values > 0)
    assert np.all(np.diff(values, axis=0) < 0)


def test_discounted_residual_is_finite_for_long_histories():
    model = fitted_bgbb(1.2, 0.75, 0.66, 2.8)
    x, t_x, n = [450.0, 450.0, 0.0, 300.0], [500.0, 460.0, 0.0, 300.0], [500.0, 500.0, 1000.0, 900.0]
    for discount_rate in (1e-3, 0.1):
        values = model.discounted_expected_residual_purchases(x, t_x, n, discount_rate=discount_rate)
        assert np.all(np.isfinite(values)), discount_rate
        assert np.all(values >= 0), discount_rate
        # P(transaction at n + 1) / (1 + d) is the first term of the sum.
        first_term = model.expected_purchases(1, x, t_x, n) / (1.0 + discount_rate)
        assert np.all(values >= first_term), discount_rate
    # Transacted at 450 of 500 opportunities, including the last: about 0.9 per opportunity while alive.
    assert model.discounted_expected_residual_purchases([450.0], [500.0], [500.0], discount_rate=0.1)[0] > 5.0


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.probability_alive([1], [1], [2]),
        lambda m: m.expected_purchases(1, [1], [1], [2]),
        lambda m: m.expected_purchases_new_customer(1),
        lambda m: m.probability_of_n_purchases(2, 1),
        lambda m: m.log_likelihood([1], [1], [2]),
        lambda m: m.discounted_expected_residual_purchases([1], [1], [2], discount_rate=0.1),
        lambda m: m.to_dict(),
    ],
    ids=["probability_alive", "expected_purchases", "new_customer", "distribution", "log_likelihood", "discounted", "to_dict"],
)
def test_before_fit_raises(call):
    with pytest.raises(NotFittedError, match=r"BetaGeoBetaBinomialModel is not fitted yet; call fit\(frequency, recency, periods\) first"):
        call(BetaGeoBetaBinomialModel())


@pytest.mark.parametrize(
    ("frequency", "recency", "periods", "match"),
    [
        ([2, 1, 3], [1, 1, 3], [6, 6, 6], r"1 of 3 customers break the rule 'frequency <= recency' \(row positions 0\)"),
        ([1, 1, 3], [1, 7, 8], [6, 6, 6], r"2 of 3 customers break the rule 'recency <= periods' \(row positions 1, 2\)"),
        ([0, 1, 0], [0, 2, 1], [6, 6, 6], r"1 of 3 customers break the rule 'recency is 0 when frequency is 0' \(row positions 2\)"),
        ([1, 1, 2], [1, 1.5, 2], [6, 6, 6], r"1 of 3 customers break the rule 'recency is a whole number' \(row positions 1\)"),
        ([1, 1, 2], [1, 1, 2], [6, -6, 6], r"1 of 3 customers break the rule 'periods >= 0' \(row positions 1\)"),
        ([1, 1, 2], [1, 1, 2], [6, np.nan, 6], r"1 of 3 customers break the rule 'periods is finite' \(row positions 1\)"),
        ([1, 2], [1, 2], [6, 6, 6], "periods has 3 values but frequency has 2"),
    ],
    ids=["frequency>recency", "recency>periods", "recency-without-repeat", "fractional", "negative", "nan", "lengths"],
)
def test_rejects_broken_summaries(frequency, recency, periods, match):
    with pytest.raises(InputError, match=match):
        BetaGeoBetaBinomialModel().fit(frequency, recency, periods)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.expected_purchases(2.5, [1], [1], [2]), r"n_star must be whole numbers >= 0 \(transaction opportunities\); got \[2\.5\]"),
        (lambda m: m.expected_purchases_new_customer(-1), r"n must be whole numbers >= 0 .*got \[-1\.0\]"),
        (lambda m: m.probability_of_n_purchases(3, [2, 4]), r"x must be at most n .*got x = \[4\.0\] for n = \[3\.0\]"),
        (lambda m: m.discounted_expected_residual_purchases([1], [1], [2], discount_rate=0.0), r"discount_rate must be a finite number >= 1e-06 .*got 0\.0"),
        (lambda m: m.discounted_expected_residual_purchases([1], [1], [2], discount_rate=-0.1), r"discount_rate must be .*got -0\.1"),
        (lambda m: m.discounted_expected_residual_purchases([1], [1], [2], discount_rate=float("nan")), r"discount_rate must be .*got nan"),
        (lambda m: m.discounted_expected_residual_purchases([1], [1], [2], discount_rate=1e-7), r"discount_rate must be .*got 1e-07\. Pass the rate per opportunity"),
    ],
    ids=["fractional-horizon", "negative-n", "x>n", "zero-discount", "negative-discount", "nan-discount", "tiny-discount"],
)
def test_rejects_bad_arguments(call, match):
    with pytest.raises(ConfigError, match=match):
        call(fitted_bgbb(1.2, 0.75, 0.66, 2.8))


def test_to_dict_is_json_ready(donations_model):
    entry = json.loads(json.dumps(donations_model.to_dict(), allow_nan=False))
    assert entry["name"] == "bg_bb"
    assert entry["params"] == pytest.approx(donations_model.params_)
    assert entry["n_customers"] == 11104


def test_docstring_examples_run():
    failures, tried = doctest.testmod(bgbb)
    assert tried > 0
    assert failures == 0
