"""Tests of the Pareto/NBD model with time-invariant covariates.

Layers: the model without covariates as oracle (coefficients at zero, a covariate that splits every
customer into two identical halves, per-customer predictions). Recovery of known parameters from
simulated customers. Numerical gradients and invariants.

Data: the CDNOW customer summary (weeks) from the shared datasets folder. Tests that need it skip
when it is absent (``conftest.dataset``).
"""

from __future__ import annotations

import doctest
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import dataset

from revopt.errors import ConvergenceWarning, DataQualityWarning, InputError, NotFittedError
from revopt.models import pareto_nbd, pareto_nbd_covariates
from revopt.models.pareto_nbd import ParetoNBDModel
from revopt.models.pareto_nbd_covariates import ParetoNBDCovariateModel

BASE = ("r", "alpha", "s", "beta")

# Parameters of the simulated customers: a binary covariate ("member", 40 % ones) and a numeric one
# ("age", standard normal).
TRUE_BASE = {"r": 0.8, "alpha": 8.0, "s": 0.6, "beta": 12.0}
TRUE_PURCHASE = np.array([0.5, -0.3])
TRUE_DROPOUT = np.array([-0.4, 0.25])
SIMULATED_NAMES = ["member", "age"]


# --- data and helpers ---------------------------------------------------------------------------


def simulate(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw (x, t_x, T, z) of ``n`` Pareto/NBD customers with covariates, parameters as above.

    A customer buys at rate lambda until the end of the lifetime tau ~ Exponential(mu) or until T,
    whichever comes first. Over that active time A the repeat purchases are Poisson(lambda A), and
    given x of them, the last one, t_x, is the maximum of x uniform points in (0, A], which is A times
    a Beta(x, 1) draw.
    """
    z = np.column_stack([rng.random(n) < 0.4, rng.standard_normal(n)]).astype(float)
    T = rng.uniform(26.0, 78.0, n)
    alpha_i = TRUE_BASE["alpha"] * np.exp(-z @ TRUE_PURCHASE)
    beta_i = TRUE_BASE["beta"] * np.exp(-z @ TRUE_DROPOUT)
    rate = rng.gamma(TRUE_BASE["r"], 1.0 / alpha_i)
    dropout_rate = rng.gamma(TRUE_BASE["s"], 1.0 / beta_i)
    active = np.minimum(rng.exponential(1.0 / dropout_rate), T)
    x = rng.poisson(rate * active).astype(float)
    t_x = np.where(x > 0, active * rng.beta(np.maximum(x, 1.0), 1.0), 0.0)
    return x, t_x, T, z


@pytest.fixture(scope="module")
def simulated():
    return simulate(4000, np.random.default_rng(20240611))


@pytest.fixture(scope="module")
def simulated_model(simulated):
    return ParetoNBDCovariateModel().fit(*simulated, covariate_names=SIMULATED_NAMES)


@pytest.fixture(scope="module")
def cdnow():
    """The 1/10 CDNOW sample summary (2,357 customers, weeks): frequency, recency, T."""
    table = pd.read_csv(dataset("cdnow", "cdnow_customers_summary.csv"))
    return tuple(table[column].to_numpy(dtype=float) for column in ("frequency", "recency", "T"))


@pytest.fixture(scope="module")
def cdnow_model(cdnow):
    return ParetoNBDModel().fit(*cdnow)


def central_differences(function, point: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Gradient by central differences (error O(step**2))."""
    return np.array([(function(point + step) - function(point - step)) / (2.0 * step[i]) for i, step in enumerate(np.diag(steps))])


def fitted_pareto_nbd(r, alpha, s, beta) -> ParetoNBDModel:
    """A Pareto/NBD model with given parameters, bypassing fit (to evaluate formulas at chosen points)."""
    model = ParetoNBDModel()
    model.params_ = {"r": r, "alpha": alpha, "s": s, "beta": beta}
    return model


# --- the model without covariates as oracle -----------------------------------------------------


@pytest.mark.parametrize(
    "base",
    [(0.553, 10.58, 0.606, 11.67), (2.0, 3.0, 0.5, 80.0), (0.8, 60.0, 3.0, 2.0)],
    ids=["cdnow-estimates", "alpha-below-beta", "alpha-above-beta"],
)
def test_zero_coefficients_give_pareto_nbd_likelihood(cdnow, base):
    z = np.random.default_rng(7).standard_normal((cdnow[0].size, 2))
    with_covariates = pareto_nbd_covariates._Likelihood(*cdnow, z, np.ones_like(cdnow[0]))
    without = pareto_nbd._Likelihood(*cdnow, np.ones_like(cdnow[0]))

    value, gradient = with_covariates(np.concatenate([base, np.zeros(4)]))
    expected_value, expected_gradient = without(np.array(base))
    # The same terms summed in another order (rows are grouped by z here), so only rounding differs.
    assert value == pytest.approx(expected_value, rel=1e-12)
    assert gradient[:4] == pytest.approx(expected_gradient, rel=1e-9)


def test_identical_halves_fit_like_pareto_nbd(cdnow, cdnow_model):
    # Every customer twice, once with z = +1 and once with z = -1: both halves have the same
    # histories, so the maximum lies at zero coefficients with ParetoNBDModel's r, alpha, s, beta.
    x, t_x, T = (np.tile(column, 2) for column in cdnow)
    z = np.repeat([1.0, -1.0], cdnow[0].size)
    model = ParetoNBDCovariateModel().fit(x, t_x, T, z, covariate_names=["half"])

    assert model.fit_result_.converged
    for name in BASE:
        assert model.params_[name] == pytest.approx(cdnow_model.params_[name], rel=1e-4), name
    # Coefficients are 0 to within the solver's tolerance. Their standard errors are 0.03 and 0.07.
    assert abs(model.params_["purchase.half"]) < 1e-6
    assert abs(model.params_["dropout.half"]) < 1e-6
    assert model.log_likelihood_ == pytest.approx(2.0 * cdnow_model.log_likelihood_, rel=1e-10)


# --- the gradient -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        (0.8, 8.0, 0.6, 12.0, 0.5, -0.3, -0.4, 0.25),
        (2.0, 30.0, 3.5, 0.6, 0.0, 0.0, 0.0, 0.0),
        (0.5, 4.0, 1.2, 4.5, -1.0, 0.8, 1.5, -0.6),
    ],
    ids=["simulated", "zero-coefficients", "alpha-and-beta-cross"],
)
def test_gradient_matches_finite_differences(simulated, params):
    x, t_x, T, z = simulated
    likelihood = pareto_nbd_covariates._Likelihood(x, t_x, T, z, np.ones_like(x))
    point = np.array(params)
    steps = 1e-5 * np.concatenate([point[:4], np.ones(4)])  # relative for r, alpha, s, beta; absolute for coefficients
    numeric = central_differences(lambda p: likelihood(p)[0], point, steps)
    # abs: a difference quotient of a log-likelihood of order 1e4 carries about 1e-7 of rounding
    # noise per unit of step, more for the coefficients' absolute steps.
    assert likelihood(point)[1] == pytest.approx(numeric, rel=1e-6, abs=1e-4)


