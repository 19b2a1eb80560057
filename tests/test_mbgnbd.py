"""Tests of the MBG/NBD model: an independent implementation, independent computations, invariants.

Data: the CDNOW customer summaries (weeks) and transaction file from the shared datasets folder.
Tests that need them skip when they are absent (``conftest.dataset``).
Independent implementation: lifetimes 0.11.3 (``ModifiedBetaGeoFitter``).
"""

from __future__ import annotations

import doctest
import json

import numpy as np
import pandas as pd
import pytest
from conftest import dataset
from scipy import integrate
from scipy.special import betaln, gammaln, logsumexp
from test_models import DAYS_PER_WEEK, cdnow_master_weekly, import_lifetimes

from revopt import diagnostics
from revopt.errors import ConfigError, InputError, NotFittedError
from revopt.models import BetaGeoModel, mbgnbd
from revopt.models.mbgnbd import ModifiedBetaGeoModel

PARAMS = ("r", "alpha", "a", "b")


# --- data and helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cdnow():
    """The 1/10 CDNOW sample summary (2,357 customers, weeks): frequency, recency, T."""
    table = pd.read_csv(dataset("cdnow", "cdnow_customers_summary.csv"))
    return tuple(table[column].to_numpy(dtype=float) for column in ("frequency", "recency", "T"))


@pytest.fixture(scope="module")
def cdnow_model(cdnow):
    return ModifiedBetaGeoModel().fit(*cdnow)


def fitted_mbgnbd(r, alpha, a, b) -> ModifiedBetaGeoModel:
    """An MBG/NBD model with given parameters, bypassing fit (to evaluate formulas at chosen points)."""
    model = ModifiedBetaGeoModel()
    model.params_ = {"r": r, "alpha": alpha, "a": a, "b": b}
    return model


def expected_by_quadrature(t, r, alpha, a, b, *, drop_at_start: bool):
    """E[X(t)] by quadrature over the drop-out probability p ~ Beta(a, b).

    Given p, and lambda integrated out against Gamma(r, alpha), a customer alive at the start buys
    ``(1 - (1 + p t / alpha)^-r) / p`` times in (0, t] on average. A new MBG/NBD customer is alive
    after the first purchase with probability 1 - p (``drop_at_start``). QUADPACK's algebraic
    weight (QAWS) takes the p^(a-1) (1-p)^(b-1) endpoint singularities exactly.
    """

    def given_p(p):
        alive = 1.0 - p if drop_at_start else 1.0
        return alive * (r * t / alpha if p == 0 else -np.expm1(-r * np.log1p(p * t / alpha)) / p)

    integral = integrate.quad(given_p, 0.0, 1.0, weight="alg", wvar=(a - 1.0, b - 1.0), limit=500, epsabs=0, epsrel=1e-12)[0]
    return integral * np.exp(-betaln(a, b))


def lifetimes_mbgnbd(lifetimes, params: dict):
    """A lifetimes ModifiedBetaGeoFitter that predicts with the given parameters, without fitting."""
    fitter = lifetimes.ModifiedBetaGeoFitter()
    fitter.params_ = pd.Series(params)
    return fitter


def simulated_counts(t, r, alpha, a, b, size, rng) -> np.ndarray:
    """Repeat purchases in (0, t] of ``size`` simulated new MBG/NBD customers.

    A customer drops out right after purchase K, where purchase 0 is the first purchase and
    P(K = k | p) = (1 - p)^k p. Until then purchases follow a Poisson process with rate lambda, so
    the count in (0, t] is min(Poisson(lambda t), K).
    """
    rate = rng.gamma(r, 1.0 / alpha, size)
    p = rng.beta(a, b, size)
    last_purchase = rng.geometric(p) - 1  # numpy counts trials up to the first success, from 1
    return np.minimum(rng.poisson(rate * t), last_purchase)


def probability_by_tail_sum(t, n, r, alpha, a, b):
    """P(X(t) = n) of the MBG/NBD with the tail S(n) = 1 - sum_{j<n} NB(j) summed upward as sum_{j>=n} NB(j).

    Every term is positive, so the sum keeps full precision where the head sum cancels.
    """
    z = t / (alpha + t)

    def log_nb(j):
        return gammaln(r + j) - gammaln(r) - gammaln(j + 1.0) + r * np.log(alpha / (alpha + t)) + j * np.log(z)

    stay = np.exp(betaln(a, b + n + 1) - betaln(a, b) + log_nb(n))
    if n == 0:
        return stay + a / (a + b)
    j = np.arange(n, n + 200_000, dtype=float)
    terms = log_nb(j)
    assert terms[-1] < terms.max() - 60  # the truncated tail is negligible
    return stay + np.exp(betaln(a + 1.0, b + n) - betaln(a, b) + logsumexp(terms))


