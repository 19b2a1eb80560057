"""Choosing the purchase model: lowest holdout error, ties to the simplest, BIC without a holdout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from revopt.selection import BIC_TIE, choose, fit_purchase_models

from conftest import dataset


@pytest.fixture(scope="module")
def fitted():
    summary = pd.read_csv(dataset("cdnow", "cdnow_customers_summary.csv"))
    # The summary is already in weeks; fit_purchase_models takes days, so scale back by 7.
    stats = pd.DataFrame({
        "frequency": summary.frequency, "recency_days": summary.recency * 7, "T_days": summary["T"] * 7,
        "count": 1,
    })
    models, failures = fit_purchase_models(stats, time_unit="week", choice="auto")
    return models, failures


def test_lowest_holdout_error_wins(fitted):
    models, failures = fitted
    actual = np.zeros(3)
    holdout = {"bg-nbd": (np.array([1.0, 1.0, 1.0]), actual), "mbg-nbd": (np.array([0.5, 0.5, 0.5]), actual),
               "pareto-nbd": (np.array([2.0, 2.0, 2.0]), actual)}
    selection = choose(models, failures, n_customers=2357, choice="auto", holdout=holdout)

    assert selection.chosen == "mbg-nbd"
    assert selection.reason_id == "selection.by_holdout_mae"


def test_near_ties_go_to_simplest(fitted):
    models, failures = fitted
    actual = np.zeros(2)
    holdout = {"bg-nbd": (np.array([1.0, 1.0]), actual), "mbg-nbd": (np.array([0.999, 0.999]), actual),
               "pareto-nbd": (np.array([0.995, 0.995]), actual)}
    selection = choose(models, failures, n_customers=2357, choice="auto", holdout=holdout)

    assert selection.chosen == "bg-nbd"
    assert selection.reason_id == "selection.tied_holdout_mae"


def test_bic_without_holdout(fitted):
    models, failures = fitted
    selection = choose(models, failures, n_customers=2357, choice="auto")
    bic = selection.comparison.set_index("option")["bic"]

    assert bic[selection.chosen] <= bic.min() + BIC_TIE
    # On the CDNOW sample BG/NBD and MBG/NBD are within 1 BIC unit and Pareto/NBD 25 above.
    assert selection.chosen == "bg-nbd"


def test_requested_model_is_used(fitted):
    models, failures = fitted
    selection = choose({"pareto-nbd": models["pareto-nbd"]}, {}, n_customers=2357, choice="pareto-nbd")

    assert selection.chosen == "pareto-nbd"
    assert selection.reason("en") == "pareto-nbd was requested with --model"
