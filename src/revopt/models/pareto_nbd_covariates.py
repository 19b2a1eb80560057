"""The Pareto/NBD model with time-invariant covariates.

Each customer ``i`` carries a row ``z_i`` of ``k`` numeric covariates (no intercept column) that
shift the scale parameters of the two gamma mixing distributions of the Pareto/NBD
(:mod:`revopt.models.pareto_nbd`):

=====================================================  ==============================================
customer-specific parameter                            process
=====================================================  ==============================================
``alpha_i = alpha * exp(-gamma_purchase . z_i)``       purchase rate ``lambda_i ~ Gamma(r, alpha_i)``
``beta_i = beta * exp(-gamma_dropout . z_i)``          dropout rate ``mu_i ~ Gamma(s, beta_i)``
=====================================================  ==============================================

This is the parametrisation of CLVTools' static-covariate Pareto/NBD ([2]_, functions
``pnbd_staticcov_alpha_i`` and ``pnbd_staticcov_beta_i`` in ``src/pnbd.cpp``). So
``r, alpha, s, beta`` describe a customer with ``z = 0``. A positive purchase coefficient multiplies the mean purchase rate ``r / alpha_i`` by
``exp(gamma_purchase . z_i)``, and a positive dropout coefficient multiplies the mean dropout rate
``s / beta_i`` by ``exp(gamma_dropout . z_i)``, so it shortens the expected lifetime.

Each customer's likelihood is the Pareto/NBD likelihood ([1]_, eq. 18) with ``alpha_i, beta_i`` in
place of ``alpha, beta``, evaluated as in :mod:`revopt.models.pareto_nbd`: Euler's transformation,
then Gauss's continued fraction for the hypergeometric function, with an analytic gradient.
Frequency ``x``, recency ``t_x`` and ``T`` are in one time unit of the caller's choice. ``alpha``
and ``beta`` are then in that unit, and the coefficients are per unit of their covariate.

References
----------
.. [1] Fader, P. S. and Hardie, B. G. S. (2005). A note on deriving the Pareto/NBD model and related
   expressions. http://brucehardie.com/notes/009/
.. [2] CLVTools, R package, https://github.com/bachmannpatrick/CLVTools, file ``src/pnbd.cpp``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.special import expit

from revopt.errors import DataQualityWarning, InputError
from revopt.models._fitting import (
    MaximumLikelihoodModel,
    compress,
    unique_rows,
    validate_summary,
    weighted_sum,
)
from revopt.models.bgnbd_covariates import _covariate_matrix, _maximise, _WorkingParameters, design_matrix
from revopt.models.pareto_nbd import _check_t, _expected_new, _log_expm1, _log_hyp2f1_cf, _x_terms

__all__ = ["ParetoNBDCovariateModel", "design_matrix"]

PARAMS = ("r", "alpha", "s", "beta")
PURCHASE_PREFIX = "purchase."
DROPOUT_PREFIX = "dropout."

_MODEL = "Pareto/NBD with covariates"
_N_BASE = len(PARAMS)


# --- per-customer parameters --------------------------------------------------------------------


def _individual(params: np.ndarray, z: np.ndarray) -> tuple[float, np.ndarray, float, np.ndarray]:
    """Return ``(r, alpha_i, s, beta_i)``: r and s as floats, alpha_i and beta_i of shape (n,).

    ``params`` is ``(r, alpha, s, beta, gamma_purchase (k), gamma_dropout (k))`` and ``z`` has shape (n, k).
    """
    r, alpha, s, beta = params[:_N_BASE]
    k = z.shape[1]
    purchase = params[_N_BASE:_N_BASE + k]
    dropout = params[_N_BASE + k:]
    with np.errstate(over="ignore"):  # an overflow during a line search is reported as an infinite likelihood
        alpha_i = alpha * np.exp(-np.sum(z * purchase, axis=1))
        beta_i = beta * np.exp(-np.sum(z * dropout, axis=1))
    return float(r), alpha_i, float(s), beta_i


def _chain(gradient: np.ndarray, alpha_i: np.ndarray, beta_i: np.ndarray, z: np.ndarray, weights: np.ndarray,
           params: np.ndarray) -> np.ndarray:
    """Turn per-customer gradients in ``(r, alpha_i, s, beta_i)`` into the gradient in the model's parameters.

    With ``alpha_i = alpha exp(-gamma_purchase . z_i)``, ``d alpha_i / d alpha = alpha_i / alpha`` and
    ``d alpha_i / d gamma_purchase = -alpha_i z_i``, and the same for ``beta_i`` and ``gamma_dropout``.
    """
    _, alpha, _, beta = params[:_N_BASE]
    d_r, d_alpha_i, d_s, d_beta_i = gradient * weights

    purchase_term = d_alpha_i * alpha_i
    dropout_term = d_beta_i * beta_i
    base = [np.sum(d_r), np.sum(purchase_term) / alpha, np.sum(d_s), np.sum(dropout_term) / beta]
    d_purchase = -np.sum(z * purchase_term[:, None], axis=0)
    d_dropout = -np.sum(z * dropout_term[:, None], axis=0)
    return np.concatenate([base, d_purchase, d_dropout])


# --- the likelihood and P(alive) -----------------------------------------------------------------


def _hypergeometric_terms(r, s, alpha, beta, x, t) -> tuple[np.ndarray, np.ndarray]:
    """Return ``ln G`` at ``z(t)`` and its gradient in ``(r, alpha, s, beta)``, with per-pair alpha and beta.

    :func:`revopt.models.pareto_nbd._hypergeometric_terms` with one ``alpha`` and ``beta`` for all
    pairs. Here each pair has its own, so the choice between the two forms of Euler's
    transformation (alpha >= beta or not) is made pair by pair.
    """
    alpha_form = alpha >= beta
    P = np.where(alpha_form, r + x, s + 1.0)
    Q = np.where(alpha_form, s + 1.0, r + x)
    big, small = np.maximum(alpha, beta), np.minimum(alpha, beta)
    z = (big - small) / (big + t)

    log_g, d_p, d_q, d_z = _log_hyp2f1_cf(P, Q, z)
    d_big = d_z * (small + t) / (big + t) ** 2
    d_small = -d_z / (big + t)
    gradient = np.where(alpha_form, np.stack([d_p, d_big, d_q, d_small]), np.stack([d_q, d_small, d_p, d_big]))
    return log_g, gradient


def _period_terms(r, s, alpha, beta, x, t_x, T, g_tx, g_T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``ln(E (1 + D))``, its gradient in ``(r, alpha_i, s, beta_i)``, and P(alive), per customer.

    The computation of :func:`revopt.models.pareto_nbd._period_terms`, whose docstring derives it,
    with the branches on alpha >= beta taken customer by customer.
    """
    (log_g_tx, grad_g_tx), (log_g_T, grad_g_T) = g_tx, g_T
    alpha_form = alpha >= beta
    rx = r + x
    a = rx + s
    gap = T - t_x
    log_alpha_T, log_beta_T = np.log(alpha + T), np.log(beta + T)

    log_e = -rx * log_alpha_T - s * log_beta_T
    ell = log_g_T - np.log(a) + np.where(alpha_form, 0.0, log_alpha_T - log_beta_T)
    # The powers of (alpha + t) and (beta + t) in I(t): r + x and s when alpha >= beta, else r + x - 1 and s + 1.
    power_alpha = np.where(alpha_form, rx, rx - 1.0)
    power_beta = np.where(alpha_form, s, s + 1.0)
    log1p_alpha, log1p_beta = np.log1p(gap / (alpha + t_x)), np.log1p(gap / (beta + t_x))
    # delta >= 0 because I decreases in t, so a negative value is rounding (t_x within about 1e-12 of T).
    delta = np.maximum(power_alpha * log1p_alpha + power_beta * log1p_beta + log_g_tx - log_g_T, 0.0)

    log_d = np.log(s) + ell + _log_expm1(delta)
    with np.errstate(invalid="ignore"):  # NaN from an unconverged fraction, reported by the caller
        log_1p_d = np.logaddexp(0.0, log_d)
    dead = expit(log_d)  # D / (1 + D)
    delta_weight = np.exp(np.log(s) + ell + delta - log_1p_d)

    grad_e = np.stack([-log_alpha_T, -rx / (alpha + T), -log_beta_T, -s / (beta + T)])
    explicit_ell = np.stack([
        -1.0 / a,
        np.where(alpha_form, 0.0, 1.0 / (alpha + T)),
        -1.0 / a + 1.0 / s,
        np.where(alpha_form, 0.0, -1.0 / (beta + T)),
    ])
    grad_delta = grad_g_tx - grad_g_T + np.stack([
        log1p_alpha,
        -power_alpha * gap / ((alpha + t_x) * (alpha + T)),
        log1p_beta,
        -power_beta * gap / ((beta + t_x) * (beta + T)),
    ])
    gradient = grad_e + dead * (grad_g_T + explicit_ell) + delta_weight * grad_delta
    return log_e + log_1p_d, gradient, expit(-log_d)


