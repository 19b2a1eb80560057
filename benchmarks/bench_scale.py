"""Benchmark: revopt analyze versus lifetimes on synthetic order logs of 1 million lines and more.

For each size in ``--customers`` the script writes a log with
:func:`revopt.scalegen.write_scale_log` (about 10 order lines per customer, Parquet parts with the
export's Chinese headers, and ``truth.json`` with the true parameters), or reuses the one already
in ``--work`` for that size and seed. It then measures, each run in its own Python subprocess so
that peak resident memory (VmHWM) belongs to one step:

1. revopt core: ``analyze(orders, out, AnalysisSettings(tz="Asia/Shanghai", growth=False,
   model="bg-nbd"))``, i.e. ingest, KPIs, BG/NBD and Gamma-Gamma fits, scoring, diagnostics and
   every output file, with the seconds of each stage from ``result.timings``;
2. revopt full (with ``--full``): the same with ``growth=True``, adding churn, recommendations
   and next best actions;
3. lifetimes: pandas reads the columns it needs from the same parts, drops closed and refunded
   orders, guest rows and exact duplicate lines as revopt's ingest does, then runs
   ``summary_data_from_transaction_data`` (days, observation end = last order date, converted to
   weeks as revopt does), ``BetaGeoFitter.fit``, ``GammaGammaFitter.fit`` on repeat buyers and, for
   every customer, P(alive), expected purchases over 52 weeks and a 12-month CLV discounted at
   revopt's default 10 % a year. Its time includes the Parquet read.

4. engine floor (with ``--floor``): the DuckDB passes alone that every end-to-end run with revopt's
   checks needs (duplicate hash, kept lines, daily purchases, customer summary, compressed rows),
   in memory and without writing a file. lifetimes / floor is the largest time ratio that any job
   doing those passes could reach on the machine.

Prints medians over ``--repeats`` runs, the ratios lifetimes / revopt for time and revopt /
lifetimes for memory, the share of each revopt core stage, and both libraries' BG/NBD and
Gamma-Gamma estimates beside the true parameters. Usage::

    .venv/bin/python benchmarks/bench_scale.py [--customers 100000,1000000,10000000] [--repeats 3] [--full]
        [--work DIR] [--peer-max-customers 1000000] [--memory-limit 1GB] [--floor]

lifetimes runs only up to ``--peer-max-customers``; above it the script reports revopt alone, with
the growth of time against the growth of lines from the smallest size.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

TIME_ZONE = "Asia/Shanghai"
DAYS_PER_WEEK = 7.0
HORIZON_WEEKS = 52.0
HORIZON_MONTHS = 12
ANNUAL_DISCOUNT_RATE = 0.10  # AnalysisSettings.discount_rate's default
# Columns of the scale log (see revopt.demo.ORDER_COLUMNS): member id, order time, paid amount,
# status, and the order and product ids that tell exact duplicate lines apart from repeated lines.
MEMBER, ORDER_TIME, PAID, STATUS, ORDER_ID = "买家会员名", "下单时间", "实付金额", "订单状态", "订单编号"
DUPLICATE_KEY = (MEMBER, ORDER_TIME, PAID, STATUS, ORDER_ID, "商品ID")
BG_NBD_PARAMS = ("r", "alpha", "a", "b")
GAMMA_GAMMA_PARAMS = ("p", "q", "gamma")


def peak_mib() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux's VmHWM starts afresh at exec. ``ru_maxrss`` does not, so a child started by a large
    parent would report the parent's size. It is used only where /proc is missing.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scale_log(work: Path, n_customers: int, seed: int) -> tuple[Path, dict, float | None]:
    """Return the log folder for this size and seed, its truth and the seconds spent writing it (None if reused)."""
    from revopt.scalegen import write_scale_log

    folder = work / f"customers-{n_customers}-seed-{seed}"
    truth_path = folder / "truth.json"
    if truth_path.exists():
        truth = json.loads(truth_path.read_text(encoding="utf-8"))
        complete = all((folder / chunk["file"]).exists() for chunk in truth["chunks"])
        if truth["n_customers"] == n_customers and truth["seed"] == seed and complete:
            return folder, truth, None
    start = time.perf_counter()
    write_scale_log(folder, n_customers=n_customers, seed=seed)
    seconds = time.perf_counter() - start
    return folder, json.loads(truth_path.read_text(encoding="utf-8")), seconds


# ---------------------------------------------------------------------------------------
# Child processes: one measured run each, reporting one JSON line on stdout
# ---------------------------------------------------------------------------------------


def child_revopt(folder: Path, growth: bool, memory_limit: str) -> dict:
    from revopt.pipeline import AnalysisSettings, analyze

    settings = AnalysisSettings(tz=TIME_ZONE, growth=growth, model="bg-nbd", memory_limit=memory_limit)
    base = peak_mib()
    start = time.perf_counter()
    result = analyze(folder / "orders", folder / ("out-full" if growth else "out-core"), settings)
    seconds = time.perf_counter() - start
    models = result.model["models"]
    return {"seconds": seconds, "base_mib": base, "peak_mib": peak_mib(), "timings": result.timings,
            "purchases": result.ingest["purchases"], "customers": len(result.customers),
            "bg_nbd": models["bg_nbd"]["params"], "bg_nbd_se": models["bg_nbd"]["standard_errors"],
            "gamma_gamma": models["gamma_gamma"]["params"],
            "gamma_gamma_se": models["gamma_gamma"]["standard_errors"]}


def child_lifetimes(folder: Path) -> dict:
    import pandas as pd
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import summary_data_from_transaction_data

    from revopt.ingest.clean import CANCELLED_STATUSES

    base = peak_mib()
    start = time.perf_counter()
    lines = pd.read_parquet(folder / "orders", columns=list(DUPLICATE_KEY))
    completed = ~lines[STATUS].str.strip().str.lower().isin(CANCELLED_STATUSES)
    lines = lines[completed & lines[MEMBER].notna()].drop_duplicates()
    summary = summary_data_from_transaction_data(
        lines, MEMBER, ORDER_TIME, monetary_value_col=PAID, observation_period_end=lines[ORDER_TIME].max(), freq="D")
    x = summary.frequency
    t_x = summary.recency / DAYS_PER_WEEK
    T = summary["T"] / DAYS_PER_WEEK

    # lifetimes warns about convergence details and pandas idioms, so the filter stays inside this block.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bg_nbd = BetaGeoFitter().fit(x, t_x, T)
        repeat = summary[(summary.frequency > 0) & (summary.monetary_value > 0)]
        gamma_gamma = GammaGammaFitter().fit(repeat.frequency, repeat.monetary_value)
        alive = bg_nbd.conditional_probability_alive(x, t_x, T)
        expected = bg_nbd.conditional_expected_number_of_purchases_up_to_time(HORIZON_WEEKS, x, t_x, T)
        # lifetimes discounts per month: the monthly rate that compounds to the annual one.
        monthly_rate = (1.0 + ANNUAL_DISCOUNT_RATE) ** (1.0 / HORIZON_MONTHS) - 1.0
        clv = gamma_gamma.customer_lifetime_value(bg_nbd, x, t_x, T, summary.monetary_value, time=HORIZON_MONTHS,
                                                  discount_rate=monthly_rate, freq="W")
    seconds = time.perf_counter() - start
    params = gamma_gamma.params_
    # A customer's purchase days are the first one plus the repeat days (frequency).
    return {"seconds": seconds, "base_mib": base, "peak_mib": peak_mib(), "purchases": int((x + 1).sum()),
            "customers": len(summary), "predicted": int(alive.size + expected.size + clv.size),
            "bg_nbd": {name: float(bg_nbd.params_[name]) for name in BG_NBD_PARAMS},
            # lifetimes calls the Gamma-Gamma scale v; revopt and the truth call it gamma.
            "gamma_gamma": {"p": float(params["p"]), "q": float(params["q"]), "gamma": float(params["v"])}}


def child_floor(folder: Path, memory_limit: str) -> dict:
    """Time the least work that an end-to-end job with revopt's checks does: DuckDB passes, fits, predictions.

    The passes run in an in-memory database and write no file. A hash of every column is grouped to
    find exact duplicate rows. The kept lines drop closed orders and every copy of a repeated row,
    and no text is trimmed. Then come the daily purchases with their distinct orders, the customer
    summary, and the compressed (frequency, recency, T) and (frequency, mean spend) rows. BG/NBD and
    Gamma-Gamma are fitted on those rows, and P(alive), expected purchases and CLV are computed once
    per distinct history. The rejected rows, KPIs and cohorts, segments, intervals, the join back to customers
    and every output file come on top of this time.
    """
    import duckdb
    import numpy as np

    from revopt.ingest.clean import CANCELLED_STATUSES
    from revopt.models import BetaGeoModel, GammaGammaModel, customer_lifetime_value

    base = peak_mib()
    start = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{memory_limit}'")
    parts = str(folder / "orders" / "*.parquet").replace("'", "''")
    con.execute(f"CREATE VIEW raw AS SELECT * FROM read_parquet('{parts}')")
    every_column = ", ".join(f'"{row[0]}"' for row in con.execute("DESCRIBE raw").fetchall())
    closed = ", ".join("'" + status.replace("'", "''") + "'" for status in sorted(CANCELLED_STATUSES))
    con.execute(f"CREATE TABLE repeated AS SELECT h FROM (SELECT hash({every_column}) AS h, count(*) AS n FROM raw "
                "GROUP BY h) WHERE n > 1")
    con.execute(f'CREATE TABLE lines AS SELECT "{MEMBER}" AS customer_id, "{ORDER_ID}" AS order_id, '
                f'CAST("{ORDER_TIME}" AS DATE) AS order_date, "{PAID}" AS amount, "{PAID}" < 0 AS is_return '
                f'FROM raw WHERE lower("{STATUS}") NOT IN ({closed}) '
                f"AND hash({every_column}) NOT IN (SELECT h FROM repeated)")
    con.execute("CREATE TABLE purchases AS SELECT customer_id, order_date, sum(amount) AS amount, "
                "count(DISTINCT order_id) FILTER (WHERE NOT is_return) AS orders FROM lines "
                "WHERE customer_id IS NOT NULL GROUP BY customer_id, order_date "
                "HAVING count(*) FILTER (WHERE NOT is_return) > 0")
    con.execute("CREATE TABLE summary AS SELECT customer_id, min(order_date) AS first_day, max(order_date) AS last_day, "
                "count(*) - 1 AS frequency, sum(amount) AS revenue, arg_min(amount, order_date) AS first_amount "
                "FROM purchases GROUP BY customer_id")
    histories = con.execute("SELECT frequency, last_day - first_day AS recency, (SELECT max(last_day) FROM summary) - "
                            "first_day AS T, count(*) AS n FROM summary GROUP BY ALL").fetchnumpy()
    spend = con.execute("SELECT frequency, (revenue - first_amount) / frequency AS mean_spend, count(*) AS n "
                        "FROM summary WHERE frequency > 0 AND revenue > first_amount GROUP BY ALL").fetchnumpy()
    x, t_x, T = (histories[name].astype(float) for name in ("frequency", "recency", "T"))
    t_x, T = t_x / DAYS_PER_WEEK, T / DAYS_PER_WEEK
    bg_nbd = BetaGeoModel().fit(x, t_x, T, weights=histories["n"])
    gamma_gamma = GammaGammaModel().fit(spend["frequency"], spend["mean_spend"], weights=spend["n"])
    # Predictions once per distinct history, with the population's mean spend; not joined back to customers.
    alive = bg_nbd.probability_alive(x, t_x, T)
    expected = bg_nbd.expected_purchases(HORIZON_WEEKS, x, t_x, T)
    clv = customer_lifetime_value(bg_nbd, gamma_gamma.expected_average_value(np.zeros(1), np.zeros(1)), x, t_x, T,
                                  horizon=HORIZON_WEEKS, discount_rate=ANNUAL_DISCOUNT_RATE, time_unit="week")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "base_mib": base, "peak_mib": peak_mib(), "distinct_histories": int(x.size),
            "customers": int(histories["n"].sum()), "predicted": int(alive.size + expected.size + clv.size)}


def run_child(arguments: list[str]) -> dict:
    completed = subprocess.run([sys.executable, __file__, "--child", *arguments], capture_output=True, text=True,
                               check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"child {arguments} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def print_sizes(results: list[dict], repeats: int, memory_limit: str) -> None:
    print(f"\nmedian of {repeats} runs per cell; peak resident memory (VmHWM) of each subprocess; revopt's "
          f"memory limit {memory_limit}; l = lifetimes, so 'l s / core s' above 1 means revopt is faster and "
          f"'core MiB / l' below 1 means it uses less memory")
    header = (f"{'lines':>11}{'customers':>11}{'core s':>9}{'core MiB':>10}{'full s':>9}{'full MiB':>10}"
              f"{'lifetimes s':>13}{'lifetimes MiB':>15}{'l s / core s':>14}{'core MiB / l':>14}")
    print(header)
    for result in results:
        core, lifetimes, full = result["core"], result["lifetimes"], result["full"]
        full_cells = (f"{median(full, 'seconds'):>9.1f}{median(full, 'peak_mib'):>10.0f}" if full
                      else f"{'-':>9}{'-':>10}")
        peer_cells = (f"{median(lifetimes, 'seconds'):>13.1f}{median(lifetimes, 'peak_mib'):>15.0f}"
                      f"{median(lifetimes, 'seconds') / median(core, 'seconds'):>14.2f}"
                      f"{median(core, 'peak_mib') / median(lifetimes, 'peak_mib'):>14.2f}" if lifetimes
                      else f"{'-':>13}{'-':>15}{'-':>14}{'-':>14}")
        print(f"{result['truth']['rows']:>11,}{result['truth']['n_customers']:>11,}"
              f"{median(core, 'seconds'):>9.1f}{median(core, 'peak_mib'):>10.0f}{full_cells}{peer_cells}")
    for result in results:
        if not result["lifetimes"]:
            continue
        core, lifetimes = result["core"][-1], result["lifetimes"][-1]
        print(f"{result['truth']['n_customers']:,} customers: customer purchase days revopt {core['purchases']:,}, "
              f"lifetimes {lifetimes['purchases']:,}; customers revopt {core['customers']:,}, "
              f"lifetimes {lifetimes['customers']:,}; base MiB after imports core "
              f"{median(result['core'], 'base_mib'):.0f}, lifetimes {median(result['lifetimes'], 'base_mib'):.0f}")


def print_stages(results: list[dict], kind: str) -> None:
    """Print each stage of revopt's ``kind`` runs (core or full) as median seconds and share, one column per size."""
    print(f"\nrevopt {kind} stages: median seconds (share of the analyze call); other = outside the timed stages")
    stages = list(dict.fromkeys(stage for result in results for run in result[kind] for stage in run["timings"]))
    print(f"{'stage':<13}" + "".join(f"{result['truth']['n_customers']:>16,}" for result in results))
    for stage in (*stages, "other", "total"):
        cells = []
        for result in results:
            runs, total = result[kind], median(result[kind], "seconds")
            if stage == "total":
                seconds = [run["seconds"] for run in runs]
            elif stage == "other":
                seconds = [run["seconds"] - sum(run["timings"].values()) for run in runs]
            else:
                seconds = [run["timings"][stage] for run in runs if stage in run["timings"]]
            value = statistics.median(seconds) if seconds else None
            cells.append("-" if value is None else f"{value:.2f} ({value / total:.0%})")
        print(f"{stage:<13}" + "".join(f"{cell:>16}" for cell in cells))


