"""The Gamma-Gamma model of spend per transaction (Fader, Hardie and Lee 2005; Fader and Hardie 2013).

Each transaction of a customer is worth ``z ~ Gamma(p, nu)`` (shape p, rate nu), and the rate varies
across customers as ``nu ~ Gamma(q, gamma)``; so a customer's mean spend is ``p / nu`` and the
population mean is ``p gamma / (q - 1)`` when q > 1. A customer is summarised by

==============  ========  ======================================================
business word   symbol    meaning
==============  ========  ======================================================
frequency       ``x``     repeat transactions (those whose spend is averaged)
monetary_value  ``zbar``  mean spend over those ``x`` transactions
==============  ========  ======================================================

The model assumes spend is independent of the purchase process, and it is fitted on repeat buyers
only (x > 0, zbar > 0).

References
----------
.. [1] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). RFM and CLV: using iso-value curves for
   customer base analysis. Journal of Marketing Research 42(4), 415-430.
.. [2] Fader, P. S. and Hardie, B. G. S. (2013). The Gamma-Gamma model of monetary value.
   http://brucehardie.com/notes/025/
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import digamma, gammaln

from revopt.errors import DataQualityWarning
from revopt.models._fitting import (
    MaximumLikelihoodModel,
    compress,
    fit_maximum_likelihood,
    validate_summary,
    weighted_sum,
)

__all__ = ["GammaGammaModel"]

PARAMS = ("p", "q", "gamma")


def _log_likelihood_terms(params: np.ndarray, x: np.ndarray, zbar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the log of the marginal density of zbar given x ([2]_), and its gradient.

    ``f(zbar | p, q, gamma; x) = Gamma(px + q) / (Gamma(px) Gamma(q)) gamma^q zbar^(px - 1) x^px
    / (gamma + x zbar)^(px + q)``: the Gamma(px, nu x) density of a mean of x draws, with nu
    integrated out against its Gamma(q, gamma) mixing distribution.
    """
    p, q, gamma = params
    px = p * x
    log_gamma_x_zbar = np.log(gamma + x * zbar)

    log_f = (
        gammaln(px + q) - gammaln(px) - gammaln(q)
        + q * np.log(gamma) + (px - 1.0) * np.log(zbar) + px * np.log(x)
        - (px + q) * log_gamma_x_zbar
    )

    shared = digamma(px + q)
    d_p = x * (shared - digamma(px) + np.log(x * zbar) - log_gamma_x_zbar)
    d_q = shared - digamma(q) + np.log(gamma) - log_gamma_x_zbar
    d_gamma = q / gamma - (px + q) / (gamma + x * zbar)
    return log_f, np.stack([d_p, d_q, d_gamma])


