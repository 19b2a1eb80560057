"""Benchmark: every revopt purchase model against lifetimes' fitter, same data, same process.

CDNOW_master in weeks (calibration to 1997-09-30) for BG/NBD, MBG/NBD and Pareto/NBD; the donation
panel for BG/BB. Prints the median fit time of each, the ratio lifetimes / revopt, and both
log-likelihoods evaluated with revopt's likelihood at each fitter's estimates.

    .venv/bin/python benchmarks/bench_models.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from revopt.models import BetaGeoBetaBinomialModel, BetaGeoModel, ModifiedBetaGeoModel, ParetoNBDModel
from revopt.models._fitting import compress

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cdnow"
CALIBRATION_END = pd.Timestamp("1997-09-30")
DAYS_PER_WEEK = 7.0


def cdnow_weekly(path: Path):
    """Weekly (x, t_x, T) of CDNOW_master, purchases merged per customer and day, built with pandas."""
    frame = pd.read_csv(path, sep=r"\s+", dtype={"customer_id": str, "date": str})
    frame["date"] = pd.to_datetime(frame["date"], format="%Y%m%d")
    days = frame[frame.date <= CALIBRATION_END][["customer_id", "date"]].drop_duplicates()
    grouped = days.groupby("customer_id").date
    first, last, count = grouped.min(), grouped.max(), grouped.size()
    x = (count - 1).to_numpy(float)
    t_x = (last - first).dt.days.to_numpy(float) / DAYS_PER_WEEK
    T = (CALIBRATION_END - first).dt.days.to_numpy(float) / DAYS_PER_WEEK
    return x, t_x, T


def timed(function, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="repeats per fit; the median is reported")
    args = parser.parse_args()
    import lifetimes

    x, t_x, T = cdnow_weekly(DATASETS / "CDNOW_master.txt")
    (cx, ct, cT), counts = compress(x, t_x, T)
    donations = pd.read_csv(DATASETS / "donations.csv")
    dx, dt_x, dn, dw = (donations[c].to_numpy(float) for c in ("frequency", "recency", "periods", "weights"))

    cases = [
        ("BG/NBD", BetaGeoModel, lifetimes.BetaGeoFitter, (x, t_x, T), (cx, ct, cT), counts, {}),
        ("MBG/NBD", ModifiedBetaGeoModel, lifetimes.ModifiedBetaGeoFitter, (x, t_x, T), (cx, ct, cT), counts, {}),
        ("Pareto/NBD", ParetoNBDModel, lifetimes.ParetoNBDFitter, (x, t_x, T), (cx, ct, cT), counts, {}),
        ("BG/BB", BetaGeoBetaBinomialModel, lifetimes.BetaGeoBetaBinomFitter, (dx, dt_x, dn), (dx, dt_x, dn), dw,
         {"weights": dw}),
    ]
    print(f"CDNOW_master: {len(x):,} customers, {len(cx):,} distinct histories; donations: {int(dw.sum()):,} donors")
    print(f"{'model':<12}{'revopt s':>10}{'lifetimes s':>13}{'ratio':>8}{'LL revopt':>14}{'LL lifetimes':>14}")
    for label, ours, theirs, expanded, compressed, weights, extra in cases:
        repeats = max(1, args.repeats // 2) if label == "Pareto/NBD" else args.repeats
        our_time, fitted = timed(lambda: ours().fit(*compressed, weights=weights), args.repeats)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if label == "BG/BB":
                their_time, peer = timed(lambda: theirs().fit(*expanded, **extra), repeats)
            else:
                their_time, peer = timed(lambda: theirs().fit(*expanded), repeats)
        # lifetimes reports a penalised mean; evaluate our exact log-likelihood at its estimates instead.
        theirs_ll = float(np.sum(weights * _with(ours, dict(peer.params_)).log_likelihood(*compressed)))
        ours_ll = fitted.log_likelihood_
        print(f"{label:<12}{our_time:>10.4f}{their_time:>13.4f}{their_time / our_time:>8.1f}"
              f"{ours_ll:>14.3f}{theirs_ll:>14.3f}")


def _with(model_class, params: dict):
    model = model_class()
    model.params_ = {name: float(params[name]) for name in model_class.param_names}
    return model


if __name__ == "__main__":
    main()
