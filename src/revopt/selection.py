"""Fit the candidate purchase models, compare them, and choose the one to score customers with.

``auto`` fits BG/NBD, MBG/NBD and Pareto/NBD on the same compressed calibration statistics. With a
holdout period the model with the lowest per-customer mean absolute error of holdout purchases
wins, since that is the error an operator's forecast makes. Without one, the lowest BIC wins.
A model whose fit fails is listed with the reason and left out of the choice.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from revopt import diagnostics
from revopt.errors import ConfigError, FitError
from revopt.i18n import message
from revopt.models import BetaGeoModel, ModifiedBetaGeoModel, ParetoNBDModel
from revopt.models._fitting import unique_rows
from revopt.timeunits import DAYS_PER_UNIT

__all__ = ["PURCHASE_MODELS", "MODEL_CHOICES", "PurchaseModelChoice", "fit_purchase_models", "holdout_predictions"]

log = logging.getLogger(__name__)

# Option name -> model class, in the order they are compared and listed.
PURCHASE_MODELS = {
    "bg-nbd": BetaGeoModel,
    "mbg-nbd": ModifiedBetaGeoModel,
    "pareto-nbd": ParetoNBDModel,
}
MODEL_CHOICES = (*PURCHASE_MODELS, "auto")
# Models whose score lies within this relative distance of the best are tied, and a tie goes to
# the earliest model in PURCHASE_MODELS: the simplest, fastest, and the one with the most outputs
# (intervals and next purchase dates). Differences this small are noise, not evidence. On a base
# where every model fits away its dropout (Online Retail) the three differ in the ninth digit.
TIE_TOLERANCE = 0.01
# Without a holdout: a BIC difference below 2 is "not worth more than a bare mention" (Kass and
# Raftery 1995, "Bayes factors", JASA 90(430), section 3.2), so such models are tied too.
BIC_TIE = 2.0


@dataclass
class PurchaseModelChoice:
    """The fitted candidates, their comparison table and the chosen model with the reason."""

    models: dict[str, object]
    failures: dict[str, str]
    chosen: str
    reason_id: str
    reason_fields: dict = field(default_factory=dict)
    comparison: pd.DataFrame | None = None

    @property
    def model(self):
        return self.models[self.chosen]

    def reason(self, language: str) -> str:
        return message(self.reason_id, language, **self.reason_fields)


def _arrays(stats: pd.DataFrame, time_unit: str):
    days = DAYS_PER_UNIT[time_unit]
    return (
        stats.frequency.to_numpy(float),
        stats.recency_days.to_numpy(float) / days,
        stats.T_days.to_numpy(float) / days,
    )


def fit_purchase_models(stats: pd.DataFrame, *, time_unit: str, choice: str = "auto") -> tuple[dict, dict]:
    """Fit the purchase models that ``choice`` names on compressed statistics.

    Parameters
    ----------
    stats : pandas.DataFrame
        Columns frequency, recency_days, T_days and count (from ``summary.compressed_statistics``).
    choice : {"bg-nbd", "mbg-nbd", "pareto-nbd", "auto"}

    Returns
    -------
    (dict of option name to fitted model, dict of option name to failure message)
    """
    if choice not in MODEL_CHOICES:
        raise ConfigError(f"model {choice!r} is not known; use one of: {', '.join(MODEL_CHOICES)}")
    names = list(PURCHASE_MODELS) if choice == "auto" else [choice]
    x, t_x, T = _arrays(stats, time_unit)
    weights = stats["count"].to_numpy(float)
    fitted, failures = {}, {}
    for name in names:
        try:
            fitted[name] = PURCHASE_MODELS[name]().fit(x, t_x, T, weights=weights)
        except FitError as error:
            if choice != "auto":
                raise
            failures[name] = str(error)
            log.info("event=model_fit_failed model=%s error=%s", name, error)
    if not fitted:
        raise FitError(f"no purchase model could be fitted: {'; '.join(failures.values())}")
    return fitted, failures


def holdout_predictions(model, frequency, recency, T, length: float) -> np.ndarray:
    """Expected holdout purchases per customer, evaluated once per distinct (x, t_x, T)."""
    rows, inverse = unique_rows(frequency, recency, T)
    return np.asarray(model.expected_purchases(length, *rows), dtype=float)[inverse]


def choose(
    fitted: dict,
    failures: dict,
    *,
    n_customers: float,
    choice: str,
    holdout: dict | None = None,
) -> PurchaseModelChoice:
    """Compare the fitted models and choose one.

    ``holdout`` maps option name to a ``(predicted, actual)`` pair of per-customer holdout purchases.
    """
    labelled = {model.name: model for model in fitted.values()}
    by_model_name = None if holdout is None else {fitted[option].name: pair for option, pair in holdout.items()}
    comparison = diagnostics.model_comparison(labelled, n_customers=n_customers, holdout=by_model_name)
    comparison.insert(0, "option", list(fitted))
    if choice != "auto":
        return PurchaseModelChoice(fitted, failures, choice, "selection.requested", {"model": choice},
                                   comparison)
    if len(fitted) == 1:
        only = next(iter(fitted))
        return PurchaseModelChoice(fitted, failures, only, "selection.only_one", {"model": only}, comparison)

    metric = "holdout_mae" if holdout else "bic"
    finite = comparison[np.isfinite(comparison[metric].to_numpy(float))]
    lowest = finite[metric].min()
    band = TIE_TOLERANCE * abs(lowest) if holdout else BIC_TIE
    tied = finite[finite[metric] <= lowest + band]
    best = tied.iloc[0]
    others = finite[finite.option != best.option].sort_values(metric, kind="stable")
    runner_up = others.iloc[0] if len(others) else None
    fields = {
        "model": best.option,
        "value": f"{best[metric]:.4g}",
        "runner_up": runner_up.option if runner_up is not None else "-",
        "runner_up_value": f"{runner_up[metric]:.4g}" if runner_up is not None else "-",
    }
    if len(tied) > 1:
        reason = "selection.tied_holdout_mae" if holdout else "selection.tied_bic"
        fields["tied"] = ", ".join(tied.option)
        fields["tolerance"] = f"{TIE_TOLERANCE:.0%}" if holdout else f"{BIC_TIE:g}"
    else:
        reason = "selection.by_holdout_mae" if holdout else "selection.by_bic"
    return PurchaseModelChoice(fitted, failures, best.option, reason, fields, comparison)


def comparison_records(selection: PurchaseModelChoice) -> list[dict]:
    """Return the comparison table as JSON-ready rows (NaN becomes None), failed fits included."""
    rows = []
    for record in selection.comparison.to_dict(orient="records"):
        rows.append({key: (None if isinstance(value, float) and not math.isfinite(value) else value)
                     for key, value in record.items()} | {"chosen": record["option"] == selection.chosen})
    for name, error in selection.failures.items():
        rows.append({"option": name, "name": PURCHASE_MODELS[name].name, "failed": error, "chosen": False})
    return rows
