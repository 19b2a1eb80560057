"""Tests of the sBG retention model: published estimates, independent computations, invariants.

The survivor counts are the two cohorts of Fader and Hardie (2007), "How to project customer
retention", Journal of Interactive Marketing 21(1): 1,000 customers each, "regular" and "high
end", observed at the start of years 0 to 7.
"""

from __future__ import annotations

import doctest
import json
import warnings
from math import fsum

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import hyp2f1
from test_models import central_differences

from revopt.errors import ConfigError, DataQualityWarning, InputError, NotFittedError
from revopt.models import sbg
from revopt.models.sbg import ShiftedBetaGeometricModel

REGULAR = [1000, 631, 468, 382, 326, 289, 262, 241]
HIGH_END = [1000, 869, 743, 653, 593, 551, 517, 491]


@pytest.fixture(scope="module")
def regular_model():
    return ShiftedBetaGeometricModel().fit(REGULAR)


def fitted_sbg(alpha, beta) -> ShiftedBetaGeometricModel:
    """An sBG model with given parameters, bypassing fit (to evaluate formulas at chosen points)."""
    model = ShiftedBetaGeometricModel()
    model.params_ = {"alpha": alpha, "beta": beta}
    return model


def log_likelihood_by_recursion(params, survivors) -> float:
    """The sBG log-likelihood of one cohort from the recursion of Fader and Hardie (2007):
    P(T = 1) = alpha / (alpha + beta), P(T = t) = (beta + t - 2) / (alpha + beta + t - 1) P(T = t - 1),
    and S(t) = 1 - sum of P(T = i) for i <= t."""
    alpha, beta = params
    churn = [alpha / (alpha + beta)]
    for t in range(2, len(survivors)):
        churn.append(churn[-1] * (beta + t - 2) / (alpha + beta + t - 1))
    lost = -np.diff(survivors)
    survival = 1.0 - fsum(churn)
    return fsum(lost * np.log(churn)) + survivors[-1] * np.log(survival)


# --- published estimates ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("survivors", "published"),
    [(REGULAR, {"alpha": 0.704, "beta": 1.182}), (HIGH_END, {"alpha": 0.668, "beta": 3.806})],
    ids=["regular", "high-end"],
)
def test_reproduces_published_estimates(survivors, published):
    # Fader and Hardie (2007), Journal of Interactive Marketing 21(1).
    model = ShiftedBetaGeometricModel().fit(survivors)
    for name, value in published.items():
        assert model.params_[name] == pytest.approx(value, rel=5e-3), name
    assert model.fit_result_.converged
    assert model.fit_result_.n_customers == 1000
    assert all(0 < se < np.inf for se in model.standard_errors_.values())


# --- independent computations -------------------------------------------------------------------


@pytest.mark.parametrize("survivors", [REGULAR, HIGH_END], ids=["regular", "high-end"])
def test_fit_matches_nelder_mead_on_recursion(survivors):
    # A different likelihood formula and a derivative-free optimiser must find the same optimum.
    result = minimize(
        lambda theta: -log_likelihood_by_recursion(np.exp(theta), survivors),
        x0=np.zeros(2),
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 10_000},
    )
    model = ShiftedBetaGeometricModel().fit(survivors)
    assert model.params_["alpha"] == pytest.approx(np.exp(result.x[0]), rel=1e-6)
    assert model.params_["beta"] == pytest.approx(np.exp(result.x[1]), rel=1e-6)
    assert model.log_likelihood_ == pytest.approx(-result.fun, rel=1e-12)


@pytest.mark.parametrize("params", [(0.704, 1.182), (0.05, 30.0), (12.0, 0.3)], ids=["regular", "loyal", "churny"])
def test_gradient_matches_finite_differences(params):
    likelihood = sbg._Likelihood(sbg._cohorts([REGULAR, HIGH_END[:5]]))
    point = np.array(params)
    numeric = central_differences(lambda p: likelihood(p)[0], point)
    assert likelihood(point)[1] == pytest.approx(numeric, rel=1e-6, abs=1e-6)


