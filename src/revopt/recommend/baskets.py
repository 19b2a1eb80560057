"""Purchase baskets, the product catalogue and the per-customer history the recommenders train on.

Everything that reads order lines is an Ibis expression, so it runs in the engine that stores
the lines. Only compact tables come back as pandas: one row per customer and product bought, one row
per product, and one row per replenishable product.

Which lines count as purchases of a product, in :func:`purchase_lines`:

* the line has a product id, is not a return, and its amount and unit price are positive where
  they are known (a missing amount or price is allowed, for sources such as basket exports);
* the product is not a fee, postage or adjustment line (:data:`NON_PRODUCT_PATTERNS`, plus the
  caller's own patterns);
* the customer did not return the product in full. Its returned quantity (or, where quantities
  are missing, its returned amount) is below what the customer bought. Products returned in full
  do not count as bought by that customer.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import ibis
import numpy as np
import pandas as pd
import scipy.sparse as sp
from ibis import _

from revopt.errors import ConfigError, InputError, check_range

__all__ = [
    "BASKET_KEYS",
    "NON_PRODUCT_PATTERNS",
    "RecommendSettings",
    "TrainingData",
    "prepare_training",
    "purchase_lines",
]

logger = logging.getLogger(__name__)

# Lines that are not products, as case-insensitive glob patterns (``*`` matches any text) per
# column. Product ids: the Online Retail (UCI) fee and adjustment codes, namely postage (POST,
# DOT), manual entries (M), carriage (C2), discounts (D), samples (S), bad-debt adjustments (B),
# bank and Amazon fees, CRUK commission, cushion pads sold at 0.001, gift vouchers (gift_0001_*)
# and dotcom-shop adjustment codes (DCGS*). Product names: Chinese shop exports book shipping
# fees (运费, 邮费), service charges (手续费), price-difference top-ups (补差价) and adjustments
# (调整) as order lines, and English exports delivery and bank charges. Pass ``exclude`` to add
# patterns for other sources.
NON_PRODUCT_PATTERNS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "product_id": ("POST", "DOT", "M", "C2", "D", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS",
                   "gift_0001_*", "DCGS*"),
    "product_name": ("*运费*", "*邮费*", "*手续费*", "*补差价*", "*调整*", "carriage", "*next day carriage*", "postage",
                     "bank charges"),
})
_PATTERN_COLUMNS = ("product_id", "product_name", "category")

# A basket is one order, or one customer's purchases on one day (for sources without order ids,
# such as the Kaggle Groceries member-date file).
BASKET_KEYS = ("order", "customer_day")

_REQUIRED_COLUMNS = ("customer_id", "order_id", "order_date", "amount", "product_id", "is_return")
_OPTIONAL_COLUMNS = {"quantity": "float64", "unit_price": "float64", "product_name": "string", "category": "string"}


@dataclass(frozen=True)
class RecommendSettings:
    """Data rules shared by every recommendation method.

    Attributes
    ----------
    recent_days : int, default 90
        Items a customer bought in this many days before the as-of date are not recommended to
        them again, unless they are replenishment items that are due.
    catalogue_days : int, default 90
        Only products sold in this many days before the as-of date are recommended.
    popularity_days : int, default 30
        Window in which the popularity method counts distinct buyers.
    basket : {"order", "customer_day"}, default "order"
        What one basket is for association rules.
    guest_baskets : bool, default True
        Whether orders without a customer id count as baskets for association rules. They never
        receive recommendations.
    min_pair_count : int, default 5
        Minimum number of baskets that contain both products of a rule.
    max_basket_items : int, default 100
        Baskets with more distinct products are left out of rule mining, because a basket of n
        products adds n(n-1)/2 pairs. The number left out is reported.
    min_repeat_buyers : int, default 5
        Minimum number of customers who bought a product on two or more days, for the product
        to get a replenishment cycle.
    due_lead_days : int, default 14
        A replenishment item is due when its expected next purchase (last purchase plus cycle) is
        at most this many days after the as-of date, and not more than one cycle before it.
    """

    recent_days: int = 90
    catalogue_days: int = 90
    popularity_days: int = 30
    basket: str = "order"
    guest_baskets: bool = True
    min_pair_count: int = 5
    max_basket_items: int = 100
    min_repeat_buyers: int = 5
    due_lead_days: int = 14

    def __post_init__(self) -> None:
        for name in ("recent_days", "catalogue_days", "popularity_days", "due_lead_days"):
            check_range(name, getattr(self, name), low=0)
        for name in ("min_pair_count", "min_repeat_buyers"):
            check_range(name, getattr(self, name), low=1)
        check_range("max_basket_items", self.max_basket_items, low=2)
        if self.basket not in BASKET_KEYS:
            raise ConfigError(message_id="recommend.error.unknown_option", name="basket", value=repr(self.basket),
                              choices=", ".join(BASKET_KEYS))


@dataclass(frozen=True)
class TrainingData:
    """Everything a recommender is fitted on, for one as-of date.

    Attributes
    ----------
    as_of : datetime.date
        Lines dated before this day are history; recommendations are for this day.
    settings : RecommendSettings
        The data rules used.
    sales : ibis.Table
        Purchase lines before ``as_of`` (guests included), from :func:`purchase_lines`.
    products : pandas.DataFrame
        One row per product sold before ``as_of``, in the order of the matrix columns. Columns:
        ``product_id``, ``product_name``, ``category``, ``unit_price``, ``buyers``, ``orders`` and
        ``in_catalogue``. The price is the median over the catalogue window, else over all
        history. ``buyers`` counts distinct customers and ``orders`` counts orders (guests
        included), both in the popularity window.
    customers : pandas.Index
        Customer ids with at least one purchase, in the order of the matrix rows.
    customer_items : pandas.DataFrame
        One row per customer and product bought: ``customer_id``, ``product_id``, ``days``
        (distinct purchase days), ``last_date`` and the matrix positions ``row`` and ``col``.
    cycles : pandas.DataFrame
        Replenishable products: ``product_id``, ``cycle_days`` (median days between a buyer's
        purchase days), ``buyers``, ``repeat_buyers`` and ``repeat_share``.
    due : pandas.DataFrame
        Replenishment items due at ``as_of``: ``customer_id``, ``product_id``, ``last_date``,
        ``cycle_days``, ``due_date``, ``repeat_share``, ``row``, ``col``.
    counts : scipy.sparse.csr_matrix
        Customers x products, the number of distinct days each customer bought each product.
    blocked : scipy.sparse.csr_matrix
        Customers x products, True where the product must not be recommended to the customer:
        bought within ``recent_days`` and not due for replenishment, or returned in full.
    stats : dict
        Line counts before ``as_of``: ``lines``, ``lines_without_product``, ``non_product_lines``,
        ``returned_in_full_lines`` (purchase lines of products the customer returned in full) and
        ``purchase_lines`` (kept).
    """

    as_of: dt.date
    settings: RecommendSettings
    sales: ibis.Table
    products: pd.DataFrame
    customers: pd.Index
    customer_items: pd.DataFrame
    cycles: pd.DataFrame
    due: pd.DataFrame
    counts: sp.csr_matrix
    blocked: sp.csr_matrix
    stats: dict = field(default_factory=dict)

    @property
    def catalogue_mask(self) -> np.ndarray:
        """Boolean per product column: True for products that may be recommended."""
        return self.products.in_catalogue.to_numpy(bool)


def purchase_lines(
    lines: ibis.Table,
    *,
    basket: str = "order",
    exclude: Mapping[str, Sequence[str]] | None = None,
) -> ibis.Table:
    """Select the purchase lines of products, with a basket id, as an Ibis expression.

    Parameters
    ----------
    lines : ibis.Table
        Clean order lines (``CleanTables.lines``, whose text is already trimmed). ``quantity``,
        ``unit_price``, ``product_name`` and ``category`` may be absent or null.
    basket : {"order", "customer_day"}, default "order"
        ``"order"`` makes ``basket_id`` the order id; ``"customer_day"`` makes it the customer id
        and the day, and leaves guest lines without a basket.
    exclude : mapping of str to sequence of str, optional
        Extra non-product patterns by column (``product_id``, ``product_name`` or ``category``),
        added to :data:`NON_PRODUCT_PATTERNS`.

    Returns
    -------
    ibis.Table
        ``customer_id``, ``basket_id``, ``order_date``, ``product_id``, ``product_name``,
        ``category``, ``unit_price`` (the line's price, else amount / quantity), ``quantity``
        and ``amount``.
    """
    if basket not in BASKET_KEYS:
        raise ConfigError(message_id="recommend.error.unknown_option", name="basket", value=repr(basket),
                          choices=", ".join(BASKET_KEYS))
    lines = with_optional_columns(lines)
    product_lines = _product_lines(lines, exclude)
    sales = _positive_sales(product_lines).anti_join(_returned_in_full(product_lines), ["customer_id", "product_id"])

    if basket == "order":
        basket_id = sales.order_id
    else:
        basket_id = sales.customer_id + "|" + sales.order_date.cast("string")
    return sales.select(
        "customer_id", basket_id=basket_id, order_date=sales.order_date, product_id=sales.product_id,
        product_name=sales.product_name, category=sales.category, unit_price=sales.unit_price,
        quantity=sales.quantity, amount=sales.amount,
    )


def with_optional_columns(lines: ibis.Table) -> ibis.Table:
    """Check the required columns of ``lines`` and add the optional ones as nulls where absent."""
    missing = [name for name in _REQUIRED_COLUMNS if name not in lines.columns]
    if missing:
        raise InputError(message_id="recommend.error.missing_columns", missing=", ".join(missing),
                         found=", ".join(lines.columns))
    added = {name: ibis.null(kind) for name, kind in _OPTIONAL_COLUMNS.items() if name not in lines.columns}
    return lines.mutate(**added) if added else lines


def _glob_regex(patterns: Sequence[str]) -> str:
    """Turn glob patterns into one anchored, case-insensitive RE2 regular expression."""
    alternatives = []
    for pattern in patterns:
        pieces = []
        for character in pattern:
            if character == "*":
                pieces.append(".*")
            elif character.isascii() and not character.isalnum() and character not in " _":
                pieces.append("\\" + character)
            else:
                pieces.append(character)
        alternatives.append("".join(pieces))
    return "(?i)^(?:" + "|".join(alternatives) + ")$"


def non_product_patterns(exclude: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    """Merge the caller's patterns into :data:`NON_PRODUCT_PATTERNS`, checking the column names."""
    merged = {name: tuple(patterns) for name, patterns in NON_PRODUCT_PATTERNS.items()}
    for name, patterns in (exclude or {}).items():
        if name not in _PATTERN_COLUMNS:
            raise ConfigError(message_id="recommend.error.unknown_option", name="exclude", value=repr(name),
                              choices=", ".join(_PATTERN_COLUMNS))
        if isinstance(patterns, str):
            patterns = (patterns,)
        merged[name] = merged.get(name, ()) + tuple(patterns)
    return merged


def _product_lines(lines: ibis.Table, exclude: Mapping[str, Sequence[str]] | None) -> ibis.Table:
    """Lines with a product id that is not a fee or adjustment, returns included."""
    keep = lines.product_id.notnull() & (lines.product_id != "")
    for name, patterns in non_product_patterns(exclude).items():
        if patterns:
            keep &= ~lines[name].re_search(_glob_regex(patterns)).fill_null(False)
    return lines.filter(keep)


def _positive_sales(product_lines: ibis.Table) -> ibis.Table:
    """Non-return lines whose amount and unit price are positive or unknown, with the price filled in."""
    price = ibis.coalesce(
        product_lines.unit_price,
        ibis.ifelse(product_lines.quantity > 0, product_lines.amount / product_lines.quantity, ibis.null("float64")),
    )
    product_lines = product_lines.mutate(unit_price=price)
    return product_lines.filter(
        ~product_lines.is_return,
        (product_lines.amount > 0).fill_null(True),
        (product_lines.unit_price > 0).fill_null(True),
    )


def _returned_in_full(product_lines: ibis.Table) -> ibis.Table:
    """(customer_id, product_id) pairs whose returns add up to at least what the customer bought."""
    customer = product_lines.filter(product_lines.customer_id.notnull())
    sold = ~customer.is_return
    returned = customer.is_return
    pairs = customer.group_by(["customer_id", "product_id"]).aggregate(
        bought_quantity=customer.quantity.abs().sum(where=sold),
        returned_quantity=customer.quantity.abs().sum(where=returned),
        bought_amount=customer.amount.abs().sum(where=sold),
        returned_amount=customer.amount.abs().sum(where=returned),
        returns=returned.sum(),
        lines_without_quantity=customer.quantity.isnull().sum(),
    )
    pairs = pairs.filter(pairs.returns > 0)
    in_full = ibis.ifelse(
        pairs.lines_without_quantity == 0,
        pairs.returned_quantity >= pairs.bought_quantity.fill_null(0),
        pairs.returned_amount >= pairs.bought_amount.fill_null(0),
    ).fill_null(False)
    return pairs.filter(in_full).select("customer_id", "product_id")


def prepare_training(
    lines: ibis.Table,
    *,
    as_of: dt.date,
    settings: RecommendSettings | None = None,
    exclude: Mapping[str, Sequence[str]] | None = None,
) -> TrainingData:
    """Build the training data for recommendations made on ``as_of`` from the lines dated before it.

    Raises
    ------
    InputError
        If no line before ``as_of`` is a product purchase, no product was sold in the catalogue
        window, or no customer bought a product before ``as_of``.
    """
    settings = settings or RecommendSettings()
    history = with_optional_columns(lines)
    history = history.filter(history.order_date < ibis.date(as_of))
    # Every later step reads the purchase lines, so the engine computes them once.
    sales = purchase_lines(history, basket=settings.basket, exclude=exclude).cache()

    products = _product_table(sales, as_of=as_of, settings=settings)
    if products.empty:
        raise InputError(message_id="recommend.error.no_products", as_of=as_of.isoformat())
    if not products.in_catalogue.any():
        raise InputError(message_id="recommend.error.empty_catalogue")
    customer_sales = sales.filter(sales.customer_id.notnull())
    customer_items = customer_sales.group_by(["customer_id", "product_id"]).aggregate(
        days=customer_sales.order_date.nunique(), last_date=customer_sales.order_date.max(),
    ).to_pandas()
    if customer_items.empty:
        raise InputError(message_id="recommend.error.no_purchases", as_of=as_of.isoformat())
    customer_items["last_date"] = pd.to_datetime(customer_items.last_date)

    customers = pd.Index(np.sort(customer_items.customer_id.unique()), name="customer_id")
    product_index = pd.Index(products.product_id)
    customer_items["row"] = customers.get_indexer(customer_items.customer_id)
    customer_items["col"] = product_index.get_indexer(customer_items.product_id)
    shape = (len(customers), len(products))
    counts = sp.csr_matrix((customer_items.days.to_numpy(float), (customer_items.row, customer_items.col)),
                           shape=shape)

    cycles = replenishment_cycles(customer_sales, min_repeat_buyers=settings.min_repeat_buyers)
    due = due_items(customer_items, cycles, as_of=as_of, lead_days=settings.due_lead_days)
    recent = customer_items[customer_items.last_date >= pd.Timestamp(as_of - dt.timedelta(days=settings.recent_days))]
    recent = recent.merge(due[["customer_id", "product_id"]], how="left", indicator=True)
    recent = recent[recent["_merge"] == "left_only"]
    # A product the customer returned in full is not offered to them again either.
    returned = _returned_in_full(_product_lines(history, exclude)).to_pandas()
    returned_rows = customers.get_indexer(returned.customer_id)
    returned_cols = product_index.get_indexer(returned.product_id)
    known = (returned_rows >= 0) & (returned_cols >= 0)
    blocked_rows = np.concatenate([recent.row.to_numpy(), returned_rows[known]])
    blocked_cols = np.concatenate([recent.col.to_numpy(), returned_cols[known]])
    blocked = sp.csr_matrix((np.ones(len(blocked_rows), dtype=bool), (blocked_rows, blocked_cols)), shape=shape)

    stats = _line_counts(history, sales, exclude)
    logger.info("event=recommend_training as_of=%s customers=%d products=%d catalogue=%d replenishable=%d due=%d",
                as_of, len(customers), len(products), int(products.in_catalogue.sum()), len(cycles), len(due))
    return TrainingData(as_of=as_of, settings=settings, sales=sales, products=products, customers=customers,
                        customer_items=customer_items, cycles=cycles, due=due, counts=counts, blocked=blocked,
                        stats=stats)


def _product_table(sales: ibis.Table, *, as_of: dt.date, settings: RecommendSettings) -> pd.DataFrame:
    """Summarise each product sold: most frequent name and category, median price, recent buyers.

    Every aggregate is a plain one over a group the engine can spill. Distinct buyers and orders
    are counted from distinct pairs. Medians come from each product's count of lines per price
    (:func:`_median_prices`), so the engine never keeps every line's price in memory at once. On
    100 million lines, medians and distinct counts in one aggregation spilled past 50 GB.
    """
    catalogue_start = ibis.date(as_of - dt.timedelta(days=settings.catalogue_days))
    popularity_start = ibis.date(as_of - dt.timedelta(days=settings.popularity_days))
    summary = sales.group_by("product_id").aggregate(last_sold=sales.order_date.max())
    summary = summary.mutate(in_catalogue=summary.last_sold >= catalogue_start)
    recent = sales.filter(sales.order_date >= popularity_start)
    buyers = (recent.select("product_id", "customer_id").distinct()
              .group_by("product_id").aggregate(buyers=_.customer_id.count()))
    orders = (recent.select("product_id", "basket_id").distinct()
              .group_by("product_id").aggregate(orders=_.basket_id.count()))
    table = (
        summary.left_join(_most_frequent(sales, "product_name"), "product_id")
        .left_join(_most_frequent(sales, "category"), "product_id")
        .left_join(buyers, "product_id")
        .left_join(orders, "product_id")
        .select("product_id", "product_name", "category", "buyers", "orders", "in_catalogue")
        .order_by("product_id")
        .to_pandas()
    )
    priced = sales.filter(sales.unit_price.notnull())
    price_counts = priced.group_by(["product_id", "unit_price"]).aggregate(
        lines=priced.count(), window_lines=(priced.order_date >= catalogue_start).sum(),
    ).to_pandas()
    prices = _median_prices(price_counts)
    table.insert(3, "unit_price", table.product_id.map(prices).astype("float64"))
    table["buyers"] = table.buyers.fillna(0).astype(int)
    table["orders"] = table.orders.fillna(0).astype(int)
    return table


def _median_prices(price_counts: pd.DataFrame) -> pd.Series:
    """Return each product's median price in the catalogue window, else over its whole history, by product_id.

    ``price_counts`` has one row per product and price, with ``lines`` (lines at that price) and
    ``window_lines`` (those in the window). The median of an even number of lines is the mean of
    the two middle prices, as SQL's ``median`` gives.
    """
    def median(weights: pd.Series) -> pd.Series:
        rows = price_counts[weights > 0].assign(weight=weights[weights > 0])
        rows = rows.sort_values(["product_id", "unit_price"], kind="stable")
        total = rows.groupby("product_id").weight.transform("sum")
        before = rows.groupby("product_id").weight.cumsum() - rows.weight  # lines priced below this row
        # 0-based positions of the middle line(s): (total - 1) // 2 and total // 2.
        low = rows.unit_price.where((before <= (total - 1) // 2) & ((total - 1) // 2 < before + rows.weight))
        high = rows.unit_price.where((before <= total // 2) & (total // 2 < before + rows.weight))
        return (low.groupby(rows.product_id).max() + high.groupby(rows.product_id).max()) / 2.0

    window = median(price_counts.window_lines)
    history = median(price_counts.lines)
    return window.reindex(history.index).fillna(history)


def _most_frequent(sales: ibis.Table, column: str) -> ibis.Table:
    """Select each product's most frequent non-empty value of ``column``; ties go to the smallest value."""
    valued = sales.filter(sales[column].notnull() & (sales[column] != ""))
    counted = valued.group_by(["product_id", column]).aggregate(n=valued.count())
    ranked = counted.mutate(position=ibis.row_number().over(group_by="product_id",
                                                            order_by=[ibis.desc("n"), column]))
    return ranked.filter(ranked.position == 0).select("product_id", column)


def replenishment_cycles(customer_sales: ibis.Table, *, min_repeat_buyers: int) -> pd.DataFrame:
    """Products bought again on a cycle: the median gap in days between a buyer's purchase days.

    Gaps are pooled over every repeat buyer of the product; purchases on the same day count once.
    Only products with at least ``min_repeat_buyers`` customers who bought them on two or more
    days are returned.
    """
    days = customer_sales.select("customer_id", "product_id", "order_date").distinct()
    previous = days.order_date.lag().over(group_by=["customer_id", "product_id"], order_by="order_date")
    gaps = days.mutate(gap=days.order_date.delta(previous, unit="day"))
    per_buyer = gaps.group_by(["product_id", "customer_id"]).aggregate(repeats=gaps.gap.count())
    buyers = per_buyer.group_by("product_id").aggregate(
        buyers=per_buyer.count(), repeat_buyers=(per_buyer.repeats > 0).sum(),
    )
    cycle = gaps.filter(gaps.gap.notnull()).group_by("product_id").aggregate(cycle_days=_.gap.median())
    table = buyers.filter(buyers.repeat_buyers >= min_repeat_buyers).join(cycle, "product_id")
    table = table.mutate(repeat_share=table.repeat_buyers / table.buyers).order_by("product_id").to_pandas()
    return table[["product_id", "cycle_days", "buyers", "repeat_buyers", "repeat_share"]]


def due_items(customer_items: pd.DataFrame, cycles: pd.DataFrame, *, as_of: dt.date, lead_days: int) -> pd.DataFrame:
    """Replenishment items due at ``as_of``: last purchase plus cycle within one cycle before to ``lead_days`` after."""
    columns = ["customer_id", "product_id", "last_date", "cycle_days", "due_date", "repeat_share", "row", "col"]
    joined = customer_items.merge(cycles[["product_id", "cycle_days", "repeat_share"]], on="product_id")
    if joined.empty:
        return pd.DataFrame(columns=columns)
    cycle = pd.to_timedelta(joined.cycle_days, unit="D")
    # A half-day median cycle rounds down: due dates are days.
    joined["due_date"] = (joined.last_date + cycle).dt.floor("D")
    now = pd.Timestamp(as_of)
    is_due = (joined.due_date <= now + pd.Timedelta(days=lead_days)) & (joined.due_date >= now - cycle)
    return joined.loc[is_due, columns].reset_index(drop=True)


def _line_counts(history: ibis.Table, sales: ibis.Table, exclude) -> dict:
    """Counts of the lines kept and left out, for the log and the result."""
    has_product = history.product_id.notnull() & (history.product_id != "")
    product_lines = _product_lines(history, exclude)
    positive = _positive_sales(product_lines)
    row = history.aggregate(lines=history.count(), without_product=(~has_product).sum()).to_pandas().iloc[0]
    product_count = int(product_lines.count().execute())
    positive_count = int(positive.count().execute())
    purchase_count = int(sales.count().execute())
    return {
        "lines": int(row["lines"]),
        "lines_without_product": int(row.without_product or 0),
        "non_product_lines": int(row["lines"]) - int(row.without_product or 0) - product_count,
        "returned_in_full_lines": positive_count - purchase_count,
        "purchase_lines": purchase_count,
    }
