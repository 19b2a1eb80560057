"""The workspace: a folder holding revopt's DuckDB file and staging copies of input files."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import re
import socket
import urllib.parse
from pathlib import Path

import ibis

from revopt.errors import ConfigError

__all__ = ["DATABASE_NAME", "DEFAULT_MEMORY_LIMIT", "check_memory_limit", "open_workspace", "connect_backend",
           "masked_url"]

log = logging.getLogger(__name__)

DATABASE_NAME = "revopt.duckdb"
# DuckDB spills to disk above this; a documented setting rather than a fraction of whatever machine runs it.
DEFAULT_MEMORY_LIMIT = "4GB"


_MEMORY_LIMIT_PATTERN = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)


def check_memory_limit(memory_limit: str) -> None:
    """Raise ConfigError unless ``memory_limit`` is an amount DuckDB accepts, such as ``500MB`` or ``4GB``."""
    if not isinstance(memory_limit, str) or not _MEMORY_LIMIT_PATTERN.match(memory_limit):
        raise ConfigError(message_id="errors.bad_memory_limit", value=repr(memory_limit))


def open_workspace(path: Path, *, memory_limit: str = DEFAULT_MEMORY_LIMIT):
    """Create ``path`` if needed and connect to the DuckDB file in it; returns an Ibis DuckDB backend.

    Raises
    ------
    ConfigError
        If ``memory_limit`` is not an amount (checked before anything is created) or ``path``
        cannot be created.
    """
    check_memory_limit(memory_limit)
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
    """Connect to the Ibis backend that ``url`` names; returns an Ibis backend.

    Spark is reached through PySpark's ``SparkSession.builder``, because ``ibis.connect`` in ibis
    12.0.0 cannot connect to a Spark master URL or to Spark Connect:

    - a Spark master URL runs on that master: ``local[N]`` (N threads on this machine),
      ``spark://HOST:PORT`` (a standalone cluster), or another master that Spark accepts, such as
      ``yarn`` or ``k8s://https://HOST:PORT``;
    - ``pyspark://`` runs on Spark's default master: ``local[*]`` unless ``spark-defaults.conf`` or
      ``PYSPARK_SUBMIT_ARGS`` sets ``spark.master``;
    - ``sc://HOST:PORT`` connects to a Spark Connect server. Its parameters follow Spark Connect's
      own syntax (``sc://HOST:PORT/;token=...``) and need the ``pyspark[connect]`` extra.

    A master URL or ``pyspark://`` may end with Spark settings as a query, for example
    ``spark://HOST:7077?spark.executor.memory=4g``. Any other URL, such as
    ``postgres://user@host/db``, goes to ``ibis.connect``.

    Raises
    ------
    ConfigError
        If the URL is malformed, the connection fails, a Spark session on another master is
        already running in this process, or the Spark Connect packages are missing.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "spark" and not url.partition("://")[2].partition("?")[0]:
        raise ConfigError(message_id="errors.backend_failed", url=repr(masked_url(url)),
                          detail="spark:// needs the master's HOST:PORT, for example spark://spark-master:7077")
    if scheme == SPARK_CONNECT_SCHEME:
        return _connect_spark_connect(url)
    if scheme == "pyspark" or _SPARK_MASTER_PATTERN.match(url.partition("?")[0]):
        return _connect_spark_master(url)
    try:
        return ibis.connect(url)
    except Exception as error:  # each backend raises its own classes for a bad URL or a refused connection
        raise ConfigError(message_id="errors.backend_failed", url=repr(masked_url(url)), detail=error) from error


SPARK_CONNECT_SCHEME = "sc"
# The PySpark version that the test extra pins; the install hint names it when PySpark is missing.
TESTED_PYSPARK_VERSION = "4.0.1"
# Master URLs handed to SparkSession.builder.master: local, local[N], local[*], local[N,F] (F task
# retries), and the cluster managers' URLs.
_SPARK_MASTER_PATTERN = re.compile(r"^(local(\[(\d+|\*)(,\d+)?\])?|yarn|spark://.+|k8s://.+)$")
# Module -> the pip package that provides it, for the Spark Connect client of PySpark 4.0.
_SPARK_CONNECT_MODULES = {"grpc": "grpcio", "grpc_status": "grpcio-status", "google.rpc": "googleapis-common-protos"}


def _connect_spark_master(url: str):
    """Build a classic SparkSession on the master that ``url`` names (none for ``pyspark://``)."""
    location, _, query = url.partition("?")
    default_master = location.lower().startswith("pyspark://")
    if default_master and location.lower() != "pyspark://":
        raise ConfigError(message_id="errors.backend_failed", url=repr(masked_url(url)),
                          detail="pyspark:// takes no host or path; use spark://HOST:PORT for a cluster")
    master = None if default_master else location
    settings = _spark_settings(url, query)
    if master is not None and master.startswith("local"):
        # Local mode has no executors on other machines, so the driver listens on loopback only.
        settings = {"spark.driver.bindAddress": "127.0.0.1", "spark.driver.host": "127.0.0.1"} | settings
        # Spark picks its local address when the JVM starts, before the settings apply. The variable keeps
        # that choice on loopback too, so Spark does not warn that it uses the network interface.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    try:
        from pyspark.sql import SparkSession

        builder = SparkSession.builder
        if master is not None:
            builder = builder.master(master)
        for key, value in settings.items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
    except Exception as error:  # no Java, a refused master, py4j and Spark errors
        raise ConfigError(message_id="errors.backend_failed", url=repr(masked_url(url)), detail=error) from error
    running = session.sparkContext.master
    # getOrCreate returns a session already running in this process, whatever master was requested.
    if master is not None and running != master:
        raise ConfigError(message_id="errors.backend_failed", url=repr(masked_url(url)),
                          detail=f"a Spark session on master {running} is already running in this process; "
                                 "stop it first or pass that master")
    return _ibis_on_spark(session, url)


def _connect_spark_connect(url: str):
    """Build a Spark Connect session on the server that ``url`` names."""
    missing = [package for module, package in _SPARK_CONNECT_MODULES.items() if not _importable(module)]
    if not _importable("pyspark"):
        missing.insert(0, "pyspark")
    if missing:
        raise _spark_connect_packages_error(url, ", ".join(missing))
    # The Spark Connect client retries an unreachable server without end, so the address is tried first.
    _check_reachable(url)
    try:
        from pyspark.sql import SparkSession

        session = SparkSession.builder.remote(url).getOrCreate()
    except ImportError as error:  # a client package older than PySpark requires
        raise _spark_connect_packages_error(url, str(error)) from error
    except Exception as error:
        raise ConfigError(message_id="errors.backend_failed", url=repr(masked_url(url)), detail=error) from error
    return _ibis_on_spark(session, url)


# Seconds to wait for a Spark Connect server to accept a TCP connection before giving up.
CONNECT_TIMEOUT_SECONDS = 10
SPARK_CONNECT_DEFAULT_PORT = 15002


def _check_reachable(url: str) -> None:
    """Raise ConfigError unless the host and port of an ``sc://`` URL accept a TCP connection."""
    location = urllib.parse.urlsplit(url.split(";")[0].rstrip("/"))
    host = location.hostname
    try:
        port = location.port or SPARK_CONNECT_DEFAULT_PORT
    except ValueError:
        port = None
    if not host or port is None:
        raise ConfigError(message_id="errors.backend_failed", url=repr(masked_url(url)),
                          detail="Spark Connect URLs name a host and port, for example sc://HOST:15002")
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS):
            pass
    except OSError as error:
        raise ConfigError(message_id="errors.backend_failed", url=repr(masked_url(url)),
                          detail=f"no Spark Connect server answers at {host}:{port} ({error})") from error


