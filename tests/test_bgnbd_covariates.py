"""Tests of the BG/NBD model with time-invariant covariates.

Layers: the model without covariates as oracle (coefficients at zero, a covariate that splits every
customer into two identical halves, a covariate of pure noise). Recovery of known parameters from
simulated customers. Real data: CLVTools' simulated apparel retailer. Numerical gradients and
invariants.

Data: the CDNOW customer summary (weeks) and CLVTools' apparel data from the shared datasets folder.
Tests that need them skip when they are absent (``conftest.dataset``).
"""

from __future__ import annotations

import doctest
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import dataset
from scipy import integrate, stats
from scipy.special import betaln

from revopt.errors import ConvergenceWarning, DataQualityWarning, InputError, NotFittedError
from revopt.models import BetaGeoModel, bgnbd, bgnbd_covariates
from revopt.models.bgnbd_covariates import BetaGeoCovariateModel, design_matrix

DAYS_PER_WEEK = 7.0
BASE = ("r", "alpha", "a", "b")

# Parameters of the simulated customers: a binary covariate ("member", 40 % ones) and a numeric one
# ("age", standard normal).
TRUE_BASE = {"r": 0.8, "alpha": 8.0, "a": 0.8, "b": 2.5}
TRUE_PURCHASE = np.array([0.5, -0.3])
TRUE_DROPOUT = np.array([-0.4, 0.25])
SIMULATED_NAMES = ["member", "age"]


# --- data and helpers ---------------------------------------------------------------------------