def extrapolated_differences(function, point: np.ndarray) -> np.ndarray:
    """Gradient by Richardson extrapolation of central differences (error O(step**4)).

    Relative steps of 1e-3 keep the rounding noise of a log-likelihood of order 1e4 near 1e-9, even
    for a parameter as small as a = 0.004, where plain central differences need steps so small that
    the noise reaches 1e-4.
    """
    gradient = []
    for step in np.diag(1e-3 * point):
        size = step.max()
        single_step = (function(point + step) - function(point - step)) / (2 * size)
        double_step = (function(point + 2 * step) - function(point - 2 * step)) / (4 * size)
        gradient.append((4 * single_step - double_step) / 3)
    return np.array(gradient)


def lifetimes_model(lifetimes, frequency, recency, T):
    """lifetimes' MBG/NBD fit; its loaders break under pandas 3, so it gets plain numpy arrays."""
    return lifetimes.ModifiedBetaGeoFitter().fit(np.asarray(frequency), np.asarray(recency), np.asarray(T))


def assert_agrees_with_lifetimes(ours: ModifiedBetaGeoModel, theirs, x, t_x, T) -> None:
    their_params = [float(theirs.params_[name]) for name in PARAMS]
    their_ll = fitted_mbgnbd(*their_params).log_likelihood(x, t_x, T).sum()
    # Within 0.1 %, unless ours reaches a higher likelihood (then ours is the better optimum).
    if ours.log_likelihood_ <= their_ll + 1e-6:
        for name, value in zip(PARAMS, their_params):
            assert ours.params_[name] == pytest.approx(value, rel=1e-3), name
    assert ours.log_likelihood_ >= their_ll - 1e-6

    np.testing.assert_allclose(ours.probability_alive(x, t_x, T), theirs.conditional_probability_alive(x, t_x, T), rtol=1e-4)
    for weeks in (1.0, 13.0, 52.0):
        np.testing.assert_allclose(
            ours.expected_purchases(weeks, x, t_x, T),
            theirs.conditional_expected_number_of_purchases_up_to_time(weeks, x, t_x, T),
            rtol=1e-4,
        )
    horizons = np.array([1.0, 13.0, 52.0])
    np.testing.assert_allclose(
        ours.expected_purchases_new_customer(horizons), theirs.expected_number_of_purchases_up_to_time(horizons), rtol=1e-4
    )


# --- independent implementation -----------------------------------------------------------------


def test_agrees_with_lifetimes_on_cdnow_sample(cdnow, cdnow_model):
    theirs = lifetimes_model(import_lifetimes(), *cdnow)
    assert cdnow_model.fit_result_.converged
    assert_agrees_with_lifetimes(cdnow_model, theirs, *cdnow)


@pytest.mark.slow
def test_agrees_with_lifetimes_on_cdnow_master():
    x, t_x, T = cdnow_master_weekly()
    assert x.size == 23570
    theirs = lifetimes_model(import_lifetimes(), x, t_x, T)
    ours = ModifiedBetaGeoModel().fit(x, t_x, T)
    assert ours.fit_result_.converged
    assert_agrees_with_lifetimes(ours, theirs, x, t_x, T)


def test_formulas_agree_with_lifetimes_at_same_parameters(cdnow):
    # The fitted values above differ by the two optimisers' tolerances. At one parameter point the
    # two implementations of the same closed forms must agree to rounding.
    lifetimes = import_lifetimes()
    theirs = lifetimes_model(lifetimes, *cdnow)
    ours = fitted_mbgnbd(*(float(theirs.params_[name]) for name in PARAMS))
    x, t_x, T = cdnow
    np.testing.assert_allclose(ours.probability_alive(x, t_x, T), theirs.conditional_probability_alive(x, t_x, T), rtol=1e-12)
    np.testing.assert_allclose(
        ours.expected_purchases(26.0, x, t_x, T), theirs.conditional_expected_number_of_purchases_up_to_time(26.0, x, t_x, T), rtol=1e-9
    )
    their_ll = -theirs._negative_log_likelihood(np.log(theirs.params_.to_numpy()), x, t_x, T, np.ones_like(x), 0.0) * x.size
    assert ours.log_likelihood(x, t_x, T).sum() == pytest.approx(their_ll, rel=1e-12)