def test_cross_point_mixes_both_forms(simulated):
    # The "alpha-and-beta-cross" point above is meant to exercise both branches of Euler's
    # transformation: some customers with alpha_i >= beta_i and some with alpha_i < beta_i.
    _, _, _, z = simulated
    _, alpha_i, _, beta_i = pareto_nbd_covariates._individual(np.array([0.5, 4.0, 1.2, 4.5, -1.0, 0.8, 1.5, -0.6]), z)
    assert np.count_nonzero(alpha_i >= beta_i) > 100
    assert np.count_nonzero(alpha_i < beta_i) > 100


# --- recovery from simulated customers ----------------------------------------------------------


def test_recovers_simulated_parameters(simulated_model):
    truth = TRUE_BASE | {
        f"{process}.{name}": value
        for process, values in (("purchase", TRUE_PURCHASE), ("dropout", TRUE_DROPOUT))
        for name, value in zip(SIMULATED_NAMES, values)
    }
    assert simulated_model.fit_result_.converged
    assert list(simulated_model.params_) == list(truth)
    for name, value in truth.items():
        error = simulated_model.params_[name] - value
        assert abs(error) < 3.0 * simulated_model.standard_errors_[name], f"{name}: {simulated_model.params_[name]:.4g} vs {value}"


# --- predictions --------------------------------------------------------------------------------