def simulate(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw (x, t_x, T, z) of ``n`` BG/NBD customers with covariates, parameters as above.

    A customer drops out right after repeat purchase N ~ Geometric(p), so x = min(N, K), with K the
    Poisson(lambda T) purchases of a customer who stays alive. Given K, the purchase times are K
    uniform points in (0, T], so the x-th of them, t_x, is T times a Beta(x, K - x + 1) draw.
    """
    z = np.column_stack([rng.random(n) < 0.4, rng.standard_normal(n)]).astype(float)
    T = rng.uniform(26.0, 78.0, n)
    alpha_i = TRUE_BASE["alpha"] * np.exp(-z @ TRUE_PURCHASE)
    dropout_factor = np.exp(z @ TRUE_DROPOUT)
    rate = rng.gamma(TRUE_BASE["r"], 1.0 / alpha_i)
    p = rng.beta(TRUE_BASE["a"] * dropout_factor, TRUE_BASE["b"] * dropout_factor)
    purchases_until_dropout = rng.geometric(p)
    alive_purchases = rng.poisson(rate * T)
    x = np.minimum(purchases_until_dropout, alive_purchases).astype(float)
    t_x = np.where(x > 0, T * rng.beta(np.maximum(x, 1.0), alive_purchases - x + 1.0), 0.0)
    return x, t_x, T, z


@pytest.fixture(scope="module")
def simulated():
    return simulate(4000, np.random.default_rng(20240611))


@pytest.fixture(scope="module")
def simulated_model(simulated):
    return BetaGeoCovariateModel().fit(*simulated, covariate_names=SIMULATED_NAMES)


@pytest.fixture(scope="module")
def cdnow():
    """The 1/10 CDNOW sample summary (2,357 customers, weeks): frequency, recency, T."""
    table = pd.read_csv(dataset("cdnow", "cdnow_customers_summary.csv"))
    return tuple(table[column].to_numpy(dtype=float) for column in ("frequency", "recency", "T"))


@pytest.fixture(scope="module")
def cdnow_model(cdnow):
    return BetaGeoModel().fit(*cdnow)


def apparel_summary(calibration_end: str) -> pd.DataFrame:
    """Weekly summary of CLVTools' apparel customers with their static covariates Gender and Channel.

    Every customer's first purchase is on 2005-01-02. The calibration period ends on
    ``calibration_end`` inclusive, and purchases on the same day count once.
    """
    orders = pd.read_csv(dataset("clvtools_apparel", "apparelTrans.csv"), parse_dates=["Date"])
    covariates = pd.read_csv(dataset("clvtools_apparel", "apparelStaticCov.csv"))
    end = pd.Timestamp(calibration_end)
    days = orders.loc[orders["Date"] <= end, ["Id", "Date"]].drop_duplicates()
    by_customer = days.groupby("Id")["Date"]
    first, last, purchase_days = by_customer.min(), by_customer.max(), by_customer.size()
    week = pd.Timedelta(days=DAYS_PER_WEEK)
    summary = pd.DataFrame({
        "frequency": (purchase_days - 1).astype(float),
        "recency": (last - first) / week,
        "T": (end - first) / week,
    })
    return summary.join(covariates.set_index("Id"), how="left").reset_index()


@pytest.fixture(scope="module")
def apparel() -> pd.DataFrame:
    """The apparel summary as CLVTools' walkthrough sets it up.

    ``clvdata(apparelTrans, time.unit = "week", estimation.split = 40)``: the calibration period
    ends 40 weeks after the first purchase date, on 2005-10-09.
    """
    return apparel_summary("2005-10-09")


def central_differences(function, point: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Gradient by central differences (error O(step**2))."""
    return np.array([(function(point + step) - function(point - step)) / (2.0 * step[i]) for i, step in enumerate(np.diag(steps))])


def fitted_bgnbd(r, alpha, a, b) -> BetaGeoModel:
    """A BG/NBD model with given parameters, bypassing fit (to evaluate formulas at chosen points)."""
    model = BetaGeoModel()
    model.params_ = {"r": r, "alpha": alpha, "a": a, "b": b}
    return model


def likelihood_ratio(full, reduced) -> float:
    return 2.0 * (full.log_likelihood_ - reduced.log_likelihood_)


# --- the model without covariates as oracle -----------------------------------------------------


def test_zero_coefficients_give_bgnbd_likelihood(cdnow):
    z = np.random.default_rng(7).standard_normal((cdnow[0].size, 2))
    with_covariates = bgnbd_covariates._Likelihood(*cdnow, z, np.ones_like(cdnow[0]))
    without = bgnbd._Likelihood(*cdnow, np.ones_like(cdnow[0]))

    for base in ((0.243, 4.414, 0.793, 2.426), (2.0, 30.0, 3.5, 0.6), (0.8, 60.0, 2e4, 7e4)):
        value, gradient = with_covariates(np.concatenate([base, np.zeros(4)]))
        expected_value, expected_gradient = without(np.array(base))
        # rel: bgnbd forms ln A2 from gammaln values, which lose about eps (a + b) ln(a + b) per
        # customer, 2e-10 at the third point.
        assert value == pytest.approx(expected_value, rel=1e-11)
        assert gradient[:4] == pytest.approx(expected_gradient, rel=1e-9)


def test_identical_halves_fit_like_bgnbd(cdnow, cdnow_model):
    # Every customer twice, once with z = +1 and once with z = -1: both halves have the same
    # histories, so the maximum lies at zero coefficients with BetaGeoModel's r, alpha, a, b.
    x, t_x, T = (np.tile(column, 2) for column in cdnow)
    z = np.repeat([1.0, -1.0], cdnow[0].size)
    model = BetaGeoCovariateModel().fit(x, t_x, T, z, covariate_names=["half"])

    assert model.fit_result_.converged
    for name in BASE:
        assert model.params_[name] == pytest.approx(cdnow_model.params_[name], rel=1e-4), name
    # Coefficients are 0 to within the solver's tolerance; their standard errors are 0.04 and 0.15.
    assert abs(model.params_["purchase.half"]) < 1e-6
    assert abs(model.params_["dropout.half"]) < 1e-6
    assert model.log_likelihood_ == pytest.approx(2.0 * cdnow_model.log_likelihood_, rel=1e-10)


def test_noise_covariate_changes_little(cdnow, cdnow_model):
    noise = np.random.default_rng(11).standard_normal(cdnow[0].size)
    model = BetaGeoCovariateModel().fit(*cdnow, noise, covariate_names=["noise"])

    assert model.fit_result_.converged
    for name in ("purchase.noise", "dropout.noise"):
        assert abs(model.params_[name]) < 3.0 * model.standard_errors_[name], name
    for name in BASE:
        shift = abs(model.params_[name] - cdnow_model.params_[name])
        assert shift < 0.25 * cdnow_model.standard_errors_[name], name
    statistic = likelihood_ratio(model, cdnow_model)
    assert statistic >= 0.0
    assert statistic < stats.chi2.ppf(0.999, df=2)


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


# --- real data ----------------------------------------------------------------------------------


def test_apparel_gender_and_channel(apparel):
    x, t_x, T = (apparel[column].to_numpy() for column in ("frequency", "recency", "T"))
    assert len(apparel) == 600
    assert np.all(T == 40.0)
    without = BetaGeoModel().fit(x, t_x, T)
    # The maximum lies on the edge of the parameter space: the dropout coefficients run off to
    # large values, where the likelihood is flat, so the Hessian is singular or nearly so and the
    # end point depends on the solver's path. Separate BG/NBD fits per (Gender, Channel) group show
    # why: two groups want a + b -> infinity (every customer the same dropout probability), one
    # wants a -> 0, and this parametrisation keeps a_i / (a_i + b_i) the same for everybody.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataQualityWarning)
        model = BetaGeoCovariateModel().fit(x, t_x, T, apparel[["Gender", "Channel"]])

    assert model.fit_result_.converged
    assert model.covariate_names_ == ("Gender", "Channel")
    assert model.log_likelihood_ >= without.log_likelihood_
    assert likelihood_ratio(model, without) >= 0.0
    # Nested the other way: one BG/NBD per group has 16 free parameters against these 8.
    separate = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataQualityWarning)  # the same edge of the parameter space, group by group
        for _, group in apparel.groupby(["Gender", "Channel"]):
            separate += BetaGeoModel().fit(group["frequency"], group["recency"], group["T"]).log_likelihood_
    assert model.log_likelihood_ <= separate
    alive = model.probability_alive(x, t_x, T, apparel[["Gender", "Channel"]])
    assert np.all((alive >= 0.0) & (alive <= 1.0))
    expected = model.expected_purchases(52.0, x, t_x, T, apparel[["Gender", "Channel"]])
    assert np.all(np.isfinite(expected) & (expected > 0.0))