# --- independent computations -------------------------------------------------------------------


@pytest.mark.parametrize("params", [(0.52, 6.2, 0.89, 1.6), (2.0, 30.0, 3.5, 0.6), (0.8, 60.0, 0.004, 7.0)], ids=["cdnow", "a>1", "tiny-a"])
def test_gradient_matches_finite_differences(cdnow, params):
    likelihood = mbgnbd._Likelihood(*cdnow, np.ones_like(cdnow[0]))
    point = np.array(params)
    numeric = extrapolated_differences(lambda p: likelihood(p)[0], point)
    assert likelihood(point)[1] == pytest.approx(numeric, rel=1e-6, abs=1e-6)


def test_per_customer_log_likelihood_sums_to_fitted_value(cdnow, cdnow_model):
    assert cdnow_model.log_likelihood(*cdnow).sum() == pytest.approx(cdnow_model.log_likelihood_, rel=1e-12)


def test_probability_alive_matches_closed_form():
    # Batislam, Denizel and Filiztekin (2007): P(alive) = 1 / (1 + a / (b + x) ((alpha + T) / (alpha + t_x))^(r + x)).
    r, alpha, a, b = 0.52, 6.2, 0.89, 1.6
    x, t_x, T = np.array([0.0, 1.0, 3.0, 10.0]), np.array([0.0, 5.0, 30.0, 12.0]), np.full(4, 38.0)
    odds_dead = a / (b + x) * ((alpha + T) / (alpha + t_x)) ** (r + x)
    assert fitted_mbgnbd(r, alpha, a, b).probability_alive(x, t_x, T) == pytest.approx(1 / (1 + odds_dead), rel=1e-12)


@pytest.mark.parametrize(
    ("t", "params"),
    [
        (10.0, (0.52, 6.2, 0.89, 1.6)),
        (52.0, (2.0, 30.0, 3.5, 1.2)),
        (100.0, (0.24, 4.4, 1.0, 2.4)),
        (100.0, (0.24, 4.4, 1.0 + 3e-6, 2.4)),
        (10.0, (0.5, 4.0, 0.3, 0.1)),
        (365.0, (0.8, 60.0, 0.1, 3.0)),
    ],
    ids=["cdnow", "a>1", "a=1", "a-near-1", "a+b<1", "days"],
)
def test_expected_purchases_new_customer_matches_quadrature(t, params):
    model = fitted_mbgnbd(*params)
    assert model.expected_purchases_new_customer(t) == pytest.approx(expected_by_quadrature(t, *params, drop_at_start=True), rel=1e-8)


@pytest.mark.parametrize("frequency", [0, 1, 40, 300], ids=["x=0", "x=1", "x=40", "x=300"])
def test_conditional_expected_purchases_matches_quadrature(frequency):
    # A customer alive at T has p ~ Beta(a, b + x + 1) and lambda ~ Gamma(r + x, alpha + T), and
    # from then on drops out only after a purchase.
    r, alpha, a, b = 0.8, 20.0, 0.5, 2.0
    recency, T, t = (0.0 if frequency == 0 else 350.0), 400.0, 5000.0
    model = fitted_mbgnbd(r, alpha, a, b)
    alive = model.probability_alive([frequency], [recency], [T])[0]
    expected = alive * expected_by_quadrature(t, r + frequency, alpha + T, a, b + frequency + 1, drop_at_start=False)
    assert model.expected_purchases(t, [frequency], [recency], [T])[0] == pytest.approx(expected, rel=1e-8)


def test_probability_alive_matches_simulation():
    # Simulate the MBG/NBD story for one-time buyers observed for T = 20: alive means no drop-out
    # at the first purchase and, without further purchases, none after.
    rng = np.random.default_rng(20240611)
    r, alpha, a, b, T = 0.9, 8.0, 1.2, 2.5, 20.0
    size = 400_000
    rate = rng.gamma(r, 1.0 / alpha, size)
    p = rng.beta(a, b, size)
    alive_after_first = rng.random(size) >= p
    first_gap = rng.exponential(1.0 / rate)
    no_repeat = ~alive_after_first | (first_gap > T)  # the dead make no repeat purchase
    share_alive = np.mean(alive_after_first[no_repeat])
    predicted = fitted_mbgnbd(r, alpha, a, b).probability_alive([0.0], [0.0], [T])[0]
    standard_error = np.sqrt(predicted * (1 - predicted) / no_repeat.sum())
    assert abs(share_alive - predicted) < 4 * standard_error


