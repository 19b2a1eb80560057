"""Tests of the CLV models in three layers: published estimates, independent computations, invariants.

Data: the CDNOW customer summaries (weeks) and transaction file from the shared datasets folder.
Tests that need them skip when they are absent (``conftest.dataset``).
Independent implementation: lifetimes 0.11.3 (``BetaGeoFitter``, ``GammaGammaFitter``).
"""

from __future__ import annotations

import doctest
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import dataset
from scipy import integrate
from scipy.special import betaln

from revopt.errors import (
    ConfigError,
    ConvergenceWarning,
    DataQualityWarning,
    FitError,
    InputError,
    NotFittedError,
)
from revopt.models import BetaGeoModel, GammaGammaModel, compress, customer_lifetime_value
from revopt.models import clv as clv_module
from revopt.models.mbgnbd import ModifiedBetaGeoModel
from revopt.models import _fitting, bgnbd, clv, gamma_gamma

DAYS_PER_WEEK = 7.0


# --- data ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cdnow():
    """The 1/10 CDNOW sample summary (2,357 customers, weeks): frequency, recency, T."""
    table = pd.read_csv(dataset("cdnow", "cdnow_customers_summary.csv"))
    return tuple(table[column].to_numpy(dtype=float) for column in ("frequency", "recency", "T"))


@pytest.fixture(scope="module")
def cdnow_spend():
    """Repeat buyers of the CDNOW sample: frequency x and mean spend zbar (x > 0 only)."""
    table = pd.read_csv(dataset("cdnow", "cdnow_customers_summary_with_transactions.csv"))
    buyers = table[table["x"] > 0]
    return buyers["x"].to_numpy(dtype=float), buyers["zbar"].to_numpy(dtype=float)


@pytest.fixture(scope="module")
def cdnow_model(cdnow):
    return BetaGeoModel().fit(*cdnow)


@pytest.fixture(scope="module")
def cdnow_spend_model(cdnow_spend):
    return GammaGammaModel().fit(*cdnow_spend)


def cdnow_master_weekly() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weekly (frequency, recency, T) of all 23,570 CDNOW customers, calibration to 1997-09-30."""
    orders = pd.read_csv(dataset("cdnow", "CDNOW_master.txt"), sep=r"\s+", dtype={"customer_id": str, "date": str})
    orders["date"] = pd.to_datetime(orders["date"], format="%Y%m%d")
    calibration_end = pd.Timestamp("1997-09-30")
    days = orders.loc[orders["date"] <= calibration_end, ["customer_id", "date"]].drop_duplicates()
    by_customer = days.groupby("customer_id")["date"]
    first, last, purchase_days = by_customer.min(), by_customer.max(), by_customer.size()
    weeks = pd.Timedelta(days=DAYS_PER_WEEK)
    return (
        (purchase_days - 1).to_numpy(dtype=float),
        ((last - first) / weeks).to_numpy(dtype=float),
        ((calibration_end - first) / weeks).to_numpy(dtype=float),
    )


def import_lifetimes():
    """lifetimes sets pandas options and warning filters at import; keep both out of the session."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import lifetimes
    return lifetimes


def expected_by_quadrature(t, r, alpha, a, b):
    """E[X(t)] of the BG/NBD by quadrature over the dropout probability p ~ Beta(a, b).

    Integrating eq. 7 of Fader, Hardie and Lee (2005) over lambda gives
    E[X(t) | p] = (1 - (1 + p t / alpha)^-r) / p; QUADPACK's algebraic weight (QAWS) takes the
    p^(a-1) (1-p)^(b-1) endpoint singularities exactly.
    """

    def given_p(p):
        return r * t / alpha if p == 0 else -np.expm1(-r * np.log1p(p * t / alpha)) / p

    integral = integrate.quad(given_p, 0.0, 1.0, weight="alg", wvar=(a - 1.0, b - 1.0), limit=500, epsabs=0, epsrel=1e-12)[0]
    return integral * np.exp(-betaln(a, b))