def test_apparel_three_years_has_interior_maximum():
    # With three years of calibration (to 2007-12-30) the dropout coefficients are finite, and so
    # are all standard errors.
    summary = apparel_summary("2007-12-30")
    x, t_x, T = (summary[column].to_numpy() for column in ("frequency", "recency", "T"))
    without = BetaGeoModel().fit(x, t_x, T)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataQualityWarning)
        model = BetaGeoCovariateModel().fit(x, t_x, T, summary[["Gender", "Channel"]])

    assert model.fit_result_.converged
    assert all(0.0 < se < np.inf for se in model.standard_errors_.values())
    assert likelihood_ratio(model, without) >= 0.0


# --- gradients and numerical kernels ------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        (0.8, 8.0, 0.8, 2.5, 0.5, -0.3, -0.4, 0.25),
        (2.0, 30.0, 3.5, 0.6, 0.0, 0.0, 0.0, 0.0),
        (0.5, 4.0, 2e7, 8e7, -1.0, 0.2, 1.5, -0.1),
    ],
    ids=["simulated", "zero-coefficients", "concentrated-dropout"],
)
def test_gradient_matches_finite_differences(simulated, params):
    x, t_x, T, z = simulated
    likelihood = bgnbd_covariates._Likelihood(x, t_x, T, z, np.ones_like(x))
    point = np.array(params)
    steps = 1e-5 * np.concatenate([point[:4], np.ones(4)])  # relative for r, alpha, a, b; absolute for coefficients
    numeric = central_differences(lambda p: likelihood(p)[0], point, steps)
    # abs: a difference quotient of a log-likelihood of order 1e4 carries about 1e-7 of rounding
    # noise per unit of step, more for the coefficients' absolute steps.
    assert likelihood(point)[1] == pytest.approx(numeric, rel=1e-6, abs=1e-4)


