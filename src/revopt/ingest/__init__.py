"""Read order exports (CSV, TSV, whitespace text, .xlsx, Parquet; a folder or glob of them) into clean tables.

``load_orders`` stages every file in the workspace's DuckDB as text, recognises the columns,
parses dates and amounts in SQL, and returns Ibis tables of clean lines, per-customer daily
purchases and rejected rows, with the counts the log and the report show.
"""

from __future__ import annotations

import logging
from pathlib import Path

from revopt.errors import ColumnMappingError
from revopt.ingest.clean import (CANCELLED_STATUSES, CORE_LINE_COLUMNS, DUPLICATE_MODES, LINE_COLUMNS, CleanTables,
                                 build_raw, clean_orders, count_lines, daily_purchases)
from revopt.ingest.columns import FIELDS, ColumnMapping, parse_map_options, resolve_columns
from revopt.ingest.files import StagedFile, discover_files, merge_parquet_views, stage_file

__all__ = [
    "CANCELLED_STATUSES",
    "CORE_LINE_COLUMNS",
    "DUPLICATE_MODES",
    "FIELDS",
    "LINE_COLUMNS",
    "CleanTables",
    "ColumnMapping",
    "StagedFile",
    "count_lines",
    "daily_purchases",
    "discover_files",
    "load_orders",
    "parse_map_options",
]

log = logging.getLogger(__name__)


def load_orders(
    orders: str | Path,
    *,
    con,
    staging_dir: Path,
    column_map: list[str] | None = None,
    dayfirst: bool | None = None,
    date_format: str | None = None,
    tz: str | None = None,
    duplicates: str = "auto",
    max_invalid_share: float = 0.01,
    require_amount: bool = True,
    table_prefix: str = "",
    line_columns: tuple[str, ...] = LINE_COLUMNS,
) -> tuple[CleanTables, list[StagedFile], ColumnMapping]:
    """Read ``orders`` into clean Ibis tables in ``con`` (a DuckDB connection).

    Parameters
    ----------
    orders : str or Path
        A file, a folder (every supported file in it) or a glob pattern; all files must hold the same fields.
    con : ibis DuckDB backend
        The workspace connection; staged and clean tables are created in it.
    staging_dir : Path
        Folder for UTF-8 copies of files in other encodings.
    column_map : list of str, optional
        ``COLUMN=FIELD`` overrides, by header name or 1-based position.
    dayfirst : bool, optional
        Resolve dates such as 03/04/2024 as day-first (True) or month-first (False).
    date_format : str, optional
        An explicit ``strptime`` format for the date column.
    tz : str, optional
        Business time zone; times carrying a UTC offset are converted to it before the day is taken.
    duplicates : {"auto", "drop", "keep"}
        Exact duplicate rows: "auto" drops them when rows carry an order id.
    max_invalid_share : float
        Largest share of dates or amounts that may fail to parse (those rows are rejected); above it the run stops.
    require_amount : bool
        False accepts files without an amount (baskets for recommendations); their amounts are null.
    table_prefix : str
        Prefix of the workspace tables this call creates, so that a load beside stored tables
        (see :mod:`revopt.store`) replaces none of them.
    line_columns : tuple of str, default LINE_COLUMNS
        Columns of the clean lines table. A run that reads fewer, such as ``analyze`` without the
        growth step (:data:`CORE_LINE_COLUMNS`), writes fewer.

    Returns
    -------
    (CleanTables, list of StagedFile, ColumnMapping)
    """
    overrides = parse_map_options(column_map)
    files = discover_files(orders)
    staging_dir.mkdir(parents=True, exist_ok=True)

    staged: list[StagedFile] = []
    mappings: list[ColumnMapping] = []
    for index, path in enumerate(files):
        file = stage_file(con, path, f"{table_prefix}staged_{index}", staging_dir)
        mapping = resolve_columns(file.headers, overrides, source=str(path), require_amount=require_amount)
        if mappings and set(mapping.columns) != set(mappings[0].columns):
            raise ColumnMappingError(message_id="errors.files_differ", path=path, fields=", ".join(sorted(mapping.columns)),
                                     first_path=files[0], first_fields=", ".join(sorted(mappings[0].columns)))
        log.info("event=staged file=%s rows=%d encoding=%s header=%s columns=%s", path, file.rows, file.encoding,
                 file.has_header, mapping.columns)
        staged.append(file)
        mappings.append(mapping)

    mapping = mappings[0]
    # Every file maps to the same fields (checked above), so merged Parquet files share the first mapping.
    scans = merge_parquet_views(con, staged, f"{table_prefix}staged_parquet")
    raw = build_raw(scans, [mapping if file.paths else mappings[files.index(file.path)] for file in scans], con)
    tables = clean_orders(
        raw,
        con=con,
        has_order_id=mapping.has("order_id"),
        amount_from_lines=not mapping.has("amount"),
        column_labels=dict(mapping.columns),
        dayfirst=dayfirst,
        date_format=date_format,
        tz=tz,
        duplicates=duplicates,
        max_invalid_share=max_invalid_share,
        table_prefix=table_prefix,
        source=", ".join(path.name for path in files),
        line_columns=line_columns,
    )
    tables.stats["files"] = [str(path) for path in files]
    tables.stats["columns"] = dict(mapping.columns)
    return tables, staged, mapping