def central_differences(function, point: np.ndarray) -> np.ndarray:
    """Gradient by central differences with relative steps (error O(step**2), not O(step))."""
    steps = 1e-5 * point
    return np.array([(function(point + step) - function(point - step)) / (2 * step[i]) for i, step in enumerate(np.diag(steps))])


def fitted_bgnbd(r, alpha, a, b) -> BetaGeoModel:
    """A BG/NBD model with given parameters, bypassing fit (to evaluate formulas at chosen points)."""
    model = BetaGeoModel()
    model.params_ = {"r": r, "alpha": alpha, "a": a, "b": b}
    return model


# --- published estimates ------------------------------------------------------------------------


def test_bgnbd_reproduces_published_cdnow_estimates(cdnow_model):
    # Fader, Hardie and Lee (2005), Marketing Science 24(2), on this sample, in weeks:
    # r = 0.243, alpha = 4.414, a = 0.793, b = 2.426, LL = -9582.4.
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for name, value in published.items():
        assert cdnow_model.params_[name] == pytest.approx(value, rel=5e-3), name
    assert cdnow_model.log_likelihood_ == pytest.approx(-9582.4, abs=0.05)  # published to one decimal
    assert cdnow_model.fit_result_.converged
    assert all(0 < se < np.inf for se in cdnow_model.standard_errors_.values())


def test_gamma_gamma_reproduces_published_cdnow_estimates(cdnow_spend_model):
    # Fader and Hardie (2013), "The Gamma-Gamma model of monetary value", on the 946 repeat buyers:
    # p = 6.25, q = 3.74, gamma = 15.44.
    published = {"p": 6.25, "q": 3.74, "gamma": 15.44}
    for name, value in published.items():
        assert cdnow_spend_model.params_[name] == pytest.approx(value, rel=5e-3), name
    assert cdnow_spend_model.fit_result_.n_customers == 946
    assert all(0 < se < np.inf for se in cdnow_spend_model.standard_errors_.values())


# --- independent computations -------------------------------------------------------------------


@pytest.mark.parametrize("params", [(0.24, 4.4, 0.79, 2.4), (2.0, 30.0, 3.5, 0.6), (0.8, 60.0, 0.004, 7.0)], ids=["cdnow", "a>1", "tiny-a"])
def test_bgnbd_gradient_matches_finite_differences(cdnow, params):
    likelihood = bgnbd._Likelihood(*cdnow, np.ones_like(cdnow[0]))
    point = np.array(params)
    numeric = central_differences(lambda p: likelihood(p)[0], point)
    # abs: a difference quotient of a log-likelihood of order 1e4 carries about 1e-7 of rounding noise.
    assert likelihood(point)[1] == pytest.approx(numeric, rel=1e-6, abs=1e-5)


def test_gamma_gamma_gradient_matches_finite_differences(cdnow_spend):
    x, zbar = cdnow_spend
    point = np.array([5.0, 3.0, 20.0])

    def total(p):
        return gamma_gamma._log_likelihood_terms(p, x, zbar)[0].sum()

    numeric = central_differences(total, point)
    assert gamma_gamma._log_likelihood_terms(point, x, zbar)[1].sum(axis=1) == pytest.approx(numeric, rel=1e-6)


def test_per_customer_log_likelihood_sums_to_fitted_value(cdnow_model, cdnow, cdnow_spend_model, cdnow_spend):
    assert cdnow_model.log_likelihood(*cdnow).sum() == pytest.approx(cdnow_model.log_likelihood_, rel=1e-12)
    assert cdnow_spend_model.log_likelihood(*cdnow_spend).sum() == pytest.approx(cdnow_spend_model.log_likelihood_, rel=1e-12)


