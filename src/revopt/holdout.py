"""Holdout validation: each purchase model's predictions for the holdout period against what happened.

Customers are those of the calibration period; their holdout purchases are counted in the engine
and compared with each model's conditional expectation. The chosen model also gets the standard
diagnostics and the weekly (per time unit) tracking series of repeat purchases.
"""

from __future__ import annotations

import datetime as dt

import ibis
import numpy as np
import pandas as pd
from ibis import _

from revopt import diagnostics
from revopt.selection import PurchaseModelChoice, holdout_predictions
from revopt.summary import MIN_SPEND, holdout_counts, to_date
from revopt.timeunits import DAYS_PER_UNIT

__all__ = ["holdout_validation", "holdout_report", "tracking_series"]

def holdout_validation(calibration, purchases, fitted: dict, calibration_end, observation_end, time_unit) -> dict:
    """Per-customer calibration statistics, actual holdout purchases and each model's predictions."""
    days = DAYS_PER_UNIT[time_unit]
    length = (observation_end - calibration_end).days / days
    counts = holdout_counts(purchases, calibration_end=calibration_end, holdout_end=observation_end)
    joined = calibration.left_join(counts, "customer_id").select(
        "frequency", "recency_days", "T_days", "monetary_value",
        holdout_purchases=_.holdout_purchases.fill_null(0), holdout_revenue=_.holdout_revenue.fill_null(0.0),
    )
    frame = joined.to_pandas()
    x = frame.frequency.to_numpy(float)
    t_x = frame.recency_days.to_numpy(float) / days
    T = frame["T_days"].to_numpy(float) / days
    actual = frame.holdout_purchases.to_numpy(float)
    pairs = {name: (holdout_predictions(model, x, t_x, T, length), actual) for name, model in fitted.items()}
    return {"frame": frame, "x": x, "t_x": t_x, "T": T, "length": length, "pairs": pairs}


def holdout_report(validation: dict, selection: PurchaseModelChoice, gamma_gamma, calibration_end,
                    observation_end) -> tuple[dict, dict]:
    """Holdout errors of the chosen model and the diagnostics: by calibration frequency, histogram, ranking."""
    model = selection.model
    predicted, actual = validation["pairs"][selection.chosen]
    x, t_x, T, frame = validation["x"], validation["t_x"], validation["T"], validation["frame"]
    errors = diagnostics.holdout_errors(predicted, actual)
    holdout = {
        "holdout_start": (calibration_end + dt.timedelta(days=1)).isoformat(),
        "holdout_end": observation_end.isoformat(),
        "length": validation["length"],
        **errors,
    }
    # Customers left out of the spend model get the population mean, as in the scores.
    monetary = frame.monetary_value.fillna(0.0).to_numpy(float)
    usable = (x > 0) & (monetary > MIN_SPEND)
    spend = gamma_gamma.expected_average_value(np.where(usable, x, 0.0), np.where(usable, monetary, 0.0))
    result = {
        "conditional_expectations": diagnostics.conditional_expectations(
            model, x, t_x, T, actual, validation["length"]).to_dict(orient="records"),
        # How well predicted holdout value (purchases times expected spend) orders customers by actual revenue.
        "ranking": diagnostics.ranking_quality(predicted * spend, frame.holdout_revenue.to_numpy(float)),
    }
    if hasattr(model, "probability_of_n_purchases"):
        result["repeat_purchase_histogram"] = diagnostics.repeat_purchase_histogram(
            model, x, T).to_dict(orient="records")
    return holdout, result


def tracking_series(calibration, purchases, purchase_model, calibration_end, observation_end, time_unit) -> pd.DataFrame:
    """Repeat purchases per time unit of the calibration customers, actual and predicted from their first day."""
    days = DAYS_PER_UNIT[time_unit]
    cohort = calibration.select("customer_id", "first_purchase")
    repeat = purchases.join(cohort, "customer_id").filter(lambda t: t.order_date > t.first_purchase)
    start = to_date(calibration.first_purchase.min().execute())
    day_index = repeat.order_date.delta(ibis.date(start), unit="day")
    actual_by_day = repeat.group_by(day=day_index).aggregate(actual=repeat.count()).to_pandas()
    first_days = calibration.group_by(day=calibration.first_purchase.delta(ibis.date(start), unit="day")).aggregate(
        n=calibration.count()).to_pandas()

    total_days = (observation_end - start).days + 1
    edges = np.arange(0.0, total_days + days, days)
    edges[-1] = min(edges[-1], total_days)
    # Cumulative expected repeat purchases at each edge: sum over first-purchase days d of n_d * E[X(edge - d)].
    elapsed = np.clip(edges[None, :] - first_days.day.to_numpy(float)[:, None], 0.0, None) / days
    expected = purchase_model.expected_purchases_new_customer(elapsed.ravel()).reshape(elapsed.shape)
    cumulative = (first_days.n.to_numpy(float)[:, None] * expected).sum(axis=0)
    period = np.searchsorted(edges, actual_by_day.day.to_numpy(float), side="right") - 1
    actual = np.bincount(period, weights=actual_by_day.actual.to_numpy(float), minlength=len(edges) - 1)
    return pd.DataFrame({
        "period_start": [start + dt.timedelta(days=float(edge)) for edge in edges[:-1]],
        "actual": actual[: len(edges) - 1],
        "predicted": np.diff(cumulative),
    })
