"""The workspace: a folder holding revopt's DuckDB file and staging copies of input files."""

from __future__ import annotations

import logging
from pathlib import Path

import ibis

from revopt.errors import ConfigError

__all__ = ["DATABASE_NAME", "DEFAULT_MEMORY_LIMIT", "open_workspace", "connect_backend"]

log = logging.getLogger(__name__)

DATABASE_NAME = "revopt.duckdb"
# DuckDB spills to disk above this; a documented setting rather than a fraction of whatever machine runs it.
DEFAULT_MEMORY_LIMIT = "4GB"


def open_workspace(path: Path, *, memory_limit: str = DEFAULT_MEMORY_LIMIT):
    """Create ``path`` if needed and connect to the DuckDB file in it; returns an Ibis DuckDB backend."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(message_id="errors.bad_workspace", path=path, detail=error.strerror or error) from error
    (path / "staging").mkdir(exist_ok=True)
    con = ibis.duckdb.connect(str(path / DATABASE_NAME))
    con.raw_sql(f"SET memory_limit = '{memory_limit}'")
    con.raw_sql(f"SET temp_directory = '{path / 'spill'}'")
    # DuckDB draws a progress bar on stdout for long queries; the CLI prints its own steps.
    con.raw_sql("SET enable_progress_bar = false")
    log.info("event=workspace_opened path=%s memory_limit=%s", path, memory_limit)
    return con


def connect_backend(url: str):
    """Connect to another Ibis backend by URL, for example ``pyspark://`` or ``postgres://user@host/db``."""
    try:
        return ibis.connect(url)
    except Exception as error:  # each backend raises its own classes for a bad URL or a refused connection
        raise ConfigError(message_id="errors.backend_failed", url=repr(url), detail=error) from error