@pytest.mark.parametrize(
    ("t", "params"),
    [
        (10.0, (0.24, 4.4, 0.79, 2.4)),
        (52.0, (2.0, 30.0, 3.5, 1.2)),
        (100.0, (0.24, 4.4, 1.0, 2.4)),
        (100.0, (0.24, 4.4, 1.0 + 3e-6, 2.4)),
        (10.0, (0.5, 4.0, 0.3, 0.7)),
        (10.0, (0.5, 4.0, 0.3, 0.1)),
        (365.0, (0.8, 60.0, 0.1, 3.0)),
    ],
    ids=["cdnow", "a>1", "a=1", "a-near-1", "a+b=1", "a+b<1", "days"],
)
def test_expected_purchases_new_customer_matches_quadrature(t, params):
    model = fitted_bgnbd(*params)
    assert model.expected_purchases_new_customer(t) == pytest.approx(expected_by_quadrature(t, *params), rel=1e-8)


@pytest.mark.parametrize("frequency", [1, 40, 300], ids=["x=1", "x=40", "x=300"])
def test_conditional_expected_purchases_matches_quadrature_for_heavy_buyers(frequency):
    # Eq. 10 is P(alive) times eq. 9 at the posterior (r + x, alpha + T, a, b + x). The textbook form
    # of eq. 9 overflows scipy's hyp2f1 for x in the hundreds; the result must stay finite and right.
    r, alpha, a, b = 0.8, 20.0, 0.5, 2.0
    recency, T, t = 350.0, 400.0, 5000.0
    model = fitted_bgnbd(r, alpha, a, b)
    alive = model.probability_alive([frequency], [recency], [T])[0]
    expected = alive * expected_by_quadrature(t, r + frequency, alpha + T, a, b + frequency)
    assert model.expected_purchases(t, [frequency], [recency], [T])[0] == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("model_class", [BetaGeoModel, ModifiedBetaGeoModel], ids=["bg_nbd", "mbg_nbd"])
def test_expected_purchases_by_pair_match_rows(cdnow, model_class):
    # A scalar t or a column of t is evaluated once per distinct (x, T). A t with one value per
    # customer takes the row-by-row path, so the two must agree on every CDNOW customer.
    model = model_class().fit(*cdnow)
    per_row = np.full(cdnow[0].size, 39.0)
    assert model.expected_purchases(39.0, *cdnow) == pytest.approx(model.expected_purchases(per_row, *cdnow), rel=1e-12)
    steps = np.array([4.0, 13.0, 52.0])
    by_pair = model.expected_purchases(steps[:, None], *cdnow)
    assert by_pair.shape == (3, cdnow[0].size)
    for step, row in zip(steps, by_pair):
        assert row == pytest.approx(model.expected_purchases(np.full(cdnow[0].size, step), *cdnow), rel=1e-12)


def test_probability_alive_matches_closed_form():
    # Fader, Hardie and Lee (2008), "Computing P(alive) using the BG/NBD model".
    r, alpha, a, b = 0.24, 4.4, 0.79, 2.4
    x, t_x, T = np.array([0.0, 1.0, 3.0, 10.0]), np.array([0.0, 5.0, 30.0, 12.0]), np.array([38.0, 38.0, 38.0, 38.0])
    odds_dead = np.where(x > 0, a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x), 0.0)
    assert fitted_bgnbd(r, alpha, a, b).probability_alive(x, t_x, T) == pytest.approx(1 / (1 + odds_dead), rel=1e-12)


def test_gamma_gamma_zero_frequency_gets_population_mean(cdnow_spend_model):
    p, q, gamma = (cdnow_spend_model.params_[name] for name in ("p", "q", "gamma"))
    value = cdnow_spend_model.expected_average_value([0, 0], [0.0, np.nan])
    assert value == pytest.approx([p * gamma / (q - 1)] * 2, rel=1e-12)