class _Histories:
    """Distinct (z, x, t_x, T) rows, and the distinct (z, x, t) triples at which they need ``G``."""

    def __init__(self, z, x, t_x, T) -> None:
        self.z, self.x, self.t_x, self.T = z, x, t_x, T
        k = z.shape[1]
        doubled = [np.concatenate([column, column]) for column in (*z.T, x)]
        columns, inverse = unique_rows(*doubled, np.concatenate([t_x, T]))
        self.pair_z = np.column_stack(columns[:k]).reshape(-1, k)
        self.pair_x, self.pair_t = columns[k:]
        self.at_t_x, self.at_T = inverse[: x.size], inverse[x.size :]

    def terms(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return per row the log-likelihood, its gradient in ``(r, alpha_i, s, beta_i)``, P(alive),
        ``alpha_i`` and ``beta_i``."""
        r, alpha_i, s, beta_i = _individual(params, self.z)
        _, pair_alpha, _, pair_beta = _individual(params, self.pair_z)
        log_g, gradient = _hypergeometric_terms(r, s, pair_alpha, pair_beta, self.pair_x, self.pair_t)
        g_tx = log_g[self.at_t_x], gradient[:, self.at_t_x]
        g_T = log_g[self.at_T], gradient[:, self.at_T]

        x_ll, x_grad = _x_terms((r, alpha_i, s, beta_i), self.x)
        period_ll, period_grad, alive = _period_terms(r, s, alpha_i, beta_i, self.x, self.t_x, self.T, g_tx, g_T)
        return x_ll + period_ll, x_grad + period_grad, alive, alpha_i, beta_i


class _Likelihood(_Histories):
    """Weighted log-likelihood of the model on compressed (z, x, t_x, T) rows."""

    def __init__(self, x, t_x, T, z, weights) -> None:
        k = z.shape[1]
        columns, self.w = compress(*z.T, x, t_x, T, weights=weights)
        super().__init__(np.column_stack(columns[:k]).reshape(-1, k), *columns[k:])

    def __call__(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        values, gradient, _, alpha_i, beta_i = self.terms(params)
        return float(weighted_sum(values, self.w)), _chain(gradient, alpha_i, beta_i, self.z, self.w, params)


# --- fitting ------------------------------------------------------------------------------------


class _ScaledWorkingParameters(_WorkingParameters):
    """:class:`revopt.models.bgnbd_covariates._WorkingParameters` with both coefficient blocks on scales.

    The solver works in ``theta = (ln r, ln alpha~, ln s, ln beta~, gamma_purchase~, gamma_dropout~)``,
    ``~`` marking the parameters on covariates centred at ``m`` and scaled by ``sd``. Because both
    covariate effects enter as ``exp(-gamma . z)`` on a scale parameter, substituting
    ``z~ = (z - m) / sd`` gives ``ln alpha = ln alpha~ + gamma_purchase . m`` and
    ``ln beta = ln beta~ + gamma_dropout . m``, with ``gamma = gamma~ / sd``. ``s`` does not depend on
    the covariates.
    """

    def __init__(self, z: np.ndarray, weights: np.ndarray) -> None:
        super().__init__(z, weights)
        k = z.shape[1]
        dropout = slice(_N_BASE + k, _N_BASE + 2 * k)
        self.transform[2, dropout] = 0.0
        self.transform[3, dropout] = self.mean / self.scale


def _checked_covariates(covariates, n: int | None, names) -> tuple[np.ndarray, tuple[str, ...]]:
    """Return :func:`revopt.models.bgnbd_covariates._covariate_matrix`, with this model named when
    there are no columns."""
    if np.ndim(covariates) == 2 and np.shape(covariates)[1] == 0:
        raise InputError("covariates has no columns; without covariates use ParetoNBDModel")
    return _covariate_matrix(covariates, n, names)


def _check_identified(z: np.ndarray, names: tuple[str, ...]) -> None:
    """Raise InputError for a constant covariate or linearly dependent covariates.

    Either makes the likelihood flat along some direction of the coefficients, so the estimates
    would not be unique.
    """
    constant = [name for name, spread in zip(names, np.ptp(z, axis=0)) if spread == 0]
    if constant:
        raise InputError(
            f"covariates {constant} are constant (one value for every customer); a constant covariate cannot be "
            "told apart from alpha and beta, so drop it"
        )
    distinct = np.unique(z, axis=0)
    centred = distinct - distinct.mean(axis=0)
    rank = np.linalg.matrix_rank(centred / np.max(np.abs(centred), axis=0))
    if rank < z.shape[1]:
        raise InputError(
            f"the covariates {list(names)} are linearly dependent (rank {rank} of {z.shape[1]}, after removing "
            "their means); drop one of each dependent set, for example one dummy of every categorical covariate"
        )


def _warn_if_unconverged(values: np.ndarray, quantity: str) -> None:
    missing = int(np.count_nonzero(np.isnan(values)))
    if missing:
        warnings.warn(
            DataQualityWarning(
                f"{_MODEL}: {quantity} is NaN for {missing} of {values.size} customers because the continued "
                "fraction did not converge within its step limit. That happens when a customer's alpha_i and "
                "beta_i differ by a factor of more than about 10^6"
            ),
            stacklevel=3,
        )


# --- the estimator ------------------------------------------------------------------------------


class ParetoNBDCovariateModel(MaximumLikelihoodModel):
    """Pareto/NBD model with time-invariant covariates, fitted by maximum likelihood.

    Parameters
    ----------
    max_iterations : int, default 1000
        Iteration limit for the BFGS solver.

    Attributes
    ----------
    params_ : dict of str to float
        ``r``, ``alpha``, ``s``, ``beta`` (alpha and beta in the time unit of the data) for a
        customer whose covariates are all 0, then ``purchase.<name>`` for each covariate, then
        ``dropout.<name>`` for each.
    standard_errors_ : dict of str to float
        Asymptotic standard errors (NaN if the information matrix is singular).
    log_likelihood_ : float
        Sample log-likelihood at the estimates.
    covariate_names_ : tuple of str
        The covariate names, in column order.
    fit_result_ : FitResult
        Everything the solver reported.

    Notes
    -----
    NOTE: :meth:`ParetoNBDModel.probability_of_n_purchases` has no counterpart here yet, because its
    series is written for one ``alpha`` and ``beta``.

    References
    ----------
    .. [1] CLVTools, ``src/pnbd.cpp``, for the parametrisation;
       Fader and Hardie (2005), http://brucehardie.com/notes/009/, for the likelihood.

    Examples
    --------
    >>> model = ParetoNBDCovariateModel().fit(
    ...     frequency=[0, 2, 5, 1, 0, 3, 1, 6, 0, 2],
    ...     recency=[0, 30, 36, 2, 0, 8, 25, 37, 0, 5],
    ...     T=[38] * 10,
    ...     covariates=[0, 0, 0, 0, 0, 0, 1, 1, 1, 1],
    ...     covariate_names=["member"],
    ... )
    >>> {name: round(value, 2) for name, value in model.params_.items()}
    {'r': 7.75, 'alpha': 76.28, 's': 0.47, 'beta': 4.33, 'purchase.member': -0.1, 'dropout.member': -0.92}

    The same history, without and with membership:

    >>> model.probability_alive([2, 2], [30, 30], [38, 38], [[0], [1]]).round(3)
    array([0.867, 0.888])
    >>> model.expected_purchases(10, [2, 2], [30, 30], [38, 38], [[0], [1]]).round(3)
    array([0.703, 0.678])
    """

    name = "pareto_nbd_covariates"
    param_names = PARAMS
    _fit_call = "fit(frequency, recency, T, covariates)"

    # --- fitting ------------------------------------------------------------------------------

    def fit(self, frequency, recency, T, covariates, *, weights=None, covariate_names=None) -> ParetoNBDCovariateModel:
        """Estimate r, alpha, s, beta and the coefficients by maximum likelihood.

        Parameters
        ----------
        frequency : array_like, shape (n,)
            Repeat purchases ``x``.
        recency : array_like, shape (n,)
            ``t_x``, time from first to last purchase.
        T : array_like, shape (n,)
            Time from first purchase to the end of the period, in the unit of ``recency``.
        covariates : array_like or pandas.DataFrame, shape (n, k) or (n,)
            Numeric covariates, one row per customer and no intercept column. Dummy-code categorical
            covariates first, for example with :func:`design_matrix`. A one-dimensional array is one
            covariate.
        weights : array_like, shape (n,), optional
            Number of customers each row represents (for pre-aggregated data). Default: 1 per row.
        covariate_names : sequence of str, length k, optional
            Names used in the parameter names. Default: the DataFrame's column names, else
            ``z0, z1, ...``.

        Returns
        -------
        ParetoNBDCovariateModel
            ``self``, fitted.

        Raises
        ------
        InputError
            If a customer breaks an invariant (see :func:`revopt.models._fitting.validate_summary`), the
            covariates do not have one finite row per customer, or a covariate is constant or
            linearly dependent on the others.
        FitError
            If the likelihood cannot be evaluated at the start or end of the search.

        Warns
        -----
        ConvergenceWarning, DataQualityWarning
            As :func:`revopt.models._fitting.fit_maximum_likelihood` warns.
        """
        data = validate_summary(frequency, recency, T, weights=weights)
        z, names = _checked_covariates(covariates, data["frequency"].size, covariate_names)
        _check_identified(z, names)
        working = _ScaledWorkingParameters(z, data["weights"])
        likelihood = _Likelihood(data["frequency"], data["recency"], data["T"], z, data["weights"])

        n_customers = float(data["weights"].sum())
        k = len(names)
        # As in ParetoNBDModel, alpha and beta start at the mean T, so the search path is the same in
        # any time unit. Every coefficient starts at 0, which is the model without covariates.
        mean_T = weighted_sum(data["T"], data["weights"]) / n_customers
        start = np.concatenate([[1.0, mean_T, 1.0, mean_T], np.zeros(2 * k)])
        param_names = PARAMS + tuple(PURCHASE_PREFIX + name for name in names) + tuple(DROPOUT_PREFIX + name for name in names)
        result = _maximise(likelihood, working, start, param_names, n_customers=n_customers,
                           max_iterations=self.max_iterations, model=_MODEL)

        self.covariate_names_ = names
        self.param_names = param_names
        self._store(result)
        return self

    def _covariates(self, covariates, n: int | None) -> np.ndarray:
        """Return the covariates as an (n, k) array with the fitted model's columns, or raise InputError.

        ``n`` is the number of customers, or None to accept any number of rows.
        """
        z, names = _checked_covariates(covariates, n, None)
        expected = self.covariate_names_
        if z.shape[1] != len(expected):
            raise InputError(
                f"covariates has {z.shape[1]} columns but the model was fitted on {len(expected)} "
                f"({', '.join(expected)}); pass the same columns in the same order"
            )
        if isinstance(covariates, pd.DataFrame) and names != expected:
            raise InputError(
                f"covariates has the columns {list(names)} but the model was fitted on {list(expected)}; "
                "pass the same columns in the same order"
            )
        return z

    def _customer_terms(self, frequency, recency, T, covariates) -> tuple[np.ndarray, ...]:
        """Return per customer x, T, the log-likelihood, P(alive), ``alpha_i`` and ``beta_i``."""
        params = self._params()
        data = validate_summary(frequency, recency, T)
        z = self._covariates(covariates, data["frequency"].size)
        k = z.shape[1]
        rows, inverse = unique_rows(*z.T, data["frequency"], data["recency"], data["T"])
        histories = _Histories(np.column_stack(rows[:k]).reshape(-1, k), *rows[k:])
        values, _, alive, alpha_i, beta_i = histories.terms(params)
        return (data["frequency"], data["T"], values[inverse], alive[inverse], alpha_i[inverse], beta_i[inverse])

    # --- per-customer quantities ----------------------------------------------------------------

    def log_likelihood(self, frequency, recency, T, covariates) -> np.ndarray:
        """Return the log-likelihood of each customer's history at the fitted parameters.

        Eq. 18 of Fader and Hardie (2005) with the customer's ``alpha_i, beta_i``.

        Parameters
        ----------
        frequency, recency, T : array_like, shape (n,)
            As in :meth:`fit`.
        covariates : array_like, shape (n, k)
            The covariates of the same customers, columns as in :meth:`fit`.

        Returns
        -------
        numpy.ndarray, shape (n,)
        """
        values = self._customer_terms(frequency, recency, T, covariates)[2]
        _warn_if_unconverged(values, "the log-likelihood")
        return values

    def probability_alive(self, frequency, recency, T, covariates) -> np.ndarray:
        """Return the probability that each customer is still active at the end of the period.

        The Pareto/NBD's P(alive) (Fader and Hardie 2005, eq. 36 and 37; see
        :meth:`revopt.models.ParetoNBDModel.probability_alive`) with the customer's ``alpha_i, beta_i``.

        Parameters
        ----------
        frequency, recency, T : array_like, shape (n,)
            As in :meth:`fit`.
        covariates : array_like, shape (n, k)
            The covariates of the same customers, columns as in :meth:`fit`.

        Returns
        -------
        numpy.ndarray, shape (n,)
            Values in [0, 1].
        """
        alive = self._customer_terms(frequency, recency, T, covariates)[3]
        _warn_if_unconverged(alive, "P(alive)")
        return alive

    def expected_purchases(self, t, frequency, recency, T, covariates) -> np.ndarray:
        """Return the expected purchases in (T, T + t] given each customer's history.

        Eq. 41 of Fader and Hardie (2005) with the customer's ``alpha_i, beta_i``: P(alive) times the
        expectation for a new customer with parameters ``r + x``, ``alpha_i + T``, ``s``, ``beta_i + T``.

        Parameters
        ----------
        t : float or array_like
            Length of the forecast period, in the time unit of the data; non-negative. Broadcast
            against the customers, so ``t[:, None]`` gives one row per period length.
        frequency, recency, T : array_like, shape (n,)
            As in :meth:`fit`.
        covariates : array_like, shape (n, k)
            The covariates of the same customers, columns as in :meth:`fit`.

        Returns
        -------
        numpy.ndarray
            Shape of ``t`` broadcast against (n,).
        """
        t = _check_t(t)
        r, _, s, _ = self._params()[:_N_BASE]
        x, big_t, _, alive, alpha_i, beta_i = self._customer_terms(frequency, recency, T, covariates)
        _warn_if_unconverged(alive, "the expected number of purchases")
        return alive * _expected_new(t, r + x, alpha_i + big_t, s, beta_i + big_t)

    def expected_purchases_new_customer(self, t, covariates) -> np.ndarray:
        """Return the expected purchases in (0, t] of customers just acquired, E[X(t)].

        Eq. 27 of Fader and Hardie (2005) with each customer's ``alpha_i, beta_i``.

        Parameters
        ----------
        t : float or array_like
            Length of the period, in the time unit of the data; non-negative. Broadcast against the
            customers, as in :meth:`expected_purchases`.
        covariates : array_like, shape (n, k)
            The covariates of the new customers, columns as in :meth:`fit`.

        Returns
        -------
        numpy.ndarray
            Shape of ``t`` broadcast against (n,).
        """
        t = _check_t(t)
        params = self._params()
        r, alpha_i, s, beta_i = _individual(params, self._covariates(covariates, None))
        return _expected_new(t, r, alpha_i, s, beta_i)

    def to_dict(self) -> dict:
        """Return the fitted model as a JSON-ready dict.

        The keys of :meth:`MaximumLikelihoodModel.to_dict`, plus ``covariates``: the covariate names
        in column order.

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        """
        return super().to_dict() | {"covariates": list(self.covariate_names_)}
