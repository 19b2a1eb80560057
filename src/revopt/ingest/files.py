"""Find the input files, detect encoding, delimiter and header, and stage each file in DuckDB.

Every cell of a text or Excel file is staged as VARCHAR exactly as exported, so identifiers keep
their leading zeros and a phone number never becomes a float; parsing into dates and amounts
happens later, in SQL, where a value that fails can be traced to its file and row. Parquet files
carry their own types and are read in place through a view.
"""

from __future__ import annotations

import codecs
import csv
import glob
import gzip
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import ibis
import pandas as pd

from revopt.errors import ConfigError, InputError
from revopt.ingest.columns import normalise_header, _SYNONYMS

__all__ = ["StagedFile", "discover_files", "merge_parquet_views", "stage_file"]

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".dat", ".tab")
EXCEL_SUFFIXES = (".xlsx", ".xlsm")
PARQUET_SUFFIXES = (".parquet", ".pq")
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + EXCEL_SUFFIXES + PARQUET_SUFFIXES

# Bytes read to detect the encoding, delimiter and header; enough for a few hundred rows.
SNIFF_BYTES = 256 * 1024
# Block size for transcoding non-UTF-8 files; bounds memory whatever the file size.
TRANSCODE_BLOCK_BYTES = 16 * 1024 * 1024
_DELIMITERS = ",\t;|"
_KNOWN_HEADERS = {synonym for groups in _SYNONYMS.values() for group in groups for synonym in group}
_NUMBER_PATTERN = re.compile(r"^[+-]?[\d,]*\.?\d+([eE][+-]?\d+)?$")
WHITESPACE = "whitespace"
# Files that ``revopt analyze`` writes; a folder given as input never reads them back as orders.
OUTPUT_NAMES = frozenset({"customers.csv", "customers.parquet", "rejected.csv"})


@dataclass(frozen=True)
class StagedFile:
    """One input file staged as a DuckDB table or view plus ``source_row`` (1-based line, sheet or file row).

    Columns of text and Excel files are text; those of Parquet files keep their types.
    """

    path: Path
    table: str
    headers: list[str]
    has_header: bool
    encoding: str
    delimiter: str | None
    rows: int
    # Parquet files read through one view: the view has a source_file column naming each row's file.
    paths: tuple[Path, ...] = ()