@pytest.mark.slow
def test_agrees_with_lifetimes_on_cdnow_master():
    lifetimes = import_lifetimes()
    x, t_x, T = cdnow_master_weekly()
    assert x.size == 23570
    theirs = lifetimes.BetaGeoFitter().fit(x, t_x, T)
    ours = BetaGeoModel().fit(x, t_x, T)

    for name in ("r", "alpha", "a", "b"):
        assert ours.params_[name] == pytest.approx(theirs.params_[name], rel=1e-3), name
    their_ll = fitted_bgnbd(*(theirs.params_[name] for name in ("r", "alpha", "a", "b"))).log_likelihood(x, t_x, T).sum()
    assert ours.log_likelihood_ >= their_ll - 1e-6
    np.testing.assert_allclose(ours.probability_alive(x, t_x, T), theirs.conditional_probability_alive(x, t_x, T), rtol=1e-3)
    for weeks in (1.0, 13.0, 52.0):
        np.testing.assert_allclose(
            ours.expected_purchases(weeks, x, t_x, T),
            theirs.conditional_expected_number_of_purchases_up_to_time(weeks, x, t_x, T),
            rtol=1e-3,
        )
    np.testing.assert_allclose(
        ours.expected_purchases_new_customer(np.array([1.0, 52.0])),
        theirs.expected_number_of_purchases_up_to_time(np.array([1.0, 52.0])),
        rtol=1e-3,
    )


def test_gamma_gamma_agrees_with_lifetimes(cdnow_spend, cdnow_spend_model):
    lifetimes = import_lifetimes()
    x, zbar = cdnow_spend
    theirs = lifetimes.GammaGammaFitter().fit(x, zbar)
    for name, their_name in (("p", "p"), ("q", "q"), ("gamma", "v")):
        assert cdnow_spend_model.params_[name] == pytest.approx(theirs.params_[their_name], rel=1e-3), name
    np.testing.assert_allclose(
        cdnow_spend_model.expected_average_value(x, zbar), theirs.conditional_expected_average_profit(x, zbar), rtol=1e-3
    )


# --- invariants ---------------------------------------------------------------------------------


def test_weighted_distinct_rows_fit_like_expanded_rows(cdnow, cdnow_model):
    table = pd.DataFrame(dict(zip(("x", "t_x", "T"), cdnow)))
    grouped = table.groupby(["x", "t_x", "T"], as_index=False).size()
    weighted = BetaGeoModel().fit(grouped["x"], grouped["t_x"], grouped["T"], weights=grouped["size"])

    assert weighted.fit_result_.n_customers == cdnow_model.fit_result_.n_customers == 2357
    assert weighted.fit_result_.n_distinct == cdnow_model.fit_result_.n_distinct == len(grouped)
    assert weighted.log_likelihood_ == pytest.approx(cdnow_model.log_likelihood_, rel=1e-10)
    for name, value in cdnow_model.params_.items():
        assert weighted.params_[name] == pytest.approx(value, rel=1e-6), name


def test_gamma_gamma_weighted_rows_fit_like_expanded_rows(cdnow_spend, cdnow_spend_model):
    x, zbar = cdnow_spend
    doubled = GammaGammaModel().fit(np.tile(x, 2), np.tile(zbar, 2))
    weighted = GammaGammaModel().fit(x, zbar, weights=np.full(x.size, 2.0))
    assert weighted.log_likelihood_ == pytest.approx(doubled.log_likelihood_, rel=1e-10)
    assert weighted.log_likelihood_ == pytest.approx(2 * cdnow_spend_model.log_likelihood_, rel=1e-10)
    for name, value in doubled.params_.items():
        assert weighted.params_[name] == pytest.approx(value, rel=1e-6), name


