"""Incremental loads: add each day's order file to a workspace without reading earlier files again.

``add_orders`` cleans a new file with the same rules as ``analyze`` (see :mod:`revopt.ingest`) and
appends its lines to the workspace's stored lines, skipping every line whose order id is already
stored, so adding the same file twice changes nothing. The engine then recomputes the stored
purchases of the customer days that gained lines, and only those. The first load's clean tables
become the stored ones. ``revopt analyze --workspace W`` without an orders file then runs on
everything stored.

NOTE: an order is loaded once. A later file that repeats an order id (a refund booked as a status
change, or the rest of an order split over two days) leaves the stored order as it was.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import ibis

from revopt.errors import InputError
from revopt.ingest import CleanTables, count_lines, daily_purchases, load_orders
from revopt.workspace import DEFAULT_MEMORY_LIMIT, open_workspace

__all__ = ["LoadReport", "STORE_TABLES", "add_orders", "stored_tables"]

log = logging.getLogger(__name__)

STORE_TABLES = {"lines": "store_lines", "rejected": "store_rejected", "purchases": "store_purchases",
                "loads": "store_loads"}
_INCOMING_PREFIX = "incoming_"


@dataclass(frozen=True)
class LoadReport:
    """Counts of one ``add_orders`` call: rows read, lines and orders added or skipped, and the totals stored."""

    files: tuple[str, ...]
    rows_read: int
    lines_added: int
    orders_added: int
    lines_skipped: int
    orders_skipped: int
    rows_rejected: int
    stored_lines: int
    stored_orders: int


def add_orders(orders: str | Path, workspace: str | Path, *, memory_limit: str = DEFAULT_MEMORY_LIMIT,
               **ingest_options) -> LoadReport:
    """Clean ``orders`` and append its lines with new order ids to the workspace's stored lines.

    Parameters
    ----------
    orders : str or Path
        A file, folder or glob, as for :func:`revopt.ingest.load_orders`.
    workspace : str or Path
        The workspace folder; created on the first load.
    memory_limit : str
        DuckDB's memory limit.
    **ingest_options
        ``column_map``, ``dayfirst``, ``date_format``, ``tz``, ``duplicates``, ``max_invalid_share``
        as for :func:`revopt.ingest.load_orders`.

    Returns
    -------
    LoadReport
        Lines and orders added, and those skipped because their order id was already stored.
    """
    workspace = Path(workspace)
    con = open_workspace(workspace, memory_limit=memory_limit)
    tables, _, _ = load_orders(orders, con=con, staging_dir=workspace / "staging", table_prefix=_INCOMING_PREFIX,
                               **ingest_options)
    incoming = tables.lines
    names = _table_names(con)
    if STORE_TABLES["lines"] in names:
        stored = con.table(STORE_TABLES["lines"])
        known = stored.select("order_id").distinct()
        new = incoming.anti_join(known, "order_id")
    else:
        new = incoming
    counts = _order_counts(incoming, new)
    if STORE_TABLES["lines"] in names:
        # The customer days the new lines fall on, kept before the insert makes their orders known.
        touched = f"{_INCOMING_PREFIX}touched_days"
        con.create_table(touched, new.filter(new.customer_id.notnull()).select("customer_id", "order_date").distinct())
        con.insert(STORE_TABLES["lines"], new)
        _update_purchases(con, touched)
        # A rejected row has no order to key on; the same file and row loaded again is the same row.
        seen = con.table(STORE_TABLES["rejected"]).select("source_file", "source_row")
        rejected = tables.rejected.anti_join(seen, ["source_file", "source_row"])
        con.insert(STORE_TABLES["rejected"], rejected.mutate(loaded_at=ibis.literal(_now())))
    else:
        # The first load's clean lines and purchases become the stored ones as they are, without a copy.
        # NOTE: ibis 12.0.0's DuckDB backend has no rename_table, so the renames are SQL.
        for name in ("lines", "purchases"):
            con.raw_sql(f'ALTER TABLE "{_INCOMING_PREFIX}{name}" RENAME TO "{STORE_TABLES[name]}"')
        con.create_table(STORE_TABLES["rejected"], tables.rejected.mutate(loaded_at=ibis.literal(_now())))
    lines = con.table(STORE_TABLES["lines"])
    for name in [name for name in _table_names(con) if name.startswith(_INCOMING_PREFIX)]:
        con.drop_table(name)

    stored = lines.aggregate(lines=lines.count(), orders=lines.order_id.nunique()).to_pandas().iloc[0]
    report = LoadReport(
        files=tuple(tables.stats["files"]), rows_read=int(tables.stats["rows_read"]),
        lines_added=counts["lines_added"], orders_added=counts["orders_added"],
        lines_skipped=counts["lines_in"] - counts["lines_added"],
        orders_skipped=counts["orders_in"] - counts["orders_added"],
        rows_rejected=int(tables.stats["rows_rejected"]), stored_lines=int(stored.lines),
        stored_orders=int(stored.orders),
    )
    _record_load(con, report)
    log.info("event=orders_added files=%s lines_added=%d orders_added=%d lines_skipped=%d orders_skipped=%d "
             "reason_skipped=order id already in the workspace stored_lines=%d", ",".join(report.files),
             report.lines_added, report.orders_added, report.lines_skipped, report.orders_skipped,
             report.stored_lines)
    return report


def _update_purchases(con, touched: str) -> None:
    """Recompute the stored purchases of the customer days in table ``touched`` from the stored lines; keep the rest.

    A purchase is a customer's day, so only the days that gained lines can change. A day that held
    only returns has no purchase until a new line lands on it, and then the returns count too.
    """
    lines = con.table(STORE_TABLES["lines"])
    fresh = daily_purchases(lines.semi_join(con.table(touched), ["customer_id", "order_date"]))
    purchases = STORE_TABLES["purchases"]
    con.raw_sql(f'DELETE FROM "{purchases}" USING "{touched}" AS touched '
                f'WHERE "{purchases}".customer_id = touched.customer_id '
                f'AND "{purchases}".order_date = touched.order_date')
    con.insert(purchases, fresh)


def _table_names(con) -> set[str]:
    """Names of the workspace's tables.

    NOTE: ibis 12.0.0's ``list_tables`` calls a DuckDB method that duckdb 2.0.1 no longer has, so the
    catalog is read with SQL.
    """
    return {row[0] for row in con.raw_sql("SELECT table_name FROM duckdb_tables()").fetchall()}


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def _order_counts(incoming: ibis.Table, new: ibis.Table) -> dict[str, int]:
    before = incoming.aggregate(lines_in=incoming.count(), orders_in=incoming.order_id.nunique()).to_pandas()
    after = new.aggregate(lines_added=new.count(), orders_added=new.order_id.nunique()).to_pandas()
    return {key: int(value) for key, value in {**before.iloc[0].to_dict(), **after.iloc[0].to_dict()}.items()}


def _record_load(con, report: LoadReport) -> None:
    """Append one row per load to the workspace's load log table."""
    row = ibis.memtable({
        "loaded_at": [_now()], "files": [", ".join(report.files)], "rows_read": [report.rows_read],
        "lines_added": [report.lines_added], "lines_skipped": [report.lines_skipped],
        "orders_added": [report.orders_added], "orders_skipped": [report.orders_skipped],
    })
    if STORE_TABLES["loads"] in _table_names(con):
        con.insert(STORE_TABLES["loads"], row)
    else:
        con.create_table(STORE_TABLES["loads"], row)