def test_log_likelihood_matches_recursion(regular_model):
    params = (regular_model.params_["alpha"], regular_model.params_["beta"])
    cohorts = [REGULAR, HIGH_END, HIGH_END[:3]]
    expected = [log_likelihood_by_recursion(params, np.array(cohort, dtype=float)) for cohort in cohorts]
    np.testing.assert_allclose(regular_model.log_likelihood(cohorts), expected, rtol=1e-12)
    assert regular_model.log_likelihood([REGULAR])[0] == pytest.approx(regular_model.log_likelihood_, rel=1e-12)


@pytest.mark.parametrize("renewals", [0, 1, 6, 100, 2000])
@pytest.mark.parametrize("discount_rate", [0.01, 0.1, 0.5])
def test_residual_lifetime_matches_truncated_sum(regular_model, renewals, discount_rate):
    # DERL = sum_{j >= 0} S(renewals + 1 + j) / S(renewals) / (1 + d)^j, summed until the discount
    # factor falls below 1e-17 (the terms are at most 1 times the discount factor).
    terms = int(np.ceil(np.log(1e17) / np.log1p(discount_rate)))
    survival = regular_model.survival(np.arange(renewals, renewals + terms + 1))
    discount = (1.0 + discount_rate) ** -np.arange(terms)
    expected = fsum(survival[1:] / survival[0] * discount)
    assert regular_model.expected_residual_lifetime(renewals, discount_rate=discount_rate) == pytest.approx(expected, rel=1e-6, abs=0)


@pytest.mark.parametrize("params", [(0.704, 1.182), (12.0, 30.0), (0.05, 3.0)], ids=["regular", "churny", "loyal"])
def test_residual_lifetime_matches_hypergeometric_closed_form(params):
    # Eq. 6 of Fader and Hardie (2010) with scipy's hyp2f1, where scipy is exact: few renewals.
    model = fitted_sbg(*params)
    alpha, beta = params
    for renewals in (0, 1, 6):
        for discount_rate in (0.01, 0.1, 0.5):
            n = renewals + 1
            closed_form = (beta + n - 1) / (alpha + beta + n - 1) * hyp2f1(1.0, beta + n, alpha + beta + n, 1.0 / (1.0 + discount_rate))
            assert model.expected_residual_lifetime(renewals, discount_rate=discount_rate) == pytest.approx(closed_form, rel=1e-10)


def test_residual_lifetime_where_scipy_hypergeometric_fails():
    # scipy 1.17's hyp2f1 returns NaN here (renewals in the thousands, d = 0.001) or drifts by 1e-5
    # (alpha = 12, beta = 30, 100 renewals, d = 0.1); the truncated sum is the reference.
    for (alpha, beta), renewals, discount_rate in [((0.704, 1.182), 5000, 0.001), ((12.0, 30.0), 100, 0.1)]:
        model = fitted_sbg(alpha, beta)
        terms = int(np.ceil(np.log(1e17) / np.log1p(discount_rate)))
        survival = model.survival(np.arange(renewals, renewals + terms + 1))
        expected = fsum(survival[1:] / survival[0] * (1.0 + discount_rate) ** -np.arange(terms))
        assert model.expected_residual_lifetime(renewals, discount_rate=discount_rate) == pytest.approx(expected, rel=1e-6)


def test_undiscounted_residual_lifetime():
    # With d = 0 the sum has the closed form (beta + renewals) / (alpha - 1) when alpha > 1,
    # and diverges when alpha <= 1.
    values = fitted_sbg(2.5, 4.0).expected_residual_lifetime([0, 3], discount_rate=0.0)
    np.testing.assert_allclose(values, [4.0 / 1.5, 7.0 / 1.5], rtol=1e-12)
    assert np.all(np.isinf(fitted_sbg(0.704, 1.182).expected_residual_lifetime([0, 3], discount_rate=0.0)))