def print_parameters(results: list[dict]) -> None:
    print("\nestimates against truth.json (time unit week); relative error in brackets, revopt standard error after +-")
    print(f"{'customers':>11}{'param':>7}{'truth':>9}{'revopt':>28}{'lifetimes':>21}")
    for result in results:
        truth = result["truth"]["parameters"]
        core = result["core"][-1]
        lifetimes = result["lifetimes"][-1] if result["lifetimes"] else None
        for model, names in (("bg_nbd", BG_NBD_PARAMS), ("gamma_gamma", GAMMA_GAMMA_PARAMS)):
            for name in names:
                ours, se = core[model][name], core[f"{model}_se"][name]
                se_text = "nan" if se is None else f"{se:.4f}"
                theirs = (f"{lifetimes[model][name]:>12.4f} ({lifetimes[model][name] / truth[name] - 1:>+6.1%})"
                          if lifetimes else f"{'-':>21}")
                print(f"{result['truth']['n_customers']:>11,}{name:>7}{truth[name]:>9.3f}"
                      f"{ours:>9.4f} +-{se_text:>7} ({ours / truth[name] - 1:>+6.1%}){theirs}")


def print_floor(results: list[dict]) -> None:
    """Print the engine floor beside revopt and lifetimes: the largest time ratio any job doing those passes could reach."""
    results = [result for result in results if result["floor"]]
    if not results:
        return
    print("\nengine floor: DuckDB alone, in memory, on the passes every end-to-end run needs, then both fits and the "
          "predictions (see child_floor); lifetimes / floor bounds the time ratio any such job can reach on this machine")
    print(f"{'lines':>13}{'floor s':>9}{'floor MiB':>11}{'core / floor':>14}{'lifetimes / floor':>19}")
    for result in results:
        floor = median(result["floor"], "seconds")
        peer = (f"{median(result['lifetimes'], 'seconds') / floor:>19.2f}" if result["lifetimes"] else f"{'-':>19}")
        print(f"{result['truth']['rows']:>13,}{floor:>9.1f}{median(result['floor'], 'peak_mib'):>11.0f}"
              f"{median(result['core'], 'seconds') / floor:>14.2f}{peer}")