@pytest.mark.parametrize("shape", [0.5, 3.0, 999.0, 1001.0, 1e4, 1e6, 1e10, 1e14])
def test_log_pochhammer_matches_direct_sum(shape):
    x = np.array([0.0, 1.0, 7.0, 60.0])
    value, slope = bgnbd_covariates._log_pochhammer(np.full(x.size, shape), x)
    # ln Gamma(s + x) - ln Gamma(s) = sum_{j < x} ln(s + j); its derivative is sum_{j < x} 1 / (s + j).
    direct = np.array([np.sum(np.log(shape + np.arange(n))) for n in x.astype(int)])
    direct_slope = np.array([np.sum(1.0 / (shape + np.arange(n))) for n in x.astype(int)])
    assert value == pytest.approx(direct, rel=1e-12, abs=1e-14)
    assert slope == pytest.approx(direct_slope, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("a", [0.3, 1.0, 1.0 + 3e-6, 1.0 - 4e-6, 2.5], ids=["a<1", "a=1", "a-above-1", "a-below-1", "a>1"])
def test_expected_per_customer_matches_bgnbd(a):
    t = np.array([[0.0], [4.0], [52.0]])
    b = np.array([2.4, 0.8, 1.0 - a + 2e-6])  # the last a + b sits inside the band around a + b = 1
    per_customer = bgnbd_covariates._expected_per_customer(t, 0.24, 4.4, np.full(3, a), b)
    one_by_one = np.column_stack([bgnbd._expected(t[:, 0], 0.24, 4.4, a, b_k) for b_k in b])
    np.testing.assert_allclose(per_customer, one_by_one, rtol=1e-12)


def expected_by_quadrature(t, r, alpha, a, b):
    """E[X(t)] of the BG/NBD by quadrature over the dropout probability p ~ Beta(a, b).

    E[X(t) | p] = (1 - (1 + p t / alpha)^-r) / p (eq. 7 of Fader, Hardie and Lee 2005, integrated
    over lambda); QUADPACK's algebraic weight (QAWS) takes the p^(a-1) (1-p)^(b-1) endpoint
    singularities exactly.
    """

    def given_p(p):
        return r * t / alpha if p == 0 else -np.expm1(-r * np.log1p(p * t / alpha)) / p

    integral = integrate.quad(given_p, 0.0, 1.0, weight="alg", wvar=(a - 1.0, b - 1.0), limit=500, epsabs=0, epsrel=1e-12)[0]
    return integral * np.exp(-betaln(a, b))


@pytest.mark.parametrize("shape", [1e-3, 2e-5, 3e-6], ids=["1e-3", "edge", "in-band"])
def test_expected_at_small_shape_matches_quadrature(shape):
    # a + b -> 0, as dropout coefficients at the edge of the parameter space produce.
    r, alpha, t = 0.87, 31.0, 52.0
    a, b = 0.15 * shape, 0.85 * shape
    value = bgnbd_covariates._expected_per_customer(np.array([t]), r, alpha, np.array([a]), np.array([b]))[0]
    # rel: the quadrature loses accuracy to the p^(a-1) endpoint weight as a + b shrinks (1e-9 at
    # a + b = 1e-7), so deeper values are checked against the limit below.
    assert value == pytest.approx(expected_by_quadrature(t, r, alpha, a, b), rel=1e-9)


@pytest.mark.parametrize("shape", [1e-12, 1e-25], ids=["1e-12", "1e-25"])
def test_expected_at_tiny_shape_is_two_point_limit(shape):
    # p ~ Beta(0.15 s, 0.85 s) tends to p = 1 with probability 0.15, else p = 0. The limit is
    # reached to O(s); the closed form alone returned r t / alpha at s = 1e-25, 10 % too high.
    r, alpha, t = 0.87, 31.0, 52.0
    limit = 0.85 * r * t / alpha + 0.15 * (1.0 - (1.0 + t / alpha) ** -r)
    value = bgnbd_covariates._expected_per_customer(np.array([t]), r, alpha, np.array([0.15 * shape]), np.array([0.85 * shape]))[0]
    assert value == pytest.approx(limit, rel=1e-10)


# --- predictions --------------------------------------------------------------------------------


def test_predictions_equal_bgnbd_with_customer_parameters(simulated, simulated_model):
    x, t_x, T, z = (column[:40] for column in simulated)
    params = simulated_model.params_
    alpha_i = params["alpha"] * np.exp(-(params["purchase.member"] * z[:, 0] + params["purchase.age"] * z[:, 1]))
    dropout_factor = np.exp(params["dropout.member"] * z[:, 0] + params["dropout.age"] * z[:, 1])

    alive = simulated_model.probability_alive(x, t_x, T, z)
    expected = simulated_model.expected_purchases(26.0, x, t_x, T, z)
    new = simulated_model.expected_purchases_new_customer(26.0, z)
    log_likelihood = simulated_model.log_likelihood(x, t_x, T, z)
    for i in range(x.size):
        single = fitted_bgnbd(params["r"], alpha_i[i], params["a"] * dropout_factor[i], params["b"] * dropout_factor[i])
        history = ([x[i]], [t_x[i]], [T[i]])
        assert alive[i] == pytest.approx(single.probability_alive(*history)[0], rel=1e-12)
        assert expected[i] == pytest.approx(single.expected_purchases(26.0, *history)[0], rel=1e-10)
        assert new[i] == pytest.approx(single.expected_purchases_new_customer(26.0), rel=1e-10)
        assert log_likelihood[i] == pytest.approx(single.log_likelihood(*history)[0], rel=1e-10)


def test_probabilities_and_expectations_are_well_behaved(simulated, simulated_model):
    x, t_x, T, z = simulated
    alive = simulated_model.probability_alive(x, t_x, T, z)
    assert np.all((alive >= 0.0) & (alive <= 1.0))
    assert np.all(alive[x == 0] == 1.0)  # no repeat purchase, no chance to drop out yet

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
    expanded = BetaGeoCovariateModel().fit(x, t_x, T, z[:, 0], covariate_names=["member"])
    weighted = BetaGeoCovariateModel().fit(
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
    # age in tenths and shifted by 5: the coefficients of age shrink tenfold, and alpha, a and b
    # absorb the shift, because a customer with z = 0 is now one with age = -0.5.
    shifted = z * np.array([1.0, 10.0]) + np.array([0.0, 5.0])
    model = BetaGeoCovariateModel().fit(x, t_x, T, shifted, covariate_names=SIMULATED_NAMES)
    fitted = simulated_model.params_
    for process in ("purchase", "dropout"):
        assert model.params_[f"{process}.age"] == pytest.approx(fitted[f"{process}.age"] / 10.0, rel=1e-5)
        assert model.params_[f"{process}.member"] == pytest.approx(fitted[f"{process}.member"], rel=1e-5)
    assert model.params_["alpha"] == pytest.approx(fitted["alpha"] * np.exp(0.5 * fitted["purchase.age"]), rel=1e-5)
    for name in ("a", "b"):
        assert model.params_[name] == pytest.approx(fitted[name] * np.exp(-0.5 * fitted["dropout.age"]), rel=1e-5)
    assert model.params_["r"] == pytest.approx(fitted["r"], rel=1e-5)
    assert model.log_likelihood_ == pytest.approx(simulated_model.log_likelihood_, rel=1e-10)


def test_text_covariate_flips_reference_level(simulated, simulated_model):
    x, t_x, T, z = simulated
    frame = pd.DataFrame({"channel": np.where(z[:, 0] == 1.0, "online", "shop"), "age": z[:, 1]})
    matrix, names = design_matrix(frame, ["channel", "age"])
    assert names == ["channel_shop", "age"]  # "online" sorts first and is the reference level
    model = BetaGeoCovariateModel().fit(x, t_x, T, matrix, covariate_names=names)

    # channel_shop = 1 - member, so a customer with z = 0 is now a member.
    fitted = simulated_model.params_
    for process in ("purchase", "dropout"):
        assert model.params_[f"{process}.channel_shop"] == pytest.approx(-fitted[f"{process}.member"], rel=1e-5)
        assert model.params_[f"{process}.age"] == pytest.approx(fitted[f"{process}.age"], rel=1e-5)
    assert model.params_["alpha"] == pytest.approx(fitted["alpha"] * np.exp(-fitted["purchase.member"]), rel=1e-5)
    assert model.params_["a"] == pytest.approx(fitted["a"] * np.exp(fitted["dropout.member"]), rel=1e-5)
    assert model.log_likelihood_ == pytest.approx(simulated_model.log_likelihood_, rel=1e-10)


# --- the design matrix --------------------------------------------------------------------------


def test_design_matrix_codes_each_kind_of_column():
    frame = pd.DataFrame({
        "spend": [10.0, 20.5, 0.0, 3.0],
        "vip": [True, False, False, True],
        "tier": pd.Categorical(["gold", "basic", "silver", "basic"], categories=["basic", "silver", "gold", "platinum"]),
        "region": ["north", "south", "east", "south"],
    })
    matrix, names = design_matrix(frame, ["spend", "vip", "tier", "region"])

    assert names == ["spend", "vip", "tier_silver", "tier_gold", "tier_platinum", "region_north", "region_south"]
    np.testing.assert_array_equal(matrix, [
        [10.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
        [20.5, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        [3.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0],
    ])
    assert frame["vip"].dtype == bool  # the caller's frame is not modified


@pytest.mark.parametrize(
    ("frame", "columns", "match"),
    [
        (pd.DataFrame({"a": [1, 2]}), ["b"], r"covariate columns \['b'\] are not in the table; its columns are \['a'\]"),
        (pd.DataFrame({"a": [1.0, np.nan, 3.0]}), ["a"], "covariate column 'a' has 1 missing values"),
        (pd.DataFrame({"g": ["x", "x", "x"]}), ["g"], r"covariate column 'g' has the single level \['x'\]"),
        (pd.DataFrame({"d": pd.to_datetime(["2020-01-01", "2020-02-01"])}), ["d"], "covariate column 'd' has dtype datetime64"),
    ],
    ids=["missing-column", "missing-values", "single-level", "datetime"],
)
def test_design_matrix_rejects_unusable_columns(frame, columns, match):
    with pytest.raises(InputError, match=match):
        design_matrix(frame, columns)


# --- errors and warnings ------------------------------------------------------------------------


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
    with pytest.raises(NotFittedError, match=r"BetaGeoCovariateModel is not fitted yet; call fit\(frequency, recency, T, covariates\) first"):
        call(BetaGeoCovariateModel())


@pytest.mark.parametrize(
    ("covariates", "names", "match"),
    [
        (np.zeros((4, 1)), None, r"covariates must have shape \(5, k\), one row per customer; got shape \(4, 1\)"),
        (np.zeros((5, 0)), None, "covariates has no columns; without covariates use BetaGeoModel"),
        ([[0.0], [1.0], [np.nan], [1.0], [0.0]], None, r"1 of 5 customers break the rule 'covariates are finite' \(row positions 2\)"),
        ([["a"], ["b"], ["a"], ["b"], ["a"]], None, "covariates must be numbers; dummy-code categorical and text columns first"),
        (np.ones((5, 1)), None, r"covariates \['z0'\] are constant \(one value for every customer\)"),
        ([[0, 0], [1, 2], [0, 0], [1, 2], [1, 2]], ["u", "v"], r"the covariates \['u', 'v'\] are linearly dependent \(rank 1 of 2"),
        ([[0.0], [1.0], [0.0], [1.0], [1.0]], ["u", "v"], "covariate_names has 2 names but covariates has 1 columns"),
        ([[0, 1], [1, 0], [0, 0], [1, 1], [1, 0]], ["u", "u"], r"covariate_names must be distinct; got \['u', 'u'\]"),
    ],
    ids=["rows", "no-columns", "nan", "text", "constant", "collinear", "name-count", "duplicate-names"],
)
def test_rejects_unusable_covariates(covariates, names, match):
    summary = ([0, 2, 1, 3, 0], [0.0, 5.0, 2.0, 8.0, 0.0], [10.0] * 5)
    with pytest.raises(InputError, match=match):
        BetaGeoCovariateModel().fit(*summary, covariates, covariate_names=names)


def test_rejects_summary_that_breaks_bgnbd_rules():
    with pytest.raises(InputError, match=r"1 of 3 customers break the rule 'recency <= T' \(row positions 1\)"):
        BetaGeoCovariateModel().fit([1, 2, 0], [1.0, 9.0, 0.0], [5.0, 5.0, 5.0], [[0.0], [1.0], [1.0]])


def test_prediction_needs_the_fitted_columns(simulated, simulated_model):
    x, t_x, T, z = (column[:3] for column in simulated)
    with pytest.raises(InputError, match=r"covariates has 1 columns but the model was fitted on 2 \(member, age\)"):
        simulated_model.probability_alive(x, t_x, T, z[:, :1])
    swapped = pd.DataFrame(z[:, ::-1], columns=["age", "member"])
    with pytest.raises(InputError, match=r"covariates has the columns \['age', 'member'\] but the model was fitted on \['member', 'age'\]"):
        simulated_model.expected_purchases_new_customer(10.0, swapped)


def test_iteration_limit_warns_with_solver_status_and_remedy(simulated):
    with pytest.warns(ConvergenceWarning, match=r"solver BFGS stopped without converging after 2 iterations \(status 1: .*raise max_iterations \(now 2\)"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataQualityWarning)  # the Hessian far from the optimum
            model = BetaGeoCovariateModel(max_iterations=2).fit(*simulated)
    assert not model.fit_result_.converged


def test_to_dict_is_json_ready(simulated_model):
    entry = json.loads(json.dumps(simulated_model.to_dict(), allow_nan=False))
    assert entry["name"] == "bg_nbd_covariates"
    assert entry["covariates"] == SIMULATED_NAMES
    assert set(entry) == {"name", "params", "standard_errors", "log_likelihood", "n_customers", "n_distinct",
                          "converged", "status", "iterations", "covariates"}
    assert entry["params"] == pytest.approx(simulated_model.params_)


def test_docstring_examples_run():
    failures, tried = doctest.testmod(bgnbd_covariates)
    assert tried > 0
    assert failures == 0