# --- invariants ---------------------------------------------------------------------------------


def test_survival_churn_and_retention_are_consistent(regular_model):
    t = np.arange(1, 200)
    survival = regular_model.survival(np.arange(0, 200))
    churn = regular_model.churn_probability(t)
    retention = regular_model.retention_rate(t)

    assert survival[0] == 1.0
    # rtol: the difference of two survival values near 0.1 that differ by 1e-4 keeps about 10 digits.
    np.testing.assert_allclose(churn, survival[:-1] - survival[1:], rtol=1e-8)
    np.testing.assert_allclose(retention, survival[1:] / survival[:-1], rtol=1e-12)
    assert fsum(churn) + survival[-1] == pytest.approx(1.0, abs=1e-12)
    for values in (survival, churn, retention):
        assert np.all((values > 0) & (values <= 1))
    assert np.all(np.diff(survival) < 0)
    # The customers most likely to churn leave first, so retention rises with tenure.
    assert np.all(np.diff(retention) > 0)


def test_fitted_survival_tracks_the_observed_cohort(regular_model):
    # A loose check of the fit itself: two parameters, seven observed shares.
    observed = np.array(REGULAR[1:]) / REGULAR[0]
    np.testing.assert_allclose(regular_model.survival(np.arange(1, 8)), observed, atol=0.02)


def test_projected_survivors_start_from_the_active_count(regular_model):
    projected = regular_model.projected_survivors(np.arange(7, 20), active=241, period=7)
    assert projected[0] == pytest.approx(241, rel=1e-12)
    assert np.all(np.diff(projected) < 0)
    survival = regular_model.survival(np.arange(7, 20))
    np.testing.assert_allclose(projected, 241 * survival / survival[0], rtol=1e-12)
    np.testing.assert_allclose(regular_model.projected_survivors(np.arange(5)), regular_model.survival(np.arange(5)), rtol=1e-12)


def test_repeated_cohort_fits_like_doubled_counts():
    twice = ShiftedBetaGeometricModel().fit([REGULAR, REGULAR])
    doubled = ShiftedBetaGeometricModel().fit([2 * count for count in REGULAR])
    assert twice.fit_result_.n_customers == doubled.fit_result_.n_customers == 2000
    assert twice.log_likelihood_ == pytest.approx(doubled.log_likelihood_, rel=1e-12)
    for name, value in doubled.params_.items():
        assert twice.params_[name] == pytest.approx(value, rel=1e-8), name


def test_cohorts_of_different_lengths_pool_their_likelihoods():
    cohorts = [REGULAR, HIGH_END[:5], REGULAR[:2], [300]]
    model = ShiftedBetaGeometricModel().fit(cohorts)
    assert model.fit_result_.n_customers == 3300
    assert model.log_likelihood(cohorts).sum() == pytest.approx(model.log_likelihood_, rel=1e-12)
    assert model.log_likelihood([[300]])[0] == 0.0  # a cohort with no period observed carries no information


def test_array_and_list_inputs_agree():
    as_list = ShiftedBetaGeometricModel().fit([REGULAR, HIGH_END])
    as_array = ShiftedBetaGeometricModel().fit(np.array([REGULAR, HIGH_END]))
    assert as_array.params_ == pytest.approx(as_list.params_, rel=1e-12)


def test_long_horizons_give_finite_results(regular_model):
    t = np.array([1.0, 1e3, 1e6])
    for values in (regular_model.survival(t), regular_model.churn_probability(t), regular_model.retention_rate(t)):
        assert np.all(np.isfinite(values))
        assert np.all((values > 0) & (values <= 1))
    lifetime = regular_model.expected_residual_lifetime([0, 10**5], discount_rate=0.001)
    assert np.all(np.isfinite(lifetime))


