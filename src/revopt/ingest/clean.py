"""Turn staged text tables into clean order lines, rejected rows and per-customer daily purchases.

The rules, applied in this order to every row:

1. An exact duplicate of an earlier row is dropped (reason ``duplicate``) when rows carry an order
   id. Without an order id two identical rows can be two real orders on one day (CDNOW has 255
   such rows), so they are kept unless ``duplicates="drop"``.
2. A row whose order status marks the order as closed, cancelled or refunded is excluded
   (``cancelled_status``).
3. A row whose date or amount is empty or does not parse is rejected with that reason.
4. A kept row with a negative quantity or amount, or an order id starting with ``C`` (a
   cancellation invoice), is a return line: it is netted against revenue but is not a purchase.
5. Rows without a customer id count in revenue KPIs but not in customer models.

A purchase is one customer on one business day with at least one non-return line. Its amount is
the day's net spend, so returns booked the same day reduce it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import ibis

from revopt.errors import ConfigError, ParseError
from revopt.ingest.columns import ColumnMapping
from revopt.ingest.files import StagedFile
from revopt.ingest.parsing import DateFamily, detect_date_family, parse_number, parse_timestamp, to_local_time

__all__ = ["CANCELLED_STATUSES", "CORE_LINE_COLUMNS", "DUPLICATE_MODES", "LINE_COLUMNS", "CleanTables", "build_raw",
           "clean_orders", "count_lines"]

log = logging.getLogger(__name__)

# Order statuses meaning the order never completed or was refunded in full, lower-cased
# (Taobao/Tmall, JD and common English exports).
CANCELLED_STATUSES = frozenset({
    "交易关闭", "已关闭", "关闭", "退款成功", "已退款", "全额退款", "已取消", "取消", "订单取消", "交易失败", "已作废",
    "cancelled", "canceled", "refunded", "closed", "voided", "failed", "returned",
})
DUPLICATE_MODES = ("auto", "drop", "keep")
# Columns of the clean lines table, in order; the CLV models, scoring and KPIs read only the core ones.
LINE_COLUMNS = ("source_file", "source_row", "customer_id", "order_id", "order_time", "order_date", "amount", "quantity",
                "unit_price", "product_id", "product_name", "category", "discount", "customer_name", "gender", "status",
                "is_return")
CORE_LINE_COLUMNS = ("customer_id", "order_id", "order_date", "amount", "is_return")
RAW_FIELDS = ("customer_id", "order_id", "date", "amount", "quantity", "unit_price", "status", "product_id",
              "product_name", "category", "discount", "customer_name", "gender")


@dataclass
class CleanTables:
    """Ibis tables produced by :func:`clean_orders`, and the counts behind the ingest summary."""

    lines: ibis.Table
    purchases: ibis.Table
    rejected: ibis.Table
    stats: dict = field(default_factory=dict)
    date_family: str = ""


def build_raw(staged: list[StagedFile], mappings: list[ColumnMapping], con) -> ibis.Table:
    """Union the staged files into one table of raw fields, with file, row and a hash of the whole row.

    Fields keep the type they have in every file (a Parquet timestamp stays a timestamp); a field
    whose type differs between files is taken as text in all of them.
    """
    tables = [con.table(file.table) for file in staged]
    field_types: dict[str, set] = {}
    for table, mapping in zip(tables, mappings):
        for name in RAW_FIELDS:
            if mapping.has(name):
                field_types.setdefault(name, set()).add(table[mapping.columns[name]].type())
    parts = []
    for file, mapping, table in zip(staged, mappings, tables):
        columns = {}
        for name in RAW_FIELDS:
            if not mapping.has(name):
                columns[f"raw_{name}"] = ibis.null("string")
                continue
            column = table[mapping.columns[name]]
            columns[f"raw_{name}"] = column if len(field_types[name]) == 1 else column.cast("string")
        whole_row = {column: table[column] for column in file.headers}
        parts.append(table.select(
            source_file=table.source_file if file.paths else ibis.literal(file.path.name),
            source_row=table.source_row.cast("int64"),
            row_hash=ibis.struct(whole_row).hash(),
            **columns,
        ))
    return ibis.union(*parts) if len(parts) > 1 else parts[0]


def _as_text(column: ibis.Value, *, strip: bool = True) -> ibis.StringValue:
    """Return the column as text: trimmed where it is text already, cast where the file typed it."""
    if column.type().is_string():
        return column.strip() if strip else column
    return column.cast("string")


def _as_id(column: ibis.Value) -> ibis.StringValue:
    """Return an identifier as text. A whole number stored as float loses its ``.0``, because pandas stores ids with gaps as floats."""
    if column.type().is_floating():
        whole = column.notnull() & (column == column.floor())
        return ibis.ifelse(whole, column.cast("int64").cast("string"), column.cast("string"))
    return _as_text(column)


def _as_number(column: ibis.Value) -> ibis.FloatingValue:
    """Return a number column as float64, parsing text with :func:`parse_number`."""
    if column.type().is_numeric():
        return column.cast("float64")
    return parse_number(_as_text(column, strip=False))


def _is_empty(column: ibis.Value) -> ibis.BooleanValue:
    if column.type().is_string():
        return column.isnull() | (column.strip() == "")
    return column.isnull()


def _is_typed_time(column: ibis.Value) -> bool:
    return column.type().is_timestamp() or column.type().is_date()


def _typed_time(column: ibis.Value, tz: str | None) -> ibis.TimestampValue:
    """Return a date or timestamp column as a local timestamp, converting one with a time zone to ``tz``."""
    if column.type().is_date():
        return column.cast("timestamp")
    if column.type().timezone is not None:
        return to_local_time(column, tz or "UTC")
    return column


def _first_bad(table, condition, column_label: str, source_column: str) -> dict:
    row = table.filter(condition).order_by(["source_file", "source_row"]).limit(1).to_pandas()
    if row.empty:
        return {}
    first = row.iloc[0]
    return {"file": first.source_file, "row": int(first.source_row), "column": column_label,
            "value": repr(first[source_column])}


def _check_share(bad: int, total: int, *, message_id: str, where: Callable[[], dict],
                 max_invalid_share: float) -> None:
    """Raise ParseError when more than ``max_invalid_share`` of ``total`` values failed; ``where()`` names the first."""
    if total and bad / total > max_invalid_share:
        raise ParseError(message_id=message_id, bad=bad, total=total,
                         where=ParseError(message_id="errors.first_bad", **where()))


def clean_orders(
    raw: ibis.Table,
    *,
    con,
    has_order_id: bool,
    amount_from_lines: bool,
    column_labels: dict[str, str],
    dayfirst: bool | None = None,
    date_format: str | None = None,
    tz: str | None = None,
    duplicates: str = "auto",
    max_invalid_share: float = 0.01,
    table_prefix: str = "",
    source: str = "input",
    line_columns: tuple[str, ...] = LINE_COLUMNS,
) -> CleanTables:
    """Parse, check and classify raw rows; materialise ``lines``, ``purchases`` and ``rejected`` tables.

    ``line_columns`` are the columns of ``lines``, in the order of :data:`LINE_COLUMNS`; a run
    that reads fewer (:data:`CORE_LINE_COLUMNS` for the CLV models and KPIs) writes fewer.

    Raises
    ------
    ParseError
        If more than ``max_invalid_share`` of the non-empty dates or amounts do not parse; the
        message names the first bad value with its file, row and column.
    """
    if duplicates not in DUPLICATE_MODES:
        raise ConfigError(f"duplicates mode {duplicates!r} is not valid; use one of: {', '.join(DUPLICATE_MODES)}")
    date_column = raw.raw_date
    family: DateFamily | None = None
    typed_time = _is_typed_time(date_column)
    if typed_time:
        if date_column.type().is_timestamp() and date_column.type().timezone is not None and tz is None:
            example = raw.filter(date_column.notnull()).select(value=date_column.cast("string")).limit(1)
            raise ConfigError(message_id="errors.offset_needs_tz", source=source, column=column_labels["date"],
                              example=repr(example.to_pandas().value.iloc[0]))
        timestamp = _typed_time(date_column, tz)
    else:
        date_text = _as_text(date_column)
        if date_format is None:
            family = detect_date_family(raw.select(raw_date=date_text), "raw_date", dayfirst=dayfirst, source=source,
                                        column_label=column_labels["date"])
        if tz is None and (family is not None and family.has_offset
                           or date_format is not None and "%z" in date_format):
            example = raw.filter(date_column.notnull()).select("raw_date").limit(1).to_pandas().raw_date.iloc[0]
            raise ConfigError(message_id="errors.offset_needs_tz", source=source, column=column_labels["date"],
                              example=repr(example))
        timestamp = parse_timestamp(date_text, family, tz=tz, date_format=date_format)
    if "amount" not in column_labels and "unit_price" not in column_labels:
        # Baskets without money (Groceries): amounts stay null and no row is rejected for them.
        amount = ibis.null("float64")
        amount_empty = ibis.literal(False)
    elif amount_from_lines:
        amount = _as_number(raw.raw_quantity) * _as_number(raw.raw_unit_price)
        amount_empty = raw.raw_quantity.isnull() | raw.raw_unit_price.isnull()
    else:
        amount = _as_number(raw.raw_amount)
        amount_empty = _is_empty(raw.raw_amount)
    date_empty = _is_empty(date_column)

    drop_duplicates = duplicates == "drop" or (duplicates == "auto" and has_order_id)
    duplicate_rows = _identical_rows(raw, con=con, table_prefix=table_prefix)
    raw = raw.left_join(duplicate_rows, ["source_file", "source_row"]).select(
        raw, is_identical=ibis._.later_copy.notnull()
    )
    status = _as_text(raw.raw_status).lower()
    customer = _as_id(raw.raw_customer_id)
    order_id = _as_id(raw.raw_order_id)
    parsed = raw.mutate(
        customer_id=ibis.ifelse(customer == "", None, customer),
        order_id=ibis.coalesce(order_id, raw.source_file + "#" + raw.source_row.cast("string")),
        order_time=timestamp,
        amount=amount,
        quantity=_as_number(raw.raw_quantity),
        # An export that names products without ids (Groceries) identifies them by name.
        product_id=_as_id(raw.raw_product_id) if "product_id" in column_labels else _as_text(raw.raw_product_name),
        product_name=_as_text(raw.raw_product_name),
        status=_as_text(raw.raw_status),
        is_duplicate=raw.is_identical if drop_duplicates else ibis.literal(False),
        is_cancelled=status.isin(list(CANCELLED_STATUSES)).fill_null(False),
        is_return_id=order_id.upper().startswith("C").fill_null(False),
        date_empty=date_empty,
        amount_empty=amount_empty,
        amount_parsed=ibis.literal("amount" in column_labels or "unit_price" in column_labels),
        unit_price=_as_number(raw.raw_unit_price),
        category=_text_or_null(raw.raw_category),
        discount=_as_number(raw.raw_discount),
        customer_name=_text_or_null(raw.raw_customer_name),
        gender=_text_or_null(raw.raw_gender),
    )
    reason = ibis.cases(
        (parsed.is_duplicate, "duplicate"),
        (parsed.is_cancelled, "cancelled_status"),
        (parsed.date_empty, "missing_date"),
        (parsed.order_time.isnull(), "invalid_date"),
        (parsed.amount_empty, "missing_amount"),
        (parsed.amount.isnull() & parsed.amount_parsed, "invalid_amount"),
        else_=ibis.null("string"),
    )
    # ``parsed`` stays a query: the kept lines and the rejected rows are each one pass over the
    # input, and every count below reads those two tables, so no full copy of the raw rows is made.
    parsed = parsed.mutate(reason=reason)
    kept = parsed.filter(parsed.reason.isnull())
    is_return = ((kept.amount < 0) | (kept.quantity.fill_null(0) < 0) | kept.is_return_id).fill_null(False)
    lines = kept.select(
        "source_file", "source_row", "customer_id", "order_id", "order_time",
        order_date=kept.order_time.date(), amount=kept.amount, quantity=kept.quantity, unit_price=kept.unit_price,
        product_id=kept.product_id, product_name=kept.product_name, category=kept.category, discount=kept.discount,
        customer_name=kept.customer_name, gender=kept.gender, status=kept.status, is_return=is_return,
    )
    unknown = sorted(set(line_columns) - set(LINE_COLUMNS))
    if unknown:
        raise ConfigError(f"line_columns has unknown columns {', '.join(unknown)}; choose from {', '.join(LINE_COLUMNS)}")
    lines = con.create_table(f"{table_prefix}lines", lines.select(*[name for name in LINE_COLUMNS if name in line_columns]),
                             overwrite=True)
    failed = parsed.filter(parsed.reason.notnull())
    failed = con.create_table(f"{table_prefix}rejected_rows", failed.select(
        "source_file", "source_row", "reason", "date_empty", "amount_empty", "amount_parsed",
        date_failed=failed.order_time.isnull(), amount_failed=failed.amount.isnull(),
        **{f"raw_{name}": _as_text(failed[f"raw_{name}"], strip=False) for name in RAW_FIELDS},
    ), overwrite=True)

    stats = _count(lines, failed, duplicate_rows)
    _check_share(
        stats["bad_dates"], stats["non_empty_dates"], message_id="errors.bad_dates",
        where=lambda: _first_bad(failed, failed.reason == "invalid_date", column_labels["date"], "raw_date"),
        max_invalid_share=max_invalid_share,
    )
    amount_label = column_labels.get("amount") or f"{column_labels.get('quantity')} × {column_labels.get('unit_price')}"
    amount_source = "raw_amount" if not amount_from_lines else "raw_quantity"
    _check_share(
        stats["bad_amounts"], stats["non_empty_amounts"], message_id="errors.bad_amounts",
        where=lambda: _first_bad(failed, failed.reason == "invalid_amount", amount_label, amount_source),
        max_invalid_share=max_invalid_share,
    )

    rejected = failed.select("source_file", "source_row", "reason", *[f"raw_{name}" for name in RAW_FIELDS])
    rejected = con.create_table(f"{table_prefix}rejected", rejected.order_by(["source_file", "source_row"]),
                                overwrite=True)
    purchases = daily_purchases(lines)
    purchases = con.create_table(f"{table_prefix}purchases", purchases, overwrite=True)

    stats.update(count_lines(lines, purchases))
    stats["identical_rows_kept"] = 0 if drop_duplicates else stats.pop("identical_rows")
    stats.pop("identical_rows", None)
    return CleanTables(lines=lines, purchases=purchases, rejected=rejected, stats=stats,
                       date_family=family.name if family else (date_format or "typed"))


def _identical_rows(raw: ibis.Table, *, con, table_prefix: str) -> ibis.Table:
    """Materialise the rows that repeat an earlier row exactly, as (source_file, source_row, later_copy).

    Rows are grouped by a 64-bit hash of every column, which needs memory for one integer per row.
    Rows whose hash occurs more than once are then compared on every field revopt reads. Two
    different rows are taken for copies only if they agree on all of those fields and also collide
    on the hash of the whole row.
    """
    repeated = raw.group_by("row_hash").aggregate(copies=ibis._.count()).filter(ibis._.copies > 1)
    candidates = raw.semi_join(repeated, "row_hash")
    keys = ["row_hash", *[f"raw_{name}" for name in RAW_FIELDS]]
    rank = ibis.row_number().over(group_by=keys, order_by=[candidates.source_file, candidates.source_row])
    copies = candidates.mutate(rank=rank).filter(ibis._.rank > 0)
    copies = copies.select("source_file", "source_row", later_copy=ibis.literal(True))
    return con.create_table(f"{table_prefix}identical_rows", copies, overwrite=True)


# Cell texts that mean "no value" after a trip through pandas, Excel or a database export.
NULL_TEXTS = ("", "-", "--", "—", "none", "nan", "nat", "null", "n/a", "#n/a")


def _text_or_null(column: ibis.Value) -> ibis.StringValue:
    """Trimmed text, with empty cells and the texts of :data:`NULL_TEXTS` as null."""
    trimmed = _as_text(column)
    return ibis.ifelse(trimmed.lower().isin(NULL_TEXTS), ibis.null("string"), trimmed)


def daily_purchases(lines: ibis.Table) -> ibis.Table:
    """Merge each customer's lines of one business day into one purchase (as BG/NBD assumes)."""
    with_customer = lines.filter(lines.customer_id.notnull())
    by_day = with_customer.group_by(["customer_id", "order_date"]).aggregate(
        amount=with_customer.amount.sum(),
        orders=with_customer.order_id.nunique(where=~with_customer.is_return),
        purchase_lines=(~with_customer.is_return).sum(),
    )
    return by_day.filter(by_day.purchase_lines > 0).drop("purchase_lines")