def test_rescaling_time_changes_only_alpha(cdnow, cdnow_model):
    x, t_x, T = cdnow
    in_days = BetaGeoModel().fit(x, t_x * DAYS_PER_WEEK, T * DAYS_PER_WEEK)

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
    assert np.all(alive[x == 0] == 1)  # no repeat purchase, no chance to drop out yet

    horizons = np.array([0.0, 1.0, 4.0, 13.0, 52.0, 520.0])
    expected = cdnow_model.expected_purchases(horizons[:, None], x, t_x, T)
    assert expected.shape == (horizons.size, x.size)
    assert np.all(expected[0] == 0)
    assert np.all(np.diff(expected, axis=0) > 0)
    assert np.all(np.diff(cdnow_model.expected_purchases_new_customer(horizons)) > 0)


def test_compress_collapses_identical_rows():
    (x, t_x), counts = compress([1, 0, 1, 0, 2], [3.5, 0.0, 3.5, 0.0, 1.0], weights=[1.0, 2.0, 0.5, 1.0, 4.0])
    assert x.tolist() == [0.0, 1.0, 2.0]
    assert t_x.tolist() == [0.0, 3.5, 1.0]
    assert counts.tolist() == [3.0, 1.5, 4.0]


# --- customer lifetime value --------------------------------------------------------------------


def test_clv_is_zero_where_nothing_is_expected(cdnow_model):
    # A customer with 200 purchases in the first week and none in the 1,000 weeks since is gone:
    # P(alive) underflows to exactly 0, so CLV is 0 even with an undefined spend.
    x, t_x, T = [200.0, 2.0], [1.0, 30.0], [1000.0, 38.0]
    assert cdnow_model.expected_purchases(52.0, x, t_x, T)[0] == 0.0
    value = customer_lifetime_value(
        cdnow_model, [np.nan, 20.0], x, t_x, T, horizon=52, discount_rate=0.1, time_unit="week"
    )
    assert value[0] == 0.0
    assert value[1] > 0
    no_margin = customer_lifetime_value(cdnow_model, 20.0, x, t_x, T, horizon=52, discount_rate=0.1, margin=0.0, time_unit="week")
    assert np.all(no_margin == 0.0)


def test_clv_sums_discounted_steps_by_hand(cdnow_model):
    # 2.5 weeks at 10 % a year: steps end at weeks 1, 2 and 2.5, each discounted from its end.
    x, t_x, T = [3.0], [20.0], [38.0]
    cumulative = cdnow_model.expected_purchases(np.array([1.0, 2.0, 2.5]), x * 3, t_x * 3, T * 3)
    increments = np.diff(cumulative, prepend=0.0)
    discount = 1.1 ** -(np.array([1.0, 2.0, 2.5]) * DAYS_PER_WEEK / 365.25)
    expected = 0.4 * 25.0 * np.sum(increments * discount)
    value = customer_lifetime_value(cdnow_model, 25.0, x, t_x, T, horizon=2.5, discount_rate=0.1, margin=0.4, time_unit="week")
    assert value[0] == pytest.approx(expected, rel=1e-12)


def test_clv_without_discounting_is_spend_times_expected_purchases(cdnow, cdnow_model):
    x, t_x, T = cdnow
    value = customer_lifetime_value(cdnow_model, 30.0, x, t_x, T, horizon=52, discount_rate=0.0, margin=0.5, time_unit="week")
    np.testing.assert_allclose(value, 15.0 * cdnow_model.expected_purchases(52, x, t_x, T), rtol=1e-10)
    discounted = customer_lifetime_value(cdnow_model, 30.0, x, t_x, T, horizon=52, discount_rate=0.2, margin=0.5, time_unit="week")
    assert np.all(discounted < value)


def test_clv_in_blocks_of_histories_equals_one_block(cdnow, cdnow_model, monkeypatch):
    x, t_x, T = cdnow
    whole = customer_lifetime_value(cdnow_model, 30.0, x, t_x, T, horizon=52, discount_rate=0.1, time_unit="week")
    monkeypatch.setattr(clv_module, "HISTORIES_PER_BLOCK", 97)  # many blocks, the last one partial
    blocks = customer_lifetime_value(cdnow_model, 30.0, x, t_x, T, horizon=52, discount_rate=0.1, time_unit="week")
    np.testing.assert_allclose(blocks, whole, rtol=1e-12, atol=0.0)