# --- invariants ---------------------------------------------------------------------------------


def test_weighted_distinct_rows_fit_like_expanded_rows(cdnow, cdnow_model):
    table = pd.DataFrame(dict(zip(("x", "t_x", "T"), cdnow)))
    grouped = table.groupby(["x", "t_x", "T"], as_index=False).size()
    weighted = ModifiedBetaGeoModel().fit(grouped["x"], grouped["t_x"], grouped["T"], weights=grouped["size"])

    assert weighted.fit_result_.n_customers == cdnow_model.fit_result_.n_customers == 2357
    assert weighted.fit_result_.n_distinct == cdnow_model.fit_result_.n_distinct == len(grouped)
    assert weighted.log_likelihood_ == pytest.approx(cdnow_model.log_likelihood_, rel=1e-10)
    for name, value in cdnow_model.params_.items():
        assert weighted.params_[name] == pytest.approx(value, rel=1e-6), name


def test_rescaling_time_changes_only_alpha(cdnow, cdnow_model):
    x, t_x, T = cdnow
    in_days = ModifiedBetaGeoModel().fit(x, t_x * DAYS_PER_WEEK, T * DAYS_PER_WEEK)

    for name in ("r", "a", "b"):
        assert in_days.params_[name] == pytest.approx(cdnow_model.params_[name], rel=1e-6), name
    assert in_days.params_["alpha"] == pytest.approx(cdnow_model.params_["alpha"] * DAYS_PER_WEEK, rel=1e-6)
    # Each purchase contributes a rate density, which gains a factor 1/7 when time is in days.
    assert in_days.log_likelihood_ == pytest.approx(cdnow_model.log_likelihood_ - np.log(DAYS_PER_WEEK) * x.sum(), rel=1e-10)
    np.testing.assert_allclose(
        in_days.probability_alive(x, t_x * DAYS_PER_WEEK, T * DAYS_PER_WEEK), cdnow_model.probability_alive(x, t_x, T), rtol=1e-6
    )
    np.testing.assert_allclose(
        in_days.expected_purchases(52 * DAYS_PER_WEEK, x, t_x * DAYS_PER_WEEK, T * DAYS_PER_WEEK),
        cdnow_model.expected_purchases(52, x, t_x, T),
        rtol=1e-6,
    )


def test_probabilities_and_expectations_are_well_behaved(cdnow, cdnow_model):
    x, t_x, T = cdnow
    alive = cdnow_model.probability_alive(x, t_x, T)
    assert np.all((alive >= 0) & (alive <= 1))
    # Unlike the BG/NBD, a one-time buyer may have dropped out at the first purchase.
    assert np.all(alive[x == 0] < 1)

    horizons = np.array([0.0, 1.0, 4.0, 13.0, 52.0, 520.0])
    expected = cdnow_model.expected_purchases(horizons[:, None], x, t_x, T)
    assert expected.shape == (horizons.size, x.size)
    assert np.all(expected[0] == 0)
    assert np.all(np.diff(expected, axis=0) > 0)
    assert np.all(np.diff(cdnow_model.expected_purchases_new_customer(horizons)) > 0)


def test_fewer_purchases_than_bgnbd():
    # The extra drop-out chance at the first purchase can only remove purchases.
    bgnbd = BetaGeoModel()
    bgnbd.params_ = {"r": 0.52, "alpha": 6.2, "a": 0.89, "b": 1.6}
    mbgnbd_model = fitted_mbgnbd(0.52, 6.2, 0.89, 1.6)
    horizons = np.array([1.0, 13.0, 52.0, 520.0])
    assert np.all(mbgnbd_model.expected_purchases_new_customer(horizons) < bgnbd.expected_purchases_new_customer(horizons))


def test_heavy_buyers_give_finite_results():
    # x in the hundreds: the textbook forms overflow (A4 / A3 and the 2F1 of the forecast).
    model = fitted_mbgnbd(0.52, 6.2, 0.89, 1.6)
    x, t_x, T = [300.0, 800.0, 500.0, 0.0], [79.0, 75.0, 1.0, 0.0], [80.0, 80.0, 5000.0, 5000.0]
    alive = model.probability_alive(x, t_x, T)
    expected = model.expected_purchases(52.0, x, t_x, T)
    likelihood = model.log_likelihood(x, t_x, T)
    for values in (alive, expected, likelihood):
        assert np.all(np.isfinite(values))
    assert alive[2] == 0.0  # 500 purchases in the first week, none in the 5,000 weeks since
    assert expected[0] > 100  # about 300 / 80 weeks, for a customer almost surely alive