def _count(lines: ibis.Table, failed: ibis.Table, identical: ibis.Table) -> dict:
    """Counts of the ingest summary, from the kept lines, the rejected rows (with their checks) and exact copies.

    Kept lines have a valid date and amount, so date and amount failures are counted over the
    rejected rows, whatever other reason a row was rejected for, and bad / total share one base.
    """
    kept = int(lines.count().execute())
    row = failed.aggregate(
        rows_rejected=failed.count(),
        duplicates_dropped=(failed.reason == "duplicate").sum(),
        cancelled_rows=(failed.reason == "cancelled_status").sum(),
        bad_dates=(~failed.date_empty & failed.date_failed).sum(),
        non_empty_dates=(~failed.date_empty).sum(),
        bad_amounts=(~failed.amount_empty & failed.amount_failed & failed.amount_parsed).sum(),
        non_empty_amounts=(~failed.amount_empty).sum(),
    ).to_pandas().iloc[0]
    reasons = failed.group_by("reason").aggregate(n=failed.count()).to_pandas()
    stats = {key: int(value or 0) for key, value in row.items()}
    stats["rows_read"] = kept + stats["rows_rejected"]
    stats["non_empty_dates"] += kept
    stats["non_empty_amounts"] += kept
    stats["identical_rows"] = int(identical.count().execute())
    stats["rejected_by_reason"] = {r: int(n) for r, n in zip(reasons.reason, reasons.n)}
    return stats


def count_lines(lines: ibis.Table, purchases: ibis.Table) -> dict:
    """Counts of the ingest summary that the clean lines and purchases hold: kept, return and guest rows, merged purchases."""
    line_row = lines.aggregate(
        rows_kept=lines.count(),
        return_rows=lines.is_return.sum(),
        rows_without_customer_id=lines.customer_id.isnull().sum(),
        revenue_without_customer_id=lines.amount.sum(where=lines.customer_id.isnull()),
    ).to_pandas().iloc[0]
    purchase_row = purchases.aggregate(n=purchases.count(), orders=purchases.orders.sum()).to_pandas().iloc[0]
    return {
        "rows_kept": int(line_row.rows_kept),
        "return_rows": int(line_row.return_rows or 0),
        "rows_without_customer_id": int(line_row.rows_without_customer_id or 0),
        "revenue_without_customer_id": float(line_row.revenue_without_customer_id or 0.0),
        "purchases": int(purchase_row.n),
        "purchases_merged": int((purchase_row.orders or 0) - purchase_row.n),
    }