def test_clv_undiscounted_ignores_time_unit(cdnow, cdnow_model):
    x, t_x, T = cdnow
    in_days = BetaGeoModel().fit(x, t_x * DAYS_PER_WEEK, T * DAYS_PER_WEEK)
    weekly = customer_lifetime_value(cdnow_model, 30.0, x, t_x, T, horizon=26, discount_rate=0.0, time_unit="week")
    daily = customer_lifetime_value(
        in_days, 30.0, x, t_x * DAYS_PER_WEEK, T * DAYS_PER_WEEK, horizon=26 * DAYS_PER_WEEK, discount_rate=0.0, time_unit="day"
    )
    np.testing.assert_allclose(daily, weekly, rtol=1e-6)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"horizon": 0.0}, r"horizon must be in \(0, inf\]"),
        ({"discount_rate": -0.1}, r"discount_rate must be in \[0, inf\]"),
        ({"margin": 1.5}, r"margin must be in \[0, 1\]"),
        ({"time_unit": "fortnight"}, "time unit 'fortnight' is not supported; use one of: day, week, month"),
    ],
    ids=["horizon", "discount", "margin", "unit"],
)
def test_clv_rejects_bad_options(cdnow_model, options, match):
    settings = {"horizon": 52.0, "discount_rate": 0.1, "margin": 1.0, "time_unit": "week"} | options
    with pytest.raises(ConfigError, match=match):
        customer_lifetime_value(cdnow_model, 10.0, [1.0], [5.0], [38.0], **settings)


def test_clv_rejects_negative_spend(cdnow_model):
    with pytest.raises(InputError, match=r"1 of 2 customers break the rule 'expected_spend >= 0 and finite, or NaN where undefined' \(row positions 1\)"):
        customer_lifetime_value(cdnow_model, [5.0, -1.0], [1.0, 1.0], [5.0, 5.0], [38.0, 38.0], horizon=52, discount_rate=0.1, time_unit="week")


# --- errors and warnings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.probability_alive([1], [1.0], [2.0]),
        lambda m: m.expected_purchases(1.0, [1], [1.0], [2.0]),
        lambda m: m.expected_purchases_new_customer(1.0),
        lambda m: m.log_likelihood([1], [1.0], [2.0]),
        lambda m: m.to_dict(),
    ],
    ids=["probability_alive", "expected_purchases", "new_customer", "log_likelihood", "to_dict"],
)
def test_bgnbd_before_fit_raises(call):
    with pytest.raises(NotFittedError, match=r"BetaGeoModel is not fitted yet; call fit\(frequency, recency, T\) first"):
        call(BetaGeoModel())


def test_gamma_gamma_before_fit_raises():
    with pytest.raises(NotFittedError, match="GammaGammaModel is not fitted yet"):
        GammaGammaModel().expected_average_value([1], [10.0])


@pytest.mark.parametrize(
    ("frequency", "recency", "T", "match"),
    [
        ([1, 2, 0, 3, 1], [5, 9, 0, 2, 7], [8, 8, 8, 1, 7], r"2 of 5 customers break the rule 'recency <= T' \(row positions 1, 3\)"),
        ([0, 1, 0], [0, 2, 1.5], [5, 5, 5], r"1 of 3 customers break the rule 'recency is 0 when frequency is 0' \(row positions 2\)"),
        ([1.5, 1, 2], [1, 1, 1], [5, 5, 5], r"1 of 3 customers break the rule 'frequency is a whole number' \(row positions 0\)"),
        ([1, -1, 2], [1, 0, 1], [5, 5, 5], r"1 of 3 customers break the rule 'frequency >= 0' \(row positions 1\)"),
        ([1, 1, 2], [1, 1, np.nan], [5, 5, 5], r"1 of 3 customers break the rule 'recency is finite' \(row positions 2\)"),
        ([1, 2], [1, 1], [5, 5, 5], "T has 3 values but frequency has 2"),
        ([], [], [], "no customers"),
    ],
    ids=["recency>T", "recency-without-repeat", "fractional", "negative", "nan", "lengths", "empty"],
)
def test_bgnbd_rejects_broken_summaries(frequency, recency, T, match):
    with pytest.raises(InputError, match=match):
        BetaGeoModel().fit(frequency, recency, T)


