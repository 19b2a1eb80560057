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
from dataclasses import dataclass, field

import ibis

from revopt.errors import ConfigError, ParseError
from revopt.ingest.columns import ColumnMapping
from revopt.ingest.files import StagedFile
from revopt.ingest.parsing import DateFamily, detect_date_family, parse_number, parse_timestamp

__all__ = ["CANCELLED_STATUSES", "DUPLICATE_MODES", "CleanTables", "build_raw", "clean_orders"]

log = logging.getLogger(__name__)

# Order statuses meaning the order never completed or was refunded in full, lower-cased
# (Taobao/Tmall, JD and common English exports).
CANCELLED_STATUSES = frozenset({
    "交易关闭", "已关闭", "关闭", "退款成功", "已退款", "全额退款", "已取消", "取消", "订单取消", "交易失败", "已作废",
    "cancelled", "canceled", "refunded", "closed", "voided", "failed", "returned",
})
DUPLICATE_MODES = ("auto", "drop", "keep")
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
    """Union the staged files into one table of raw text fields, with file, row and a whole-row key."""
    parts = []
    for file, mapping in zip(staged, mappings):
        table = con.table(file.table)
        row_key = ibis.literal("\x1f").join([table[c].fill_null("\x00") for c in file.headers])
        columns = {
            f"raw_{name}": (table[mapping.columns[name]] if mapping.has(name) else ibis.null("string"))
            for name in RAW_FIELDS
        }
        parts.append(table.select(
            source_file=ibis.literal(file.path.name), source_row=table.source_row.cast("int64"),
            row_key=row_key, **columns,
        ))
    return ibis.union(*parts) if len(parts) > 1 else parts[0]


def _first_bad(table, condition, column_label: str, source_column: str) -> dict:
    row = table.filter(condition).order_by(["source_file", "source_row"]).limit(1).to_pandas()
    if row.empty:
        return {}
    first = row.iloc[0]
    return {"file": first.source_file, "row": int(first.source_row), "column": column_label,
            "value": repr(first[source_column])}