class _CompressedLikelihood:
    """The weighted sum of :func:`_log_likelihood_terms` over compressed rows, with its gradient.

    Only ``log(gamma + x zbar)`` depends on both the parameters and a row's mean spend. The gamma and
    digamma functions depend on ``x`` alone, so they run once per distinct ``x`` (a few dozen values),
    and the sums of ``log zbar`` and ``log x`` per distinct ``x`` are computed once before the search.
    """

    def __init__(self, x: np.ndarray, zbar: np.ndarray, counts: np.ndarray) -> None:
        self.x, self.zbar, self.counts = x, zbar, counts
        self.x_values, group = np.unique(x, return_inverse=True)
        self.w_by_x = np.bincount(group, weights=counts)
        self.log_zbar_by_x = np.bincount(group, weights=counts * np.log(zbar))
        self.log_x_zbar_by_x = np.bincount(group, weights=counts * np.log(x * zbar))
        self.log_x = np.log(self.x_values)
        self.total_log_zbar = float(self.log_zbar_by_x.sum())
        self.n_customers = float(counts.sum())

    def __call__(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        p, q, gamma = params
        x, w = self.x_values, self.w_by_x
        px = p * x

        # Terms of x alone, weighted by the customers with that x; (px - 1) log zbar uses the sums per x.
        shared = digamma(px + q)
        value = (
            weighted_sum(gammaln(px + q) - gammaln(px) + px * self.log_x, w)
            + (q * np.log(gamma) - gammaln(q)) * self.n_customers
            + weighted_sum(px, self.log_zbar_by_x) - self.total_log_zbar
        )
        d_p = weighted_sum(x * (shared - digamma(px)), w) + weighted_sum(x, self.log_x_zbar_by_x)
        d_q = weighted_sum(shared, w) + (np.log(gamma) - digamma(q)) * self.n_customers

        # The one term per row: -(px + q) log(gamma + x zbar).
        log_gamma_x_zbar = np.log(gamma + self.x * self.zbar)
        value -= weighted_sum((p * self.x + q) * log_gamma_x_zbar, self.counts)
        d_p -= weighted_sum(self.x * log_gamma_x_zbar, self.counts)
        d_q -= weighted_sum(log_gamma_x_zbar, self.counts)
        d_gamma = q / gamma * self.n_customers - weighted_sum((p * self.x + q) / (gamma + self.x * self.zbar),
                                                              self.counts)
        return float(value), np.array([d_p, d_q, d_gamma])


class GammaGammaModel(MaximumLikelihoodModel):
    """Gamma-Gamma spend model fitted by maximum likelihood on compressed (frequency, monetary_value) rows.

    Parameters
    ----------
    max_iterations : int, default 1000
        Iteration limit for the BFGS solver.

    Attributes
    ----------
    params_ : dict of str to float
        ``p``, ``q``, ``gamma`` (``gamma`` in the currency of the data).
    standard_errors_ : dict of str to float
        Asymptotic standard errors (NaN if the information matrix is singular).
    log_likelihood_ : float
        Sample log-likelihood at the estimates.
    fit_result_ : FitResult
        Everything the solver reported.

    References
    ----------
    .. [1] Fader, P. S. and Hardie, B. G. S. (2013). The Gamma-Gamma model of monetary value.
       http://brucehardie.com/notes/025/

    Examples
    --------
    >>> model = GammaGammaModel().fit(
    ...     frequency=[1, 2, 3, 1, 4, 2, 1, 5, 2, 3],
    ...     monetary_value=[20.0, 35.5, 18.0, 52.0, 25.0, 30.0, 12.0, 41.0, 22.5, 60.0],
    ... )
    >>> {name: round(value, 2) for name, value in model.params_.items()}
    {'p': 4.58, 'q': 12.23, 'gamma': 79.77}
    >>> model.expected_average_value([0, 3], [0.0, 60.0]).round(2)
    array([32.54, 47.65])
    """

    name = "gamma_gamma"
    param_names = PARAMS
    _fit_call = "fit(frequency, monetary_value)"

    def fit(self, frequency, monetary_value, *, weights=None) -> GammaGammaModel:
        """Estimate p, q, gamma by maximum likelihood on repeat buyers.

        Parameters
        ----------
        frequency : array_like, shape (n,)
            Repeat transactions ``x``; every value must be > 0.
        monetary_value : array_like, shape (n,)
            Mean spend over those transactions; every value must be > 0.
        weights : array_like, shape (n,), optional
            Number of customers each row represents. Default: 1 per row.

        Returns
        -------
        GammaGammaModel
            ``self``, fitted.

        Raises
        ------
        InputError
            If any customer has frequency 0 or a mean spend that is not positive. The caller selects
            repeat buyers with positive spend, and reports the others, before fitting.
        FitError
            If the likelihood cannot be evaluated at the start or end of the search.

        Warns
        -----
        DataQualityWarning
            If the fitted q is at most 1, so the population mean spend is undefined.
        ConvergenceWarning
            See :func:`revopt.models._fitting.fit_maximum_likelihood`.
        """
        data = validate_summary(frequency, monetary_value=monetary_value, weights=weights, repeat_buyers_only=True)
        (x, zbar), counts = compress(data["frequency"], data["monetary_value"], weights=data["weights"])
        n_customers = float(counts.sum())

        log_likelihood = _CompressedLikelihood(x, zbar, counts)

        # gamma is on the scale of money, since the population mean spend is p gamma / (q - 1).
        # Starting it at the mean spend keeps the search path the same in any currency.
        start = (1.0, 1.0, weighted_sum(zbar, counts) / n_customers)
        result = fit_maximum_likelihood(
            log_likelihood,
            start,
            PARAMS,
            n_customers=n_customers,
            n_distinct=x.size,
            model="Gamma-Gamma",
            max_iterations=self.max_iterations,
        )
        self._store(result)
        if self.params_["q"] <= 1.0:
            warnings.warn(_undefined_mean_message(self.params_["q"]), DataQualityWarning, stacklevel=2)
        return self

    def log_likelihood(self, frequency, monetary_value) -> np.ndarray:
        """Return the log-density of each repeat buyer's mean spend at the fitted parameters.

        Parameters
        ----------
        frequency, monetary_value : array_like, shape (n,)
            As in :meth:`fit` (repeat buyers with positive spend only).

        Returns
        -------
        numpy.ndarray, shape (n,)
        """
        params = self._params()
        data = validate_summary(frequency, monetary_value=monetary_value, repeat_buyers_only=True)
        return _log_likelihood_terms(params, data["frequency"], data["monetary_value"])[0]

    def expected_average_value(self, frequency, monetary_value) -> np.ndarray:
        """Return the expected spend per transaction given each customer's history ([1]_, eq. 5).

        ``E[Z | x, zbar] = (p gamma + p x zbar) / (p x + q - 1)``, a weighted mean of the population
        mean ``p gamma / (q - 1)`` and the customer's own mean ``zbar``. Customers with frequency 0 get
        the population mean (their ``monetary_value`` is not used).

        Parameters
        ----------
        frequency : array_like, shape (n,)
            Repeat transactions; 0 is allowed.
        monetary_value : array_like, shape (n,)
            Mean spend over the repeat transactions; must be > 0 where frequency > 0.

        Returns
        -------
        numpy.ndarray, shape (n,)
            NaN where the expectation is undefined (``p x + q <= 1``, which needs q <= 1).

        Warns
        -----
        DataQualityWarning
            If any returned value is NaN because the expectation is undefined.

        References
        ----------
        .. [1] Fader and Hardie (2013), The Gamma-Gamma model of monetary value, eq. 5.
        """
        p, q, gamma = self._params()
        data = validate_summary(frequency, monetary_value=monetary_value)
        x = data["frequency"]
        zbar = np.where(x > 0, data["monetary_value"], 0.0)  # unused for frequency 0, may be NaN there

        denominator = p * x + q - 1.0
        defined = denominator > 0
        if not np.all(defined):
            warnings.warn(_undefined_mean_message(q, int(np.sum(~defined))), DataQualityWarning, stacklevel=2)
        safe = np.where(defined, denominator, 1.0)
        return np.where(defined, (p * gamma + p * x * zbar) / safe, np.nan)  # [1], eq. 5


def _undefined_mean_message(q: float, affected: int | None = None) -> str:
    """Return the warning for q <= 1, at fit time (``affected`` None) or when predictions come back NaN."""
    undefined_for = "customers with p x + q <= 1, including everyone with frequency 0"
    action = "expected_average_value returns NaN for them" if affected is None else f"returned NaN for {affected} of them"
    return (
        f"Gamma-Gamma: q = {q:.4g} <= 1, so the population mean spend p gamma / (q - 1) is infinite and "
        f"the expected spend per transaction is undefined for {undefined_for}; {action} instead of a number"
    )