def test_predictions_equal_pareto_nbd_with_customer_parameters(simulated, simulated_model):
    x, t_x, T, z = (column[:40] for column in simulated)
    params = simulated_model.params_
    alpha_i = params["alpha"] * np.exp(-(params["purchase.member"] * z[:, 0] + params["purchase.age"] * z[:, 1]))
    beta_i = params["beta"] * np.exp(-(params["dropout.member"] * z[:, 0] + params["dropout.age"] * z[:, 1]))

    alive = simulated_model.probability_alive(x, t_x, T, z)
    expected = simulated_model.expected_purchases(26.0, x, t_x, T, z)
    new = simulated_model.expected_purchases_new_customer(26.0, z)
    log_likelihood = simulated_model.log_likelihood(x, t_x, T, z)
    for i in range(x.size):
        single = fitted_pareto_nbd(params["r"], alpha_i[i], params["s"], beta_i[i])
        history = ([x[i]], [t_x[i]], [T[i]])
        assert alive[i] == pytest.approx(single.probability_alive(*history)[0], rel=1e-12)
        assert expected[i] == pytest.approx(single.expected_purchases(26.0, *history)[0], rel=1e-10)
        assert new[i] == pytest.approx(single.expected_purchases_new_customer(26.0), rel=1e-10)
        assert log_likelihood[i] == pytest.approx(single.log_likelihood(*history)[0], rel=1e-10)


def test_probabilities_and_expectations_are_well_behaved(simulated, simulated_model):
    x, t_x, T, z = simulated
    alive = simulated_model.probability_alive(x, t_x, T, z)
    assert np.all((alive >= 0.0) & (alive <= 1.0))
    alive_at_end = simulated_model.probability_alive([3, 3], [40.0, 40.0], [40.0, 40.0], [[0.0, 0.0], [1.0, 2.0]])
    assert np.all(alive_at_end == 1.0)  # a purchase at T proves the customer alive at T

    horizons = np.array([0.0, 1.0, 13.0, 52.0, 520.0])
    expected = simulated_model.expected_purchases(horizons[:, None], x, t_x, T, z)
    assert expected.shape == (horizons.size, x.size)
    assert np.all(expected[0] == 0.0)
    assert np.all(np.diff(expected, axis=0) > 0.0)
    new = simulated_model.expected_purchases_new_customer(horizons[:, None], z[:5])
    assert new.shape == (horizons.size, 5)
    assert np.all(np.diff(new, axis=0) > 0.0)


def test_per_customer_log_likelihood_sums_to_fitted_value(simulated, simulated_model):
    total = simulated_model.log_likelihood(*simulated).sum()
    assert total == pytest.approx(simulated_model.log_likelihood_, rel=1e-12)


# --- invariants ---------------------------------------------------------------------------------


def test_weighted_rows_fit_like_expanded_rows():
    # Whole weeks and one binary covariate, so that many customers share a row.
    x, t_x, T, z = simulate(1500, np.random.default_rng(5))
    T = np.ceil(T)
    t_x = np.floor(t_x)
    table = pd.DataFrame({"x": x, "t_x": t_x, "T": T, "member": z[:, 0]})
    grouped = table.groupby(["x", "t_x", "T", "member"], as_index=False).size()
    expanded = ParetoNBDCovariateModel().fit(x, t_x, T, z[:, 0], covariate_names=["member"])
    weighted = ParetoNBDCovariateModel().fit(
        grouped["x"], grouped["t_x"], grouped["T"], grouped["member"], weights=grouped["size"], covariate_names=["member"]
    )

    assert len(grouped) < 1500
    assert weighted.fit_result_.n_customers == expanded.fit_result_.n_customers == 1500
    assert weighted.fit_result_.n_distinct == expanded.fit_result_.n_distinct == len(grouped)
    assert weighted.log_likelihood_ == pytest.approx(expanded.log_likelihood_, rel=1e-10)
    for name, value in expanded.params_.items():
        assert weighted.params_[name] == pytest.approx(value, rel=1e-6, abs=1e-8), name