# --- errors and warnings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("survivors", "match"),
    [
        ([[1000, 631, 700]], r"1 of 1 cohorts break the rule 'counts do not increase' \(cohort positions 0\)"),
        ([REGULAR, [100, 60.5]], r"1 of 2 cohorts break the rule 'counts are whole numbers >= 0' \(cohort positions 1\); pass numbers of customers"),
        ([[100, np.nan]], r"1 of 1 cohorts break the rule 'counts are finite'"),
        ([[0, 0], REGULAR], r"1 of 2 cohorts break the rule 'the cohort size \(first value\) is > 0' \(cohort positions 0\)"),
        ([REGULAR, []], r"cohort 1 must be a non-empty sequence of counts"),
        ([], "no cohorts to fit or score"),
        ([[1000], [500]], "no renewal observed"),
    ],
    ids=["increasing", "fractional", "nan", "empty-cohort-size", "empty-cohort", "no-cohorts", "no-period"],
)
def test_rejects_broken_survivor_counts(survivors, match):
    with pytest.raises(InputError, match=match):
        ShiftedBetaGeometricModel().fit(survivors)


def test_single_observed_period_warns():
    with pytest.warns(DataQualityWarning, match=r"only period 1 is observed, so only the first-period churn probability alpha / \(alpha \+ beta\) = 0\.4"):
        model = ShiftedBetaGeometricModel().fit([[1000, 600], [500, 300]])
    assert model.churn_probability(1) == pytest.approx(0.4, rel=1e-6)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.survival(1.5), r"t must be whole numbers >= 0 \(contract periods\); got \[1\.5\]"),
        (lambda m: m.retention_rate(0), r"t must be whole numbers >= 1 \(contract periods\); got \[0\.0\]"),
        (lambda m: m.churn_probability([1, -2]), r"t must be whole numbers >= 1 .*got \[-2\.0\]"),
        (lambda m: m.projected_survivors([5, 9], active=100, period=7), r"t must be at least period = 7 .*got \[5\.0\]"),
        (lambda m: m.projected_survivors(9, active=-1, period=7), r"active must be finite and >= 0 .*got \[-1\.0\]"),
        (lambda m: m.expected_residual_lifetime(1, discount_rate=-0.1), r"discount_rate must be in \[0, inf\]; got -0\.1"),
        (lambda m: m.expected_residual_lifetime(0.5, discount_rate=0.1), r"renewals must be whole numbers >= 0"),
        (lambda m: m.expected_residual_lifetime(0, discount_rate=1e-7), r"needs \d+ terms for discount_rate=1e-07 .* more than 4194304; use a longer period"),
    ],
    ids=["fractional-t", "retention-at-0", "negative-t", "backwards", "negative-active", "negative-discount", "fractional-renewals", "tiny-discount"],
)
def test_rejects_bad_arguments(call, match):
    with pytest.raises(ConfigError, match=match):
        call(fitted_sbg(0.704, 1.182))


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.survival(1),
        lambda m: m.retention_rate(1),
        lambda m: m.churn_probability(1),
        lambda m: m.projected_survivors(1),
        lambda m: m.expected_residual_lifetime(0, discount_rate=0.1),
        lambda m: m.log_likelihood(REGULAR),
        lambda m: m.to_dict(),
    ],
    ids=["survival", "retention", "churn", "projection", "residual-lifetime", "log_likelihood", "to_dict"],
)
def test_before_fit_raises(call):
    with pytest.raises(NotFittedError, match=r"ShiftedBetaGeometricModel is not fitted yet; call fit\(survivors\) first"):
        call(ShiftedBetaGeometricModel())


def test_to_dict_is_json_ready(regular_model):
    entry = json.loads(json.dumps(regular_model.to_dict(), allow_nan=False))
    assert entry["name"] == "sbg"
    assert entry["params"] == pytest.approx(regular_model.params_)
    assert entry["n_customers"] == 1000


def test_docstring_examples_run():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the example fit must not warn
        failures, tried = doctest.testmod(sbg)
    assert tried > 0
    assert failures == 0
