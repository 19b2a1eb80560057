"""Benchmark: revopt's association rules versus mlxtend's apriori, and revopt's recommend() end to end.

Measures, each in its own Python subprocess so that peak memory (``ru_maxrss``) belongs to one step:

1. pair rules on Online Retail invoices (purchase lines of products, baskets of at most 100
   products, the same baskets for both) and on the arules Groceries baskets: revopt's
   :func:`~revopt.recommend.rules.association_rules` (Ibis on DuckDB, from a DuckDB table of
   basket lines) against mlxtend's ``apriori(max_len=2)`` followed by ``association_rules``
   (from the same basket lines, one-hot encoding included in its time);
2. ``recommend()`` on Online Retail with ``method="auto"``: the time-split evaluation of every
   method, the final fit and the top-10 lists for every customer (ingest not included).

Each run checks that both libraries return the same pair rules, with support, confidence and
lift equal to 1e-9. The script prints medians over the repeats and the peak resident memory
(VmHWM) of each subprocess. "base MiB" is the peak after imports and input loading, before the
step. Usage::

    .venv/bin/python benchmarks/bench_recommend.py [--repeats 3] [--datasets ../shared/datasets]
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
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
MAX_BASKET_ITEMS = 100
# (dataset, minimum support, mlxtend low_memory). mlxtend's default apriori (low_memory=False)
# builds a baskets x candidate-pairs array. On Online Retail at support 0.01 it needed about
# 10 GB and 41 s on a 2-core, 24 GiB machine, so the lower supports there use its low-memory mode.
CASES = (
    ("groceries", 0.01, False),
    ("groceries", 0.001, False),
    ("online_retail", 0.02, False),
    ("online_retail", 0.01, True),
    ("online_retail", 0.005, True),
    ("online_retail", 0.002, True),
)
TOLERANCE = 1e-9


def peak_mib() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux's VmHWM starts afresh at exec. ``ru_maxrss`` does not, so a child started by a large
    parent would report the parent's size; it is used only where /proc is missing.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------
# Inputs, written once by the parent so that both libraries read the same baskets
# ---------------------------------------------------------------------------------------


def write_baskets(datasets: Path, folder: Path) -> dict[str, Path]:
    import ibis

    from revopt.ingest import load_orders
    from revopt.recommend import purchase_lines

    paths = {}
    groceries = datasets / "groceries" / "groceries_baskets.csv"
    with groceries.open(encoding="utf-8") as handle:
        rows = [(str(index), item) for index, line in enumerate(handle) if line.strip()
                for item in line.rstrip("\n").split(",")]
    paths["groceries"] = folder / "groceries.parquet"
    pd.DataFrame(rows, columns=["basket_id", "product_id"]).drop_duplicates().to_parquet(paths["groceries"])

    tables, _, _ = load_orders(datasets / "online_retail" / "online_retail.csv.gz", con=ibis.duckdb.connect(),
                               staging_dir=folder / "staging")
    lines = purchase_lines(tables.lines).select("basket_id", "product_id").distinct()
    sizes = lines.group_by("basket_id").aggregate(size=lines.count())
    small_baskets = lines.semi_join(sizes.filter(sizes.size <= MAX_BASKET_ITEMS), "basket_id")
    paths["online_retail"] = folder / "online_retail.parquet"
    small_baskets.to_pandas().to_parquet(paths["online_retail"])
    return paths


# ---------------------------------------------------------------------------------------
# Child processes: one measured step each
# ---------------------------------------------------------------------------------------


def child_revopt(baskets_path: Path, min_support: float, output: Path) -> dict:
    import ibis

    from revopt.recommend import association_rules

    con = ibis.duckdb.connect()
    baskets = con.read_parquet(baskets_path, table_name="baskets")
    base = peak_mib()
    start = time.perf_counter()
    rules = association_rules(baskets, min_pair_count=1, min_support=min_support,
                              max_basket_items=MAX_BASKET_ITEMS)
    seconds = time.perf_counter() - start
    rules.table[["antecedent", "consequent", "support", "confidence", "lift"]].to_parquet(output)
    return {"seconds": seconds, "base_mib": base, "peak_mib": peak_mib(), "rules": len(rules.table),
            "baskets": rules.baskets}


def child_mlxtend(baskets_path: Path, min_support: float, low_memory: bool, output: Path) -> dict:
    from mlxtend.frequent_patterns import apriori, association_rules

    lines = pd.read_parquet(baskets_path)
    base = peak_mib()
    start = time.perf_counter()
    basket_codes, baskets = pd.factorize(lines.basket_id)
    item_codes, items = pd.factorize(lines.product_id)
    onehot = np.zeros((len(baskets), len(items)), dtype=bool)
    onehot[basket_codes, item_codes] = True
    # Built transposed so that frame.values is C-contiguous: apriori then ran about 10 times faster
    # on Online Retail than on the column-major array pd.DataFrame(onehot) gives.
    frame = pd.DataFrame(onehot.T, index=items.astype(str)).T
    frequent = apriori(frame, min_support=min_support, use_colnames=True, max_len=2, low_memory=low_memory)
    rules = association_rules(frequent, num_itemsets=len(baskets), metric="confidence", min_threshold=0.0)
    seconds = time.perf_counter() - start
    table = pd.DataFrame({
        "antecedent": rules.antecedents.map(lambda itemset: next(iter(itemset))),
        "consequent": rules.consequents.map(lambda itemset: next(iter(itemset))),
        "support": rules.support, "confidence": rules.confidence, "lift": rules.lift,
    })
    table.to_parquet(output)
    return {"seconds": seconds, "base_mib": base, "peak_mib": peak_mib(), "rules": len(table),
            "baskets": len(baskets)}


def child_recommend(datasets: Path, folder: Path) -> dict:
    import ibis

    from revopt.ingest import load_orders
    from revopt.recommend import recommend

    tables, _, _ = load_orders(datasets / "online_retail" / "online_retail.csv.gz", con=ibis.duckdb.connect(),
                               staging_dir=folder / "staging")
    tables.lines.count().execute()
    base = peak_mib()
    start = time.perf_counter()
    result = recommend(tables.lines, k=10)
    seconds = time.perf_counter() - start
    evaluation = result.evaluation
    return {"seconds": seconds, "base_mib": base, "peak_mib": peak_mib(), "method": result.method,
            "customers": int(result.items.customer_id.nunique()), "rows": len(result.items),
            "recall_at_10": {name: float(value) for name, value in evaluation["recall@10"].items()}}


def run_child(arguments: list[str]) -> dict:
    completed = subprocess.run([sys.executable, __file__, "--child", *arguments], capture_output=True, text=True,
                               check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"child {arguments} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# Comparison and report
# ---------------------------------------------------------------------------------------


def compare(ours_path: Path, theirs_path: Path) -> tuple[int, int, float]:
    """Return (rules only one side has, rules in both, largest absolute difference of a measure)."""
    ours = pd.read_parquet(ours_path)
    theirs = pd.read_parquet(theirs_path)
    merged = ours.merge(theirs, on=["antecedent", "consequent"], how="outer", suffixes=("", "_mlxtend"),
                        indicator=True)
    unmatched = int((merged["_merge"] != "both").sum())
    both = merged[merged["_merge"] == "both"]
    largest = 0.0
    for measure in ("support", "confidence", "lift"):
        if len(both):
            largest = max(largest, float((both[measure] - both[f"{measure}_mlxtend"]).abs().max()))
    return unmatched, len(both), largest


def median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS, help="folder of the shared datasets")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the median is reported")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, *rest = args.child
        if kind == "revopt":
            result = child_revopt(Path(rest[0]), float(rest[1]), Path(rest[2]))
        elif kind == "mlxtend":
            result = child_mlxtend(Path(rest[0]), float(rest[1]), rest[2] == "True", Path(rest[3]))
        else:
            result = child_recommend(Path(rest[0]), Path(rest[1]))
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        paths = write_baskets(args.datasets, folder)
        print(f"pair rules, median of {args.repeats} runs; peak and base resident memory per subprocess")
        header = (f"{'dataset':<19}{'support':>8}{'baskets':>8}{'rules':>8}{'revopt s':>10}{'mlxtend s':>10}"
                  f"{'revopt MiB':>11}{'mlxtend MiB':>12}{'base MiB r/m':>14}{'same rules':>11}{'max diff':>10}")
        print(header)
        for dataset, support, low_memory in CASES:
            ours_path, theirs_path = folder / "ours.parquet", folder / "theirs.parquet"
            ours = [run_child(["revopt", str(paths[dataset]), str(support), str(ours_path)])
                    for _ in range(args.repeats)]
            theirs = [run_child(["mlxtend", str(paths[dataset]), str(support), str(low_memory), str(theirs_path)])
                      for _ in range(args.repeats)]
            unmatched, matched, largest = compare(ours_path, theirs_path)
            same = "yes" if unmatched == 0 and largest <= TOLERANCE else f"no ({unmatched})"
            label = dataset + (" (lm)" if low_memory else "")
            print(f"{label:<19}{support:>8g}{ours[0]['baskets']:>8}{ours[0]['rules']:>8}"
                  f"{median(ours, 'seconds'):>10.3f}{median(theirs, 'seconds'):>10.3f}"
                  f"{median(ours, 'peak_mib'):>11.0f}{median(theirs, 'peak_mib'):>12.0f}"
                  f"{median(ours, 'base_mib'):>7.0f}/{median(theirs, 'base_mib'):<6.0f}{same:>11}{largest:>10.1e}")
        print("(lm): mlxtend apriori with low_memory=True")

        runs = [run_child(["recommend", str(args.datasets), str(folder)]) for _ in range(args.repeats)]
        last = runs[-1]
        print(f"recommend() on Online Retail, k=10, method auto: {median(runs, 'seconds'):.2f} s (median), "
              f"peak {median(runs, 'peak_mib'):.0f} MiB (base {median(runs, 'base_mib'):.0f} MiB after ingest); "
              f"chose {last['method']} for {last['customers']:,} customers ({last['rows']:,} rows)")
        print("recall@10 on the time split: " + ", ".join(f"{k} {v:.4f}" for k, v in last["recall_at_10"].items()))


if __name__ == "__main__":
    main()