# --- distribution of the number of repeat purchases ----------------------------------------------


@pytest.mark.parametrize("t", [0.5, 39.0, 520.0], ids=["half-week", "39-weeks", "10-years"])
def test_count_distribution_sums_to_one(cdnow_model, t):
    probabilities = cdnow_model.probability_of_n_purchases(t, np.arange(100_000))
    assert np.all(probabilities >= 0)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("params", [(0.52, 6.2, 0.89, 1.6), (2.0, 30.0, 3.5, 1.2), (0.5, 4.0, 0.3, 0.1)], ids=["cdnow", "a>1", "a+b<1"])
def test_count_distribution_mean_is_expected_purchases(params):
    model = fitted_mbgnbd(*params)
    n = np.arange(200_000)
    for t in (1.0, 39.0, 104.0):
        probabilities = model.probability_of_n_purchases(t, n)
        assert probabilities[-1] < 1e-12  # the truncated tail adds nothing visible to the mean
        mean = np.sum(n * probabilities)
        assert mean == pytest.approx(model.expected_purchases_new_customer(t), rel=1e-8), t


@pytest.mark.parametrize("t", [1.0, 39.0], ids=["1-week", "39-weeks"])
def test_count_distribution_matches_simulation(t):
    rng = np.random.default_rng(20240612)
    params = (0.52, 6.2, 0.89, 1.6)
    size = 400_000
    counts = simulated_counts(t, *params, size, rng)
    predicted = fitted_mbgnbd(*params).probability_of_n_purchases(t, np.arange(8))
    for n, probability in enumerate(predicted):
        share = np.mean(counts == n)
        standard_error = np.sqrt(probability * (1 - probability) / size)
        assert abs(share - probability) < 4 * standard_error, n
    predicted_above = 1 - predicted.sum()
    standard_error = np.sqrt(predicted_above * (1 - predicted_above) / size)
    assert abs(np.mean(counts >= 8) - predicted_above) < 4 * standard_error


def test_count_distribution_matches_lifetimes(cdnow_model):
    # lifetimes 0.11.3 uses the same formula but forms the tail as 1 - sum_{j<n} NB(j). For n < 12
    # at these t, that sum still keeps enough digits.
    theirs = lifetimes_mbgnbd(import_lifetimes(), cdnow_model.params_)
    for t in (1.0, 39.0, 78.0):
        for n in range(12):
            expected = theirs.probability_of_n_purchases_up_to_time(t, n)
            assert cdnow_model.probability_of_n_purchases(t, n) == pytest.approx(expected, rel=1e-9), (t, n)


@pytest.mark.parametrize(
    ("t", "n"),
    [(1.0, 0), (1.0, 20), (1.0, 60), (39.0, 150), (5000.0, 500), (5000.0, 3000)],
    ids=["short-0", "short-20", "short-60", "39-weeks-150", "long-500", "long-3000"],
)
def test_count_distribution_is_accurate_for_large_n(t, n):
    # A 1 - sum tail loses all digits at t = 1, n = 20, and Gamma(r + n) overflows past n ~ 170.
    params = (0.8, 4.4, 0.79, 2.4)
    ours = fitted_mbgnbd(*params).probability_of_n_purchases(t, n)
    assert np.isfinite(ours)
    assert ours > 0
    assert ours == pytest.approx(probability_by_tail_sum(t, n, *params), rel=1e-9)


def test_count_distribution_at_time_zero_and_broadcasting(cdnow_model):
    # P(X(0) = 0) is b / (a + b) + a / (a + b), each term rounded on its own.
    at_zero = cdnow_model.probability_of_n_purchases(0.0, [0, 1, 5])
    assert at_zero[0] == pytest.approx(1.0, abs=1e-15)
    assert at_zero[1:].tolist() == [0.0, 0.0]
    grid = cdnow_model.probability_of_n_purchases(np.array([1.0, 39.0])[:, None], np.arange(3))
    assert grid.shape == (2, 3)
    assert grid[1, 2] == cdnow_model.probability_of_n_purchases(39.0, 2)