def test_input_errors_show_only_a_few_rows():
    frequency = np.zeros(50)
    recency = np.ones(50)
    with pytest.raises(InputError, match=r"50 of 50 customers .* \(row positions 0, 1, 2, 3, 4, \.\.\.\)"):
        BetaGeoModel().fit(frequency, recency, np.full(50, 2.0))


def test_weights_must_be_positive(cdnow):
    weights = np.ones_like(cdnow[0])
    weights[[3, 7]] = [0.0, -1.0]
    with pytest.raises(InputError, match=r"2 of 2357 customers break the rule 'weights > 0' \(row positions 3, 7\)"):
        BetaGeoModel().fit(*cdnow, weights=weights)


def test_gamma_gamma_rejects_non_buyers():
    with pytest.raises(InputError, match=r"2 of 5 customers break the rule 'frequency > 0' \(row positions 0, 3\)"):
        GammaGammaModel().fit([0, 1, 2, 0, 3], [0.0, 10.0, 12.0, 0.0, 9.0])
    with pytest.raises(InputError, match=r"1 of 3 customers break the rule 'monetary_value > 0 where frequency > 0' \(row positions 1\)"):
        GammaGammaModel().fit([1, 1, 2], [10.0, 0.0, 12.0])


def test_iteration_limit_warns_with_solver_status_and_remedy(cdnow):
    with pytest.warns(ConvergenceWarning, match=r"solver BFGS stopped without converging after 2 iterations \(status 1: .*raise max_iterations \(now 2\)"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataQualityWarning)  # the Hessian far from the optimum
            model = BetaGeoModel(max_iterations=2).fit(*cdnow)
    assert not model.fit_result_.converged


def test_singular_information_gives_nan_standard_errors():
    # Without repeat purchases the dropout parameters a and b do not enter the likelihood at all.
    T = np.linspace(10.0, 40.0, 200)
    with pytest.warns(DataQualityWarning, match="standard errors are set to NaN"):
        model = BetaGeoModel().fit(np.zeros(200), np.zeros(200), T)
    assert all(np.isnan(se) for se in model.standard_errors_.values())
    assert model.to_dict()["standard_errors"] == {"r": None, "alpha": None, "a": None, "b": None}


def test_likelihood_that_cannot_be_evaluated_raises():
    def broken(params):
        return float("nan"), np.full(params.shape, np.nan)

    with pytest.raises(FitError, match="log-likelihood is not finite at the starting values"):
        _fitting.fit_maximum_likelihood(broken, (1.0, 1.0), ("u", "v"), n_customers=1.0, n_distinct=1, model="toy", max_iterations=10)


def test_gamma_gamma_with_infinite_mean_spend_returns_nan():
    # Simulated with q = 0.7: the spend distribution across customers has no mean.
    rng = np.random.default_rng(20240607)
    x = rng.integers(1, 10, 5000).astype(float)
    nu = rng.gamma(0.7, 1 / 10.0, x.size)
    zbar = rng.gamma(3.0 * x, 1 / (nu * x))
    with pytest.warns(DataQualityWarning, match=r"q = 0\.\d+ <= 1"):
        model = GammaGammaModel().fit(x, zbar)
    with pytest.warns(DataQualityWarning, match="returned NaN for 1 of them"):
        value = model.expected_average_value([0, 5], [0.0, 40.0])
    assert np.isnan(value[0])
    assert np.isfinite(value[1])