def stored_tables(con, workspace: Path) -> CleanTables:
    """Return the workspace's stored lines, purchases and rejected rows, with the counts ``analyze`` reports.

    Raises
    ------
    InputError
        If nothing was added to the workspace yet.
    """
    if STORE_TABLES["lines"] not in _table_names(con):
        raise InputError(message_id="errors.empty_workspace", workspace=workspace)
    lines = con.table(STORE_TABLES["lines"])
    purchases = con.table(STORE_TABLES["purchases"])
    rejected = con.table(STORE_TABLES["rejected"]).drop("loaded_at")
    loads = con.table(STORE_TABLES["loads"]).to_pandas()
    reasons = rejected.group_by("reason").aggregate(n=rejected.count()).to_pandas()
    by_reason = {reason: int(n) for reason, n in zip(reasons.reason, reasons.n)}
    rows_rejected = int(sum(by_reason.values()))
    skipped = int(loads.lines_skipped.sum())
    counts = count_lines(lines, purchases)
    stats = {
        # The stored rows: a file loaded twice counts once, so read = kept + rejected as in a run on one file.
        "rows_read": counts["rows_kept"] + rows_rejected,
        "rows_loaded": int(loads.rows_read.sum()),
        "rows_rejected": rows_rejected,
        "rejected_by_reason": by_reason,
        "duplicates_dropped": by_reason.get("duplicate", 0),
        "cancelled_rows": by_reason.get("cancelled_status", 0),
        **counts,
        "lines_skipped_as_loaded": skipped,
        "files": [name for files in loads.files for name in files.split(", ")],
        "loads": len(loads),
    }
    return CleanTables(lines=lines, purchases=purchases, rejected=rejected, stats=stats, date_family="stored")