def _check_share(bad: int, total: int, *, message_id: str, where: dict, max_invalid_share: float) -> None:
    """Raise ParseError when more than ``max_invalid_share`` of ``total`` values failed; name the first one."""
    if total and bad / total > max_invalid_share:
        raise ParseError(message_id=message_id, bad=bad, total=total,
                         where=ParseError(message_id="errors.first_bad", **where))


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
) -> CleanTables:
    """Parse, check and classify raw rows; materialise ``lines``, ``purchases`` and ``rejected`` tables.

    Raises
    ------
    ParseError
        If more than ``max_invalid_share`` of the non-empty dates or amounts do not parse; the
        message names the first bad value with its file, row and column.
    """
    if duplicates not in DUPLICATE_MODES:
        raise ConfigError(f"duplicates mode {duplicates!r} is not valid; use one of: {', '.join(DUPLICATE_MODES)}")
    raw = con.create_table(f"{table_prefix}raw", raw, overwrite=True)

    family: DateFamily | None = None
    if date_format is None:
        family = detect_date_family(raw, "raw_date", dayfirst=dayfirst, source=source,
                                    column_label=column_labels["date"])
    if tz is None and (family is not None and family.has_offset or date_format is not None and "%z" in date_format):
        example = raw.filter(raw.raw_date.notnull()).select("raw_date").limit(1).to_pandas().raw_date.iloc[0]
        raise ConfigError(message_id="errors.offset_needs_tz", source=source, column=column_labels["date"],
                          example=repr(example))
    timestamp = parse_timestamp(raw.raw_date.strip(), family, tz=tz, date_format=date_format)
    if "amount" not in column_labels and "unit_price" not in column_labels:
        # Baskets without money (Groceries): amounts stay null and no row is rejected for them.
        amount = ibis.null("float64")
        amount_empty = ibis.literal(False)
    elif amount_from_lines:
        amount = parse_number(raw.raw_quantity) * parse_number(raw.raw_unit_price)
        amount_empty = raw.raw_quantity.isnull() | raw.raw_unit_price.isnull()
    else:
        amount = parse_number(raw.raw_amount)
        amount_empty = raw.raw_amount.isnull() | (raw.raw_amount.strip() == "")
    date_empty = raw.raw_date.isnull() | (raw.raw_date.strip() == "")

    drop_duplicates = duplicates == "drop" or (duplicates == "auto" and has_order_id)
    duplicate_rank = ibis.row_number().over(group_by=raw.row_key, order_by=[raw.source_file, raw.source_row])
    status = raw.raw_status.strip().lower()
    customer = raw.raw_customer_id.strip()
    parsed = raw.mutate(
        customer_id=ibis.ifelse(customer == "", None, customer),
        order_id=ibis.coalesce(raw.raw_order_id.strip(), raw.source_file + "#" + raw.source_row.cast("string")),
        order_time=timestamp,
        amount=amount,
        quantity=parse_number(raw.raw_quantity),
        # An export that names products without ids (Groceries) identifies them by name.
        product_id=(raw.raw_product_id.strip() if "product_id" in column_labels else raw.raw_product_name.strip()),
        product_name=raw.raw_product_name.strip(),
        status=raw.raw_status.strip(),
        is_duplicate=(duplicate_rank > 0) if drop_duplicates else ibis.literal(False),
        is_identical=duplicate_rank > 0,
        is_cancelled=status.isin(list(CANCELLED_STATUSES)).fill_null(False),
        date_empty=date_empty,
        amount_empty=amount_empty,
        amount_parsed=ibis.literal("amount" in column_labels or "unit_price" in column_labels),
        unit_price=parse_number(raw.raw_unit_price),
        category=_text_or_null(raw.raw_category),
        discount=parse_number(raw.raw_discount),
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
    parsed = parsed.mutate(reason=reason)
    parsed = con.create_table(f"{table_prefix}parsed", parsed, overwrite=True)

    stats = _count(parsed)
    _check_share(
        stats["bad_dates"], stats["non_empty_dates"], message_id="errors.bad_dates",
        where=_first_bad(parsed, (parsed.reason == "invalid_date"), column_labels["date"], "raw_date"),
        max_invalid_share=max_invalid_share,
    )
    amount_label = column_labels.get("amount") or f"{column_labels.get('quantity')} × {column_labels.get('unit_price')}"
    amount_source = "raw_amount" if not amount_from_lines else "raw_quantity"
    _check_share(
        stats["bad_amounts"], stats["non_empty_amounts"], message_id="errors.bad_amounts",
        where=_first_bad(parsed, (parsed.reason == "invalid_amount"), amount_label, amount_source),
        max_invalid_share=max_invalid_share,
    )

    kept = parsed.filter(parsed.reason.isnull())
    is_return = (
        (kept.amount < 0)
        | (kept.quantity.fill_null(0) < 0)
        | kept.raw_order_id.strip().upper().startswith("C")
    ).fill_null(False)
    lines = kept.select(
        "source_file", "source_row", "customer_id", "order_id", "order_time",
        order_date=kept.order_time.date(), amount=kept.amount, quantity=kept.quantity, unit_price=kept.unit_price,
        product_id=kept.product_id, product_name=kept.product_name, category=kept.category, discount=kept.discount,
        customer_name=kept.customer_name, gender=kept.gender, status=kept.status, is_return=is_return,
    )
    lines = con.create_table(f"{table_prefix}lines", lines, overwrite=True)
    rejected = parsed.filter(parsed.reason.notnull()).select(
        "source_file", "source_row", "reason", *[f"raw_{name}" for name in RAW_FIELDS]
    ).order_by(["source_file", "source_row"])
    rejected = con.create_table(f"{table_prefix}rejected", rejected, overwrite=True)
    purchases = daily_purchases(lines)
    purchases = con.create_table(f"{table_prefix}purchases", purchases, overwrite=True)

    stats.update(_count_lines(lines, purchases))
    stats["identical_rows_kept"] = 0 if drop_duplicates else stats.pop("identical_rows")
    stats.pop("identical_rows", None)
    return CleanTables(lines=lines, purchases=purchases, rejected=rejected, stats=stats,
                       date_family=family.name if family else date_format)


# Cell texts that mean "no value" after a trip through pandas, Excel or a database export.
NULL_TEXTS = ("", "-", "--", "—", "none", "nan", "nat", "null", "n/a", "#n/a")


def _text_or_null(column: ibis.StringValue) -> ibis.StringValue:
    """Trimmed text, with empty cells and the texts of :data:`NULL_TEXTS` as null."""
    trimmed = column.strip()
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


def _count(parsed: ibis.Table) -> dict:
    row = parsed.aggregate(
        rows_read=parsed.count(),
        duplicates_dropped=parsed.is_duplicate.sum(),
        identical_rows=parsed.is_identical.sum(),
        cancelled_rows=(parsed.reason == "cancelled_status").sum(),
        # Counted over all rows, whatever other reason a row has, so that bad / total share one base.
        bad_dates=(~parsed.date_empty & parsed.order_time.isnull()).sum(),
        non_empty_dates=(~parsed.date_empty).sum(),
        bad_amounts=(~parsed.amount_empty & parsed.amount.isnull() & parsed.amount_parsed).sum(),
        non_empty_amounts=(~parsed.amount_empty).sum(),
        rows_rejected=parsed.reason.notnull().sum(),
    ).to_pandas().iloc[0]
    rejected = parsed.filter(parsed.reason.notnull())
    reasons = rejected.group_by("reason").aggregate(n=rejected.count()).to_pandas()
    stats = {key: int(value or 0) for key, value in row.items()}
    stats["rejected_by_reason"] = {r: int(n) for r, n in zip(reasons.reason, reasons.n)}
    return stats


def _count_lines(lines: ibis.Table, purchases: ibis.Table) -> dict:
    line_row = lines.aggregate(
        rows_kept=lines.count(),
        return_rows=lines.is_return.sum(),
        rows_without_customer_id=lines.customer_id.isnull().sum(),
        revenue_without_customer_id=lines.amount.sum(where=lines.customer_id.isnull()),
        customer_orders=lines.order_id.nunique(where=lines.customer_id.notnull() & ~lines.is_return),
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