def measure(folder: Path, truth: dict, args: argparse.Namespace) -> dict:
    result = {"truth": truth, "core": [], "full": [], "lifetimes": [], "floor": []}
    with_peer = truth["n_customers"] <= args.peer_max_customers
    for _ in range(args.repeats):
        result["core"].append(run_child(["revopt", str(folder), "core", args.memory_limit]))
        if args.full:
            result["full"].append(run_child(["revopt", str(folder), "full", args.memory_limit]))
        if with_peer:
            result["lifetimes"].append(run_child(["lifetimes", str(folder)]))
        if args.floor:
            result["floor"].append(run_child(["floor", str(folder), args.memory_limit]))
    return result


def print_growth(results: list[dict], kind: str) -> None:
    """Print seconds per million lines at each size, and time growth against line growth from the smallest size."""
    results = [result for result in results if result[kind]]
    if len(results) < 2:
        return
    first = results[0]
    print(f"\nrevopt {kind}: growth against the smallest log (time grows no faster than the input when the last "
          "column is at most 1)")
    print(f"{'lines':>13}{'seconds':>10}{'s per M lines':>15}{'lines x':>9}{'time x':>9}{'time x / lines x':>18}")
    for result in results:
        lines_ratio = result["truth"]["rows"] / first["truth"]["rows"]
        time_ratio = median(result[kind], "seconds") / median(first[kind], "seconds")
        print(f"{result['truth']['rows']:>13,}{median(result[kind], 'seconds'):>10.1f}"
              f"{median(result[kind], 'seconds') / result['truth']['rows'] * 1e6:>15.2f}"
              f"{lines_ratio:>9.1f}{time_ratio:>9.1f}{time_ratio / lines_ratio:>18.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", default="100000",
                        help="comma-separated customer counts, one log each (about 10 order lines per customer)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the median is reported")
    parser.add_argument("--full", action="store_true", help="also measure analyze with growth=True")
    parser.add_argument("--seed", type=int, default=2025, help="seed of the generated logs")
    parser.add_argument("--work", type=Path,
                        help="folder for the logs and outputs, kept and reused per size and seed (default: a temporary "
                             "folder, removed at the end)")
    parser.add_argument("--peer-max-customers", type=int, default=1_000_000,
                        help="run lifetimes only on logs of at most this many customers; its memory grows with every "
                             "line, so 10 million customers would not fit this machine (default 1,000,000)")
    parser.add_argument("--memory-limit", default=None,
                        help="DuckDB memory limit of the revopt runs, as analyze's --memory-limit (default: revopt's "
                             "default, 4GB); DuckDB spills to disk above it")
    parser.add_argument("--floor", action="store_true",
                        help="also time the engine floor: the DuckDB passes alone that any end-to-end job with "
                             "revopt's checks runs (child_floor)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, *rest = args.child
        if kind == "revopt":
            result = child_revopt(Path(rest[0]), growth=rest[1] == "full", memory_limit=rest[2])
        elif kind == "floor":
            result = child_floor(Path(rest[0]), memory_limit=rest[1])
        else:
            result = child_lifetimes(Path(rest[0]))
        print(json.dumps(result))
        return

    from revopt.workspace import DEFAULT_MEMORY_LIMIT

    args.memory_limit = args.memory_limit or DEFAULT_MEMORY_LIMIT
    sizes = [int(value) for value in args.customers.split(",")]
    if min(sizes) <= args.peer_max_customers:
        try:
            import lifetimes  # noqa: F401  (the peer; only its presence is checked here)
        except ImportError:
            sys.exit("lifetimes is not installed: install the test extras (the README's test command does), or pass "
                     "--peer-max-customers 0 to measure revopt alone")
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        results = []
        for n_customers in sizes:
            folder, truth, written = scale_log(work, n_customers, args.seed)
            state = "reused" if written is None else f"written in {written:.1f} s"
            print(f"{n_customers:,} customers, {truth['rows']:,} lines: {folder} ({state})", flush=True)
            results.append(measure(folder, truth, args))
    print_sizes(results, args.repeats, args.memory_limit)
    print_stages(results, "core")
    print_growth(results, "core")
    if args.full:
        print_stages(results, "full")
        print_growth(results, "full")
    print_floor(results)
    print_parameters(results)


if __name__ == "__main__":
    main()