def test_rescaled_covariate_rescales_its_coefficients(simulated, simulated_model):
    x, t_x, T, z = simulated
    # age in tenths and shifted by 5: the coefficients of age shrink tenfold, and alpha and beta
    # absorb the shift, because a customer with z = 0 is now one with age = -0.5.
    shifted = z * np.array([1.0, 10.0]) + np.array([0.0, 5.0])
    model = ParetoNBDCovariateModel().fit(x, t_x, T, shifted, covariate_names=SIMULATED_NAMES)
    fitted = simulated_model.params_
    for process in ("purchase", "dropout"):
        assert model.params_[f"{process}.age"] == pytest.approx(fitted[f"{process}.age"] / 10.0, rel=1e-5)
        assert model.params_[f"{process}.member"] == pytest.approx(fitted[f"{process}.member"], rel=1e-5)
    assert model.params_["alpha"] == pytest.approx(fitted["alpha"] * np.exp(0.5 * fitted["purchase.age"]), rel=1e-5)
    assert model.params_["beta"] == pytest.approx(fitted["beta"] * np.exp(0.5 * fitted["dropout.age"]), rel=1e-5)
    assert model.log_likelihood_ == pytest.approx(simulated_model.log_likelihood_, rel=1e-10)


# --- input checks and output --------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.probability_alive([1], [1.0], [2.0], [[0.0]]),
        lambda m: m.expected_purchases(1.0, [1], [1.0], [2.0], [[0.0]]),
        lambda m: m.expected_purchases_new_customer(1.0, [[0.0]]),
        lambda m: m.log_likelihood([1], [1.0], [2.0], [[0.0]]),
        lambda m: m.to_dict(),
    ],
    ids=["probability_alive", "expected_purchases", "new_customer", "log_likelihood", "to_dict"],
)
def test_before_fit_raises(call):
    match = r"ParetoNBDCovariateModel is not fitted yet; call fit\(frequency, recency, T, covariates\) first"
    with pytest.raises(NotFittedError, match=match):
        call(ParetoNBDCovariateModel())


@pytest.mark.parametrize(
    ("covariates", "names", "match"),
    [
        (np.zeros((4, 1)), None, r"covariates must have shape \(5, k\), one row per customer; got shape \(4, 1\)"),
        (np.zeros((5, 0)), None, "covariates has no columns; without covariates use ParetoNBDModel"),
        ([[0.0], [1.0], [np.nan], [1.0], [0.0]], None, r"1 of 5 customers break the rule 'covariates are finite' \(row positions 2\)"),
        (np.ones((5, 1)), None, r"covariates \['z0'\] are constant \(one value for every customer\).*alpha and beta"),
        ([[0, 0], [1, 2], [0, 0], [1, 2], [1, 2]], ["u", "v"], r"the covariates \['u', 'v'\] are linearly dependent \(rank 1 of 2"),
    ],
    ids=["rows", "no-columns", "nan", "constant", "collinear"],
)
def test_rejects_unusable_covariates(covariates, names, match):
    summary = ([0, 2, 1, 3, 0], [0.0, 5.0, 2.0, 8.0, 0.0], [10.0] * 5)
    with pytest.raises(InputError, match=match):
        ParetoNBDCovariateModel().fit(*summary, covariates, covariate_names=names)


def test_prediction_needs_the_fitted_columns(simulated, simulated_model):
    x, t_x, T, z = (column[:3] for column in simulated)
    with pytest.raises(InputError, match=r"covariates has 1 columns but the model was fitted on 2 \(member, age\)"):
        simulated_model.probability_alive(x, t_x, T, z[:, :1])
    swapped = pd.DataFrame(z[:, ::-1], columns=["age", "member"])
    with pytest.raises(InputError, match=r"covariates has the columns \['age', 'member'\] but the model was fitted on \['member', 'age'\]"):
        simulated_model.expected_purchases_new_customer(10.0, swapped)


def test_iteration_limit_warns_with_model_name(simulated):
    with pytest.warns(ConvergenceWarning, match=r"Pareto/NBD with covariates: solver BFGS stopped without converging after 2 iterations"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataQualityWarning)  # the Hessian far from the optimum
            model = ParetoNBDCovariateModel(max_iterations=2).fit(*simulated)
    assert not model.fit_result_.converged


def test_to_dict_is_json_ready(simulated_model):
    entry = json.loads(json.dumps(simulated_model.to_dict(), allow_nan=False))
    assert entry["name"] == "pareto_nbd_covariates"
    assert entry["covariates"] == SIMULATED_NAMES
    assert set(entry) == {"name", "params", "standard_errors", "log_likelihood", "n_customers", "n_distinct",
                          "converged", "status", "iterations", "covariates"}
    assert entry["params"] == pytest.approx(simulated_model.params_)


def test_docstring_examples_run():
    failures, tried = doctest.testmod(pareto_nbd_covariates)
    assert tried > 0
    assert failures == 0