def discover_files(orders: str | Path) -> list[Path]:
    """Expand ``orders`` (a file, a folder or a glob pattern) into the list of supported files, sorted by name."""
    text = str(orders)
    path = Path(text)
    if path.is_dir():
        # revopt's own outputs are skipped, so that --out may point into the input folder.
        files = sorted(p for p in path.iterdir() if _suffix(p) in SUPPORTED_SUFFIXES and p.name not in OUTPUT_NAMES)
        where = text
    elif any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(text) if _suffix(Path(p)) in SUPPORTED_SUFFIXES)
        where = text
    elif path.is_file():
        if _suffix(path) not in SUPPORTED_SUFFIXES:
            raise InputError(message_id="errors.unsupported_type", path=text, suffix=_suffix(path) or "(none)",
                             supported=", ".join(SUPPORTED_SUFFIXES))
        return [path]
    else:
        raise InputError(message_id="errors.no_such_path", path=text)
    if not files:
        raise InputError(message_id="errors.no_files", where=where, supported=", ".join(SUPPORTED_SUFFIXES))
    return files


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _detect_encoding(sample: bytes, path: Path) -> str:
    """Return 'utf-8-sig', 'utf-8', 'gb18030' or charset-normalizer's guess for ``sample``."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if b"\x00" in sample:
        raise InputError(message_id="errors.binary_file", path=path)
    for encoding in ("utf-8", "gb18030"):
        try:
            codecs.getincrementaldecoder(encoding)().decode(sample, final=False)
            return encoding
        except UnicodeDecodeError:
            continue
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    if best is None:
        raise InputError(message_id="errors.unknown_encoding", path=path)
    return best.encoding


def _transcode_to_utf8(path: Path, encoding: str, staging_dir: Path) -> Path:
    """Write a UTF-8 copy of ``path`` into ``staging_dir`` block by block; raise InputError at the first bad byte."""
    target = staging_dir / (path.name.removesuffix(".gz") + ".utf8.csv")
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    with _open_bytes(path) as source, open(target, "w", encoding="utf-8", newline="") as sink:
        while block := source.read(TRANSCODE_BLOCK_BYTES):
            try:
                sink.write(decoder.decode(block))
            except UnicodeDecodeError as error:
                raise InputError(message_id="errors.bad_encoding", path=path, offset=offset + error.start,
                                 encoding=encoding) from error
            offset += len(block)
        sink.write(decoder.decode(b"", final=True))
    return target


def _sniff_delimiter(lines: list[str], path: Path) -> str:
    if _suffix(path) == ".tsv" or (lines and "\t" in lines[0]):
        return "\t"
    try:
        return csv.Sniffer().sniff("\n".join(lines[:50]), delimiters=_DELIMITERS).delimiter
    except csv.Error:
        pass
    token_counts = {len(line.split()) for line in lines[:50] if line.strip()}
    if len(token_counts) == 1 and token_counts.pop() > 1:
        return WHITESPACE
    raise InputError(message_id="errors.not_a_table", path=path)


def _looks_like_header(first: list[str], second: list[str] | None) -> bool:
    """Return True if the first row is a header: a cell is a known column name, or only the next row has numbers."""
    if any(normalise_header(cell) in _KNOWN_HEADERS for cell in first):
        return True
    first_numeric = any(_NUMBER_PATTERN.match(cell.strip()) for cell in first)
    second_numeric = second is not None and any(_NUMBER_PATTERN.match(cell.strip()) for cell in second)
    return not first_numeric and second_numeric


def _split(line: str, delimiter: str) -> list[str]:
    if delimiter == WHITESPACE:
        return line.split()
    return next(csv.reader([line], delimiter=delimiter), [])


def _positional_names(count: int) -> list[str]:
    return [f"column{i}" for i in range(1, count + 1)]


def _unique_headers(cells: list[str], path: Path) -> list[str]:
    headers = [cell.strip().lstrip("\ufeff") or f"column{i}" for i, cell in enumerate(cells, start=1)]
    seen: set[str] = set()
    for header in headers:
        if header in seen:
            raise InputError(message_id="errors.duplicate_header", path=path, column=repr(header))
        seen.add(header)
    return headers


def stage_file(con, path: Path, table: str, staging_dir: Path) -> StagedFile:
    """Stage one file as DuckDB table or view ``table`` (with ``source_row``) and describe it."""
    suffix = _suffix(path)
    if suffix in EXCEL_SUFFIXES:
        return _stage_excel(con, path, table)
    if suffix in PARQUET_SUFFIXES:
        return _stage_parquet(con, path, table)
    return _stage_text(con, path, table, staging_dir)


def _stage_text(con, path: Path, table: str, staging_dir: Path) -> StagedFile:
    with _open_bytes(path) as handle:
        sample = handle.read(SNIFF_BYTES)
    if not sample.strip():
        raise InputError(message_id="errors.empty_file", path=path)
    encoding = _detect_encoding(sample, path)
    readable = path
    if encoding not in ("utf-8", "utf-8-sig"):
        readable = _transcode_to_utf8(path, encoding, staging_dir)
        log.info("event=transcoded file=%s encoding=%s", path, encoding)
    text = sample.decode(encoding, errors="ignore").lstrip("\ufeff")
    lines = [line for line in text.splitlines()[:-1] or text.splitlines() if line.strip()]
    delimiter = _sniff_delimiter(lines, path)
    first = _split(lines[0], delimiter)
    second = _split(lines[1], delimiter) if len(lines) > 1 else None
    has_header = _looks_like_header(first, second)
    headers = _unique_headers(first, path) if has_header else _positional_names(len(first))

    first_data_line = 2 if has_header else 1
    if delimiter == WHITESPACE:
        relation = _read_whitespace(con, readable, headers, has_header)
        staged = con.create_table(table, relation.mutate(source_row=ibis.row_number() + first_data_line),
                                  overwrite=True)
    else:
        staged = _stage_delimited(con, table, readable, headers, has_header, delimiter, path)
    rows = staged.count().execute()
    if rows == 0:
        raise InputError(message_id="errors.header_only", path=path)
    return StagedFile(path, table, headers, has_header, encoding, delimiter, int(rows))


def _stage_delimited(con, table: str, path: Path, headers, has_header: bool, delimiter: str, original: Path):
    """Copy a delimited file into ``table``; a file with line breaks inside quoted cells is read on one thread.

    DuckDB's parallel CSV scanner cannot pad short rows when a quoted cell spans lines (multi-line
    addresses and remarks in Taobao exports), so such a file is read again without it.
    """
    try:
        return _copy_delimited(con, table, path, headers, has_header, delimiter, parallel=True)
    except Exception as error:  # DuckDB raises its own error classes; map them to one message.
        first_line = str(error).strip().splitlines()[0]
        if "quoted new lines" in str(error):
            log.info("event=csv_single_thread file=%s reason=quoted line breaks", original)
            try:
                return _copy_delimited(con, table, path, headers, has_header, delimiter, parallel=False)
            except Exception as retry_error:
                error, first_line = retry_error, str(retry_error).strip().splitlines()[0]
        if "Out of Memory" in first_line:
            raise ConfigError(message_id="errors.out_of_memory", path=original, detail=first_line) from error
        raise InputError(message_id="errors.unreadable_table", path=original, detail=first_line) from error


def _copy_delimited(con, table: str, path: Path, headers, has_header: bool, delimiter: str, *, parallel: bool):
    relation = con.read_csv(
        str(path),
        delim=delimiter,
        header=has_header,
        all_varchar=True,
        quote='"',
        escape='"',
        null_padding=True,
        names=headers,
        parallel=parallel,
    )
    # Rows are numbered as records: a record whose quoted cell spans lines counts once.
    relation = relation.mutate(source_row=ibis.row_number() + (2 if has_header else 1))
    return con.create_table(table, relation, overwrite=True)


def _read_whitespace(con, path: Path, headers, has_header: bool):
    """Read a file whose columns are separated by runs of spaces (leading spaces allowed), such as CDNOW."""
    raw = con.read_csv(
        str(path), delim="\x1f", header=False, columns={"line": "VARCHAR"}, quote="", escape="",
    )
    raw = raw.filter(raw.line.strip() != "")
    if has_header:
        raw = raw.mutate(_n=ibis.row_number()).filter(lambda t: t._n > 0).drop("_n")
    tokens = raw.line.strip().re_split(r"\s+")
    return raw.select(**{name: tokens[i] for i, name in enumerate(headers)})


def _stage_excel(con, path: Path, table: str) -> StagedFile:
    try:
        frame = pd.read_excel(path, sheet_name=0, header=None, dtype=str, keep_default_na=False)
    except Exception as error:  # openpyxl raises several unrelated classes for broken files
        raise InputError(message_id="errors.unreadable_workbook", path=path, detail=error) from error
    frame = frame.loc[~(frame == "").all(axis=1)]
    if frame.empty:
        raise InputError(message_id="errors.empty_sheet", path=path)
    first = [str(v) for v in frame.iloc[0]]
    second = [str(v) for v in frame.iloc[1]] if len(frame) > 1 else None
    has_header = _looks_like_header(first, second)
    headers = _unique_headers(first, path) if has_header else _positional_names(len(first))
    data = frame.iloc[1:] if has_header else frame
    sheet_rows = data.index.to_numpy() + 1  # pandas numbers sheet rows from 0
    data = pd.DataFrame(data.to_numpy(), columns=headers).replace("", None)
    data["source_row"] = sheet_rows
    staged = con.create_table(table, data, overwrite=True)
    return StagedFile(path, table, headers, has_header, "xlsx", None, int(staged.count().execute()))


def _stage_parquet(con, path: Path, table: str) -> StagedFile:
    """Stage a Parquet file as a view that keeps its column types; nothing is copied.

    Parquet stores typed columns, and reading them as text would only add a cast and a parse back.
    The cleaning step parses only the columns that are text. Rows are numbered from 1 in file order.
    """
    quoted = str(path).replace("'", "''")
    try:
        con.raw_sql(
            f'CREATE OR REPLACE VIEW "{table}" AS SELECT * EXCLUDE (file_row_number), file_row_number + 1 AS '
            f"source_row FROM read_parquet('{quoted}', file_row_number = true)"
        )
        staged = con.table(table)
        rows = int(staged.count().execute())
    except Exception as error:  # DuckDB raises its own error classes for a damaged or foreign file
        first_line = str(error).strip().splitlines()[0]
        if "Out of Memory" in first_line:
            raise ConfigError(message_id="errors.out_of_memory", path=path, detail=first_line) from error
        raise InputError(message_id="errors.unreadable_table", path=path, detail=first_line) from error
    if rows == 0:
        raise InputError(message_id="errors.header_only", path=path)
    headers = [name for name in staged.columns if name != "source_row"]
    return StagedFile(path, table, headers, True, "parquet", None, rows)


def merge_parquet_views(con, staged: list[StagedFile], table: str) -> list[StagedFile]:
    """Read Parquet files that share one schema through a single view; other files stay as they are.

    A folder of many Parquet parts otherwise becomes a union of one view per part, and DuckDB then
    runs a large aggregation (the duplicate check) over that many branches with far more memory
    than over one scan of all the files, which it can spill.
    """
    parquet = [file for file in staged if file.encoding == "parquet"]
    if len(parquet) < 2:
        return staged
    schemas = {file.table: con.table(file.table).schema() for file in parquet}
    first = parquet[0]
    if any(schemas[file.table] != schemas[first.table] for file in parquet):
        return staged
    listed = ", ".join("'" + str(file.path).replace("'", "''") + "'" for file in parquet)
    con.raw_sql(
        f'CREATE OR REPLACE VIEW "{table}" AS SELECT * EXCLUDE (file_row_number, filename), '
        f"file_row_number + 1 AS source_row, parse_filename(filename) AS source_file "
        f"FROM read_parquet([{listed}], file_row_number = true, filename = true)"
    )
    merged = StagedFile(first.path, table, first.headers, True, "parquet", None, sum(file.rows for file in parquet),
                        paths=tuple(file.path for file in parquet))
    return [merged] + [file for file in staged if file.encoding != "parquet"]
