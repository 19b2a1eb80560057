"""Benchmark: revopt versus lifetimes on CDNOW_master, in the same process and run.

Measures, each as the median of several repeats:

1. the customer summary (revopt: Ibis on DuckDB from the staged purchases; lifetimes:
   ``summary_data_from_transaction_data`` on a pandas frame already in memory);
2. the BG/NBD fit (revopt: compressed statistics pulled from the engine and fitted; lifetimes:
   ``BetaGeoFitter.fit`` on the summary);
3. the Gamma-Gamma fit;
4. predictions for every customer (probability alive and expected purchases over 52 weeks);
5. revopt's whole ``analyze`` run (ingest, KPIs, fit, scoring, report) for scale.

Prints times, log-likelihoods and the ratio lifetimes / revopt. Usage::

    .venv/bin/python benchmarks/bench_cdnow.py [--repeats 7] [--data ../shared/datasets/cdnow/CDNOW_master.txt]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import ibis
import numpy as np
import pandas as pd

from revopt.ingest import load_orders
from revopt.models import BetaGeoModel, GammaGammaModel, bgnbd, gamma_gamma
from revopt.pipeline import AnalysisSettings, analyze
from revopt.summary import compressed_statistics, customer_summary

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cdnow" / "CDNOW_master.txt"
CALIBRATION_END = dt.date(1997, 9, 30)
HORIZON_WEEKS = 52.0
DAYS_PER_WEEK = 7.0


def median_time(function, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def revopt_steps(purchases, repeats: int) -> dict:
    summary = customer_summary(purchases, calibration_end=CALIBRATION_END)

    def build_summary():
        return compressed_statistics(summary).to_pandas()

    summary_time, stats = median_time(build_summary, repeats)
    x = stats.frequency.to_numpy(float)
    t_x = stats.recency_days.to_numpy(float) / DAYS_PER_WEEK
    T = stats.T_days.to_numpy(float) / DAYS_PER_WEEK
    weights = stats["count"].to_numpy(float)
    fit_time, bg_nbd = median_time(lambda: BetaGeoModel().fit(x, t_x, T, weights=weights), repeats)

    spend = summary.filter((summary.frequency > 0) & (summary.monetary_value > 0))
    spend = spend.group_by(["frequency", "monetary_value"]).aggregate(count=ibis._.count()).to_pandas()
    spend_time, gamma_gamma = median_time(
        lambda: GammaGammaModel().fit(spend.frequency.to_numpy(float), spend.monetary_value.to_numpy(float),
                                      weights=spend["count"].to_numpy(float)), repeats)

    def predict():
        return bg_nbd.probability_alive(x, t_x, T), bg_nbd.expected_purchases(HORIZON_WEEKS, x, t_x, T)

    predict_time, _ = median_time(predict, repeats)
    return {"summary": summary_time, "bg_nbd_fit": fit_time, "gamma_gamma_fit": spend_time,
            "predict": predict_time, "bg_nbd_ll": bg_nbd.log_likelihood_, "gamma_gamma_ll": gamma_gamma.log_likelihood_,
            "distinct_rows": len(stats)}


def lifetimes_steps(transactions: pd.DataFrame, repeats: int) -> dict:
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import summary_data_from_transaction_data

    def build_summary():
        return summary_data_from_transaction_data(
            transactions, "customer_id", "date", monetary_value_col="amount",
            observation_period_end=pd.Timestamp(CALIBRATION_END), freq="D",
        )

    summary_time, summary = median_time(build_summary, repeats)
    x = summary.frequency.to_numpy(float)
    t_x = summary.recency.to_numpy(float) / DAYS_PER_WEEK
    T = summary["T"].to_numpy(float) / DAYS_PER_WEEK
    fit_time, bg_nbd = median_time(lambda: BetaGeoFitter().fit(x, t_x, T), repeats)
    repeat = summary[(summary.frequency > 0) & (summary.monetary_value > 0)]
    spend_time, gamma_gamma = median_time(
        lambda: GammaGammaFitter().fit(repeat.frequency.to_numpy(float), repeat.monetary_value.to_numpy(float)),
        repeats)

    def predict():
        return (bg_nbd.conditional_probability_alive(x, t_x, T),
                bg_nbd.conditional_expected_number_of_purchases_up_to_time(HORIZON_WEEKS, x, t_x, T))

    predict_time, _ = median_time(predict, repeats)
    return {"summary": summary_time, "bg_nbd_fit": fit_time, "gamma_gamma_fit": spend_time,
            "predict": predict_time,
            # lifetimes reports a penalised mean; evaluate our exact log-likelihood at its parameters instead.
            "bg_nbd_ll": _bg_nbd_log_likelihood(bg_nbd.params_, x, t_x, T),
            "gamma_gamma_ll": _gamma_gamma_log_likelihood(
                gamma_gamma.params_, repeat.frequency.to_numpy(float), repeat.monetary_value.to_numpy(float))}


def _bg_nbd_log_likelihood(params, x, t_x, T) -> float:
    theta = np.array([params["r"], params["alpha"], params["a"], params["b"]], dtype=float)
    return float((bgnbd._x_terms(theta, x)[0] + bgnbd._period_terms(theta, x, t_x, T)[0]).sum())


def _gamma_gamma_log_likelihood(params, x, zbar) -> float:
    theta = np.array([params["p"], params["q"], params["v"]], dtype=float)
    return float(gamma_gamma._log_likelihood_terms(theta, x, zbar)[0].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CDNOW_master.txt")
    parser.add_argument("--repeats", type=int, default=7, help="repeats per measurement; the median is reported")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        tables, _, _ = load_orders(args.data, con=ibis.duckdb.connect(), staging_dir=Path(folder))
        purchases = tables.purchases
        calibration = purchases.filter(purchases.order_date <= ibis.date(CALIBRATION_END))
        transactions = calibration.to_pandas()
        transactions["date"] = pd.to_datetime(transactions.order_date)

        ours = revopt_steps(purchases, args.repeats)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = lifetimes_steps(transactions, args.repeats)

        settings = AnalysisSettings(calibration_end=CALIBRATION_END)
        analyze_time, _ = median_time(lambda: analyze(args.data, Path(folder) / "out", settings),
                                      max(1, args.repeats // 3))

    print(f"CDNOW_master: {len(transactions):,} calibration purchases, distinct (x, t_x, T) rows: "
          f"{ours['distinct_rows']:,}; median of {args.repeats} repeats")
    print(f"{'step':<18}{'revopt s':>12}{'lifetimes s':>14}{'ratio':>9}")
    for step in ("summary", "bg_nbd_fit", "gamma_gamma_fit", "predict"):
        print(f"{step:<18}{ours[step]:>12.4f}{theirs[step]:>14.4f}{theirs[step] / ours[step]:>9.1f}")
    print(f"{'log-likelihood':<18}{'revopt':>12}{'lifetimes':>14}")
    for model in ("bg_nbd_ll", "gamma_gamma_ll"):
        print(f"{model:<18}{ours[model]:>12.3f}{theirs[model]:>14.3f}")
    print(f"revopt analyze end to end (ingest, KPIs, fits, scoring, report): {analyze_time:.2f} s")


if __name__ == "__main__":
    main()
