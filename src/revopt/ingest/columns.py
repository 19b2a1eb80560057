"""Recognise the fields of an order export from its column headers, or from ``--map`` overrides.

Each field has synonym groups in priority order. A header matches a synonym after normalisation
(lower case, spaces, underscores, dots and hyphens removed), so ``Customer ID``, ``customer_id`` and
``CustomerID`` are the same. The first group with a match wins; two different columns matching in
the same group are ambiguous and stop the run, because guessing would silently pick the wrong one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from revopt.errors import ColumnMappingError

__all__ = ["FIELDS", "REQUIRED_FIELDS", "ColumnMapping", "normalise_header", "parse_map_options", "resolve_columns"]

# Field -> synonym groups, highest priority first.
_SYNONYMS: dict[str, tuple[tuple[str, ...], ...]] = {
    "customer_id": (
        ("customerid", "customer", "custid", "clientid", "memberid", "userid", "buyerid", "membernumber",
         "买家会员名", "会员id", "会员编号", "会员名", "客户id", "客户编号", "用户id", "买家id", "买家昵称"),
        ("phone", "mobile", "phonenumber", "手机号", "手机号码", "手机", "联系电话", "email", "邮箱"),
        # A bare "Id" names the customer only when nothing better is present (CLVTools' apparel data).
        ("id", "编号"),
    ),
    "order_id": (
        ("orderid", "ordernumber", "orderno", "invoiceno", "invoice", "transactionid",
         "订单编号", "订单号", "主订单编号", "交易号"),
    ),
    "date": (
        ("orderdate", "ordertime", "invoicedate", "date", "purchasedate", "transactiondate", "createdat",
         "timestamp", "datetime", "下单时间", "订单创建时间", "创建时间", "订单日期", "日期", "成交时间"),
        ("paymenttime", "paidat", "paymentdate", "付款时间", "支付时间"),
    ),
    "amount": (
        ("amount", "dollarvalue", "revenue", "sales", "totalprice", "ordervalue", "orderamount", "paymentvalue",
         "实付金额", "买家实际支付金额", "实收金额", "支付金额", "实付款", "销售额", "金额"),
        ("total", "订单金额", "总金额", "应付金额", "商品总价"),
    ),
    "quantity": (("quantity", "qty", "数量", "购买数量", "商品数量"),),
    "unit_price": (("unitprice", "price", "单价", "商品单价", "价格", "商品价格"),),
    "status": (("status", "orderstatus", "订单状态", "交易状态"),),
    "product_id": (("productid", "stockcode", "sku", "itemid", "商品id", "商品编码", "商家编码", "商品编号"),),
    "product_name": (
        ("productname", "description", "itemname", "itemdescription", "商品名称", "宝贝标题", "商品标题"),
    ),
    "category": (("category", "productcategory", "categoryname", "类目", "商品类目", "品类", "商品分类", "分类",
                  "一级类目"),),
    "discount": (("discount", "discountamount", "couponamount", "couponvalue", "优惠金额", "折扣金额", "优惠",
                  "优惠券金额", "店铺优惠", "平台优惠"),),
    "customer_name": (("customername", "buyername", "recipientname", "收货人姓名", "收货人", "客户姓名", "买家姓名",
                       "姓名"),),
    "gender": (("gender", "sex", "性别"),),
}
FIELDS = tuple(_SYNONYMS)
REQUIRED_FIELDS = ("customer_id", "date")
_AMOUNT_ALTERNATIVE = ("quantity", "unit_price")

_NORMALISE_PATTERN = re.compile(r"[\s_.\-()（）:：/]+")
_MAP_PATTERN = re.compile(r"^\s*(.+?)\s*=\s*([a-z_]+)\s*$")


def normalise_header(header: str) -> str:
    """Lower-case a header and drop spaces, underscores, dots, hyphens, brackets and colons."""
    return _NORMALISE_PATTERN.sub("", str(header).strip().lstrip("\ufeff")).lower()


@dataclass(frozen=True)
class ColumnMapping:
    """Source column name per field, and how each was found; fields without a column are absent."""

    columns: dict[str, str]
    recognised_by: dict[str, str]

    def has(self, field: str) -> bool:
        return field in self.columns


def parse_map_options(options: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """Parse ``--map COLUMN=FIELD`` options into ``{column: field}``.

    ``COLUMN`` is a header name, or a 1-based position for files without a header. A column or a
    field given twice raises :class:`ColumnMappingError`.
    """
    by_column: dict[str, str] = {}
    by_field: dict[str, str] = {}
    for option in options or ():
        match = _MAP_PATTERN.match(option)
        if not match:
            raise ColumnMappingError(message_id="errors.map_syntax", option=repr(option))
        column, field = match.group(1), match.group(2)
        if field not in FIELDS:
            raise ColumnMappingError(message_id="errors.map_unknown_field", option=repr(option), field=repr(field),
                                     fields=", ".join(FIELDS))
        if column in by_column:
            raise ColumnMappingError(message_id="errors.map_column_twice", column=repr(column),
                                     first=by_column[column], second=field)
        if field in by_field:
            raise ColumnMappingError(message_id="errors.map_field_twice", field=repr(field),
                                     first=repr(by_field[field]), second=repr(column))
        by_column[column] = field
        by_field[field] = column
    return by_column


def _resolve_explicit(headers: list[str], overrides: dict[str, str], source: str) -> dict[str, str]:
    columns: dict[str, str] = {}
    for column, field in overrides.items():
        if column in headers:
            columns[field] = column
        elif column.isdigit() and 1 <= int(column) <= len(headers):
            columns[field] = headers[int(column) - 1]
        else:
            raise ColumnMappingError(message_id="errors.map_no_column", source=source, column=column, field=field,
                                     found=", ".join(headers), count=len(headers))
    return columns


def resolve_columns(headers: list[str], overrides: dict[str, str] | None = None, *, source: str,
                    require_amount: bool = True) -> ColumnMapping:
    """Map the fields revopt uses to columns of ``headers``.

    ``overrides`` (from :func:`parse_map_options`) win; the remaining fields are recognised by
    synonym. Raises :class:`ColumnMappingError` naming the file, the columns found and the fields
    needed when a required field is missing or two columns match one field equally well. With
    ``require_amount=False`` (recommendations from baskets) a file without amounts is accepted.
    """
    columns = _resolve_explicit(headers, overrides or {}, source)
    recognised_by = {field: "--map" for field in columns}
    taken = set(columns.values())
    normalised = {header: normalise_header(header) for header in headers}

    for field, groups in _SYNONYMS.items():
        if field in columns:
            continue
        for group in groups:
            matches = [h for h in headers if h not in taken and normalised[h] in group]
            if len(matches) > 1:
                raise ColumnMappingError(message_id="errors.ambiguous_columns", source=source,
                                         columns=", ".join(repr(m) for m in matches), field=field, first=matches[0])
            if matches:
                columns[field] = matches[0]
                recognised_by[field] = "header"
                taken.add(matches[0])
                break

    if "amount" not in columns and "unit_price" in columns and "quantity" not in columns:
        # Without a quantity, a lone price column is what each row cost.
        columns["amount"] = columns.pop("unit_price")
        recognised_by["amount"] = recognised_by.pop("unit_price")

    needed = [field for field in REQUIRED_FIELDS if field not in columns]
    has_amount = "amount" in columns or all(field in columns for field in _AMOUNT_ALTERNATIVE)
    if needed or not (has_amount or not require_amount):
        if not has_amount:
            needed.append("amount | quantity+unit_price")
        # The example maps a column that no field took yet to the first missing field.
        free = [position for position, header in enumerate(headers, start=1) if header not in columns.values()]
        position = free[0] if free else 1
        raise ColumnMappingError(message_id="errors.missing_columns", source=source, needed=", ".join(needed),
                                 found=", ".join(headers), example=headers[position - 1], position=position,
                                 field=needed[0].split(" | ")[0])
    return ColumnMapping(columns=columns, recognised_by=recognised_by)