def test_no_repeat_purchase_more_likely_than_bgnbd():
    # The drop-out at the first purchase adds a / (a + b) to P(X(t) = 0) of a BG/NBD with b + 1.
    params = {"r": 0.52, "alpha": 6.2, "a": 0.89, "b": 1.6}
    bgnbd = BetaGeoModel()
    bgnbd.params_ = params
    zero = fitted_mbgnbd(**params).probability_of_n_purchases([1.0, 39.0, 520.0], 0)
    assert np.all(zero > bgnbd.probability_of_n_purchases([1.0, 39.0, 520.0], 0))
    assert np.all(zero > params["a"] / (params["a"] + params["b"]))


@pytest.mark.parametrize(("t", "n"), [(1.0, 1.5), (1.0, -1), (-1.0, 1), (1.0, np.nan)], ids=["fractional", "negative-n", "negative-t", "nan"])
def test_count_distribution_rejects_bad_arguments(cdnow_model, t, n):
    with pytest.raises(ConfigError, match=r"(n must be a whole number in|t must be in) \[0, inf\)"):
        cdnow_model.probability_of_n_purchases(t, n)


def test_repeat_purchase_histogram_on_cdnow(cdnow, cdnow_model):
    x, _, T = cdnow
    table = diagnostics.repeat_purchase_histogram(cdnow_model, x, T)

    theirs = lifetimes_mbgnbd(import_lifetimes(), cdnow_model.params_)
    expected = np.array([sum(theirs.probability_of_n_purchases_up_to_time(t, n) for t in T) for n in range(7)])

    assert table["repeat_purchases"].tolist() == ["0", "1", "2", "3", "4", "5", "6", "7+"]
    assert table["actual"].tolist() == [1411, 439, 214, 100, 62, 38, 29, 64]
    np.testing.assert_allclose(table["predicted"].iloc[:7], expected, rtol=1e-9)
    assert table["predicted"].iloc[7] == pytest.approx(x.size - expected.sum(), rel=1e-9)
    assert table["predicted"].sum() == pytest.approx(x.size, rel=1e-12)


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.probability_alive([1], [1.0], [2.0]),
        lambda m: m.expected_purchases(1.0, [1], [1.0], [2.0]),
        lambda m: m.expected_purchases_new_customer(1.0),
        lambda m: m.probability_of_n_purchases(1.0, 2),
        lambda m: m.log_likelihood([1], [1.0], [2.0]),
        lambda m: m.to_dict(),
    ],
    ids=["probability_alive", "expected_purchases", "new_customer", "n_purchases", "log_likelihood", "to_dict"],
)
def test_before_fit_raises(call):
    with pytest.raises(NotFittedError, match=r"ModifiedBetaGeoModel is not fitted yet; call fit\(frequency, recency, T\) first"):
        call(ModifiedBetaGeoModel())


@pytest.mark.parametrize(
    ("frequency", "recency", "T", "match"),
    [
        ([1, 2, 0, 3, 1], [5, 9, 0, 2, 7], [8, 8, 8, 1, 7], r"2 of 5 customers break the rule 'recency <= T' \(row positions 1, 3\)"),
        ([0, 1, 0], [0, 2, 1.5], [5, 5, 5], r"1 of 3 customers break the rule 'recency is 0 when frequency is 0' \(row positions 2\)"),
        ([1.5, 1, 2], [1, 1, 1], [5, 5, 5], r"1 of 3 customers break the rule 'frequency is a whole number' \(row positions 0\)"),
        ([1, 2], [1, 1], [5, 5, 5], "T has 3 values but frequency has 2"),
    ],
    ids=["recency>T", "recency-without-repeat", "fractional", "lengths"],
)
def test_rejects_broken_summaries(frequency, recency, T, match):
    with pytest.raises(InputError, match=match):
        ModifiedBetaGeoModel().fit(frequency, recency, T)


def test_negative_horizon_raises():
    with pytest.raises(ConfigError, match=r"t must be in \[0, inf\); got \[-1\.0\]"):
        fitted_mbgnbd(0.52, 6.2, 0.89, 1.6).expected_purchases(-1.0, [1], [1.0], [2.0])


def test_to_dict_is_json_ready(cdnow_model):
    entry = json.loads(json.dumps(cdnow_model.to_dict(), allow_nan=False))
    assert entry["name"] == "mbg_nbd"
    assert entry["params"] == pytest.approx(cdnow_model.params_)
    assert set(entry["standard_errors"]) == set(PARAMS)


def test_docstring_examples_run():
    failures, tried = doctest.testmod(mbgnbd)
    assert tried > 0
    assert failures == 0