def _ibis_on_spark(session, url: str):
    try:
        return ibis.pyspark.connect(session)
    except Exception as error:  # the first call that reaches the cluster or server
        raise ConfigError(message_id="errors.backend_failed", url=repr(masked_url(url)), detail=error) from error


def _spark_settings(url: str, query: str) -> dict[str, str]:
    """Parse ``spark.key=value&...`` after the ``?`` of a Spark URL."""
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as error:
        raise ConfigError(message_id="errors.backend_failed", url=repr(masked_url(url)), detail=error) from error
    unknown = [key for key, _ in pairs if not key.startswith("spark.")]
    if unknown:
        raise ConfigError(message_id="errors.backend_failed", url=repr(masked_url(url)),
                          detail=f"{', '.join(unknown)}: not a Spark setting, which starts with spark.")
    return dict(pairs)


def _spark_connect_packages_error(url: str, packages: str) -> ConfigError:
    try:
        version = importlib.metadata.version("pyspark")
    except importlib.metadata.PackageNotFoundError:
        version = TESTED_PYSPARK_VERSION
    return ConfigError(message_id="errors.spark_connect_packages", url=repr(masked_url(url)), packages=packages,
                       version=version)


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def masked_url(url: str) -> str:
    """Hide the password of ``user:password@host`` and Spark Connect's ``token=`` in ``url``."""
    url = re.sub(r"(://[^/@:]*:)[^/]*@", r"\1***@", url)
    return re.sub(r"(?i)(token=)[^;&]*", r"\1***", url)