def test_to_dict_is_json_ready(cdnow_model, cdnow_spend_model):
    entry = json.loads(json.dumps(cdnow_model.to_dict(), allow_nan=False))
    assert entry["name"] == "bg_nbd"
    assert set(entry) == {"name", "params", "standard_errors", "log_likelihood", "n_customers", "n_distinct", "converged", "status", "iterations"}
    assert entry["params"] == pytest.approx(cdnow_model.params_)
    assert json.loads(json.dumps(cdnow_spend_model.to_dict(), allow_nan=False))["name"] == "gamma_gamma"


@pytest.mark.parametrize("module", [_fitting, bgnbd, gamma_gamma, clv], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    failures, tried = doctest.testmod(module)
    assert failures == 0


def test_bg_nbd_expected_purchases_with_concentrated_dropout():
    # a and b in the thousands to millions: every customer has nearly the same dropout probability
    # and the closed form's 2F1 overflows. Compare with quadrature of eq. 9's integral over p.
    from scipy import integrate, stats

    r, alpha, t = 0.4263, 3.774, 10.0
    for scale in (1e4, 1e6):
        a, b = 0.2831 * scale, 0.9448 * scale
        model = BetaGeoModel()
        model.params_ = {"r": r, "alpha": alpha, "a": a, "b": b}
        low, high = stats.beta.ppf([1e-12, 1 - 1e-12], a, b)
        integrand = lambda p: (1 - (1 + p * t / alpha) ** -r) / p * stats.beta.pdf(p, a, b)
        expected = integrate.quad(integrand, low, high, epsabs=0, epsrel=1e-12, limit=200)[0]

        assert model.expected_purchases_new_customer(np.array([t]))[0] == pytest.approx(expected, rel=1e-7)
        conditional = model.expected_purchases(t, np.array([0.0, 5.0, 300.0]), np.array([0.0, 30.0, 39.9]),
                                               np.array([40.0, 40.0, 40.0]))
        assert np.all(np.isfinite(conditional))
        assert np.all(conditional > 0)


def test_gamma_gamma_grouped_likelihood_equals_row_sum():
    from revopt.models.gamma_gamma import _CompressedLikelihood, _log_likelihood_terms

    rng = np.random.default_rng(11)
    x = rng.integers(1, 20, 500).astype(float)
    zbar = rng.gamma(3.0, 10.0, 500)
    weights = rng.integers(1, 4, 500).astype(float)
    grouped = _CompressedLikelihood(x, zbar, weights)
    for params in (np.array([6.0, 3.7, 15.0]), np.array([1.0, 1.0, 30.0])):
        value, gradient = grouped(params)
        log_f, row_gradient = _log_likelihood_terms(params, x, zbar)
        assert value == pytest.approx(float(np.sum(weights * log_f)), rel=1e-12)
        np.testing.assert_allclose(gradient, (row_gradient * weights).sum(axis=1), rtol=1e-9, atol=1e-9)


def test_log_beta_ratio_exact_at_any_scale():
    from scipy.special import gammaln

    from revopt.models.bgnbd import log_beta_ratio

    n = np.array([0.0, 1.0, 5.0, 300.0])
    a, b = 0.79, 2.4
    value, _, _ = log_beta_ratio(a, b, n)
    np.testing.assert_allclose(value, gammaln(a + b) + gammaln(b + n) - gammaln(b) - gammaln(a + b + n),
                               rtol=1e-12, atol=1e-12)
    # With a + b = 5e79, (b + k) / (a + b + k) equals b / (a + b) to 1e-77 for k <= 300, so the
    # ratio is n log(b / (a + b)); four gammaln values give noise of order 1e69 here.
    a, b = 1e78, 5e79
    value, _, _ = log_beta_ratio(a, b, n)
    np.testing.assert_allclose(value, n * np.log(b / (a + b)), rtol=1e-12, atol=1e-15)
