"""Write a large synthetic order log as partitioned Parquet, drawn in chunks of customers.

:func:`write_scale_log` draws the demo shop of :mod:`revopt.demo` many times over. Each chunk is an
independent shop with the same true parameters and its own seed, so the pooled log is one draw of
``n_customers`` customers from one BG/NBD and Gamma-Gamma population. Only one chunk is in memory
at a time, so peak memory depends on ``chunk_customers`` and not on ``n_customers``.

Across chunks the generator keeps what a single shop would share:

* one product catalogue, drawn from ``catalogue_seed``, because the demo draws its catalogue from
  the shop's seed and would otherwise give every chunk different products under the same ids;
* distinct member ids, order numbers and member phone numbers. Each chunk draws them at random
  from its own block of the id space, so they keep the demo's format (``tb_`` and 8 hex digits,
  18-digit order numbers, 11-digit mobile numbers) and never collide.

The output folder contains ``orders/part-00000.parquet`` and further parts (one per chunk, with
the export's Chinese headers, so ``revopt analyze OUT/orders`` recognises the columns),
``products.parquet`` (the catalogue) and ``truth.json`` (the parameters and counts).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import operator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from revopt import demo
from revopt.demo import (
    COMPLEMENT_GROUPS,
    NEXT_ORDER_COMPLEMENT_DAYS,
    ORDER_COLUMNS,
    REPLENISHMENT_CYCLE_DAYS,
    SEASONAL_PEAKS,
    STATUS_CLOSED,
    STATUS_COMPLETED,
    STATUS_REFUNDED,
    TRUTH_FILE_NAME,
    DemoParameters,
    DemoShop,
)
from revopt.errors import ConfigError, check_range

__all__ = [
    "DEFAULT_CHUNK_CUSTOMERS",
    "MAX_CUSTOMERS",
    "ORDERS_FOLDER",
    "PRODUCTS_FILE_NAME",
    "SCALE_PARAMETERS",
    "ScaleChunk",
    "ScaleLog",
    "write_scale_log",
]

logger = logging.getLogger(__name__)

# The demo shop with customers who buy four times as often (mean rate r / alpha of one purchase
# every 4 weeks instead of 16) and vary less in their rates (r = 1 instead of 0.25). Over the
# two-year history this gives about 10 order lines per customer, noise rows included (10.2
# measured at 20,000 customers and 10.3 at 1,000,000), with 7.3 orders per customer and 1.4 lines
# per order. With r = 1 the purchase rates are exponential, so a rate above 7 purchases a week,
# which could leave a customer more orders than days, has probability e^-28 per customer.
SCALE_PARAMETERS = DemoParameters(r=1.0, alpha=4.0)

DEFAULT_CHUNK_CUSTOMERS = 100_000
ORDERS_FOLDER = "orders"
PRODUCTS_FILE_NAME = "products.parquet"
PART_NAME_FORMAT = "part-{index:05d}.parquet"
PART_GLOB = "part-*.parquet"

# Id spaces split into one block per chunk. Member ids are 8 hex digits and mobile numbers one of
# the demo's 3-digit prefixes followed by 8 digits, so a billion customers and their guests fit.
MEMBER_ID_SPACE = 16**demo.MEMBER_ID_HEX_DIGITS
PHONE_SPACE = len(demo._PHONE_PREFIXES) * 10**demo.PHONE_SUBSCRIBER_DIGITS
ORDER_ID_SPACE = demo.ORDER_ID_RANGE[1] - demo.ORDER_ID_RANGE[0]
MAX_CUSTOMERS = 10**9

# generate_shop spawns this many random streams from the shop's seed and builds the catalogue
# from the stream at this index.
_DEMO_STREAMS = 9
_CATALOGUE_STREAM = 3

# Columns that are not text. Parquet stores timestamps in milliseconds at the coarsest.
_COLUMN_TYPES = {"下单时间": pa.timestamp("ms"), "数量": pa.float64(), "单价": pa.float64(), "实付金额": pa.float64()}
ORDER_SCHEMA = pa.schema([(name, _COLUMN_TYPES.get(name, pa.string())) for name in ORDER_COLUMNS])
MONEY_DECIMALS = 2


@dataclass(frozen=True)
class ScaleChunk:
    """One chunk of a scale log: an independent demo shop written as one Parquet part.

    Attributes
    ----------
    index : int
        Position of the chunk, from 0.
    seed : int
        The :class:`~revopt.demo.DemoParameters` seed the chunk was drawn with.
    customers : int
        Customers in the chunk.
    rows : int
        Order lines written, noise rows included.
    path : pathlib.Path
        The Parquet part.
    """

    index: int
    seed: int
    customers: int
    rows: int
    path: Path


@dataclass(frozen=True)
class ScaleLog:
    """The files of a scale log and what they contain.

    Attributes
    ----------
    orders_dir : pathlib.Path
        Folder of the Parquet parts, the input for ``revopt analyze``.
    products_path, truth_path : pathlib.Path
        The catalogue (``products.parquet``) and the truth (``truth.json``).
    n_customers : int
        Customers over all chunks.
    rows : int
        Order lines over all chunks, noise rows included.
    chunks : tuple of ScaleChunk
        The chunks in order.
    """

    orders_dir: Path
    products_path: Path
    truth_path: Path
    n_customers: int
    rows: int
    chunks: tuple[ScaleChunk, ...]


# Rows per Parquet row group: engines read row groups in parallel, so a part of a million lines
# written as one group would be read by one thread.
ROW_GROUP_ROWS = 128 * 1024


def write_scale_log(
    out_dir: str | Path,
    *,
    n_customers: int,
    chunk_customers: int = DEFAULT_CHUNK_CUSTOMERS,
    seed: int = 2025,
    params: DemoParameters = SCALE_PARAMETERS,
    catalogue_seed: int | None = None,
) -> ScaleLog:
    """Write a synthetic order log of ``n_customers`` customers as Parquet parts, one chunk at a time.

    Parameters
    ----------
    out_dir : str or pathlib.Path
        Folder that receives ``orders/``, ``products.parquet`` and ``truth.json``; created if
        missing. Parts, catalogue and truth of an earlier run in the same folder are replaced.
    n_customers : int
        Customers in the whole log, from 1 to :data:`MAX_CUSTOMERS`.
    chunk_customers : int, default 100000
        Largest number of customers drawn at once. The customers are split into
        ``ceil(n_customers / chunk_customers)`` chunks of nearly equal size. Peak memory grows
        with this number and not with ``n_customers``: with :data:`SCALE_PARAMETERS` it measured
        1.1 GB at 100,000 and 2.1 GB at 200,000 (x86-64 Linux, pandas 3.1, pyarrow 26).
    seed : int, default 2025
        Seed of the whole log. Chunk ``i`` is drawn with a seed derived from ``seed`` and ``i``.
    params : DemoParameters, default SCALE_PARAMETERS
        True parameters, history and noise shares of every chunk. Its ``n_customers`` and
        ``seed`` are ignored because each chunk sets its own.
    catalogue_seed : int, optional
        Seed of the product catalogue shared by all chunks; defaults to ``seed``. The catalogue
        is then the one ``generate_shop(DemoParameters(seed=catalogue_seed))`` draws.

    Returns
    -------
    ScaleLog
        Paths, counts and the chunks written.

    Raises
    ------
    ConfigError
        If ``n_customers``, ``chunk_customers``, ``seed`` or ``catalogue_seed`` is out of range,
        or if the orders folder cannot be created. Also if a chunk's customers and guest orders
        do not fit its block of phone numbers, which needs hundreds of millions of customers.
    TypeError
        If ``n_customers``, ``chunk_customers``, ``seed`` or ``catalogue_seed`` is not an integer.

    Notes
    -----
    Rows in a part are sorted by 下单时间; parts follow each other by chunk, not by time. Guests
    have a null 买家会员名, and customers of unknown gender a null 性别. 数量, 单价 and 实付金额
    are float64 with money rounded to cents, and 下单时间 is a timestamp without time zone in China
    local time, as in the demo export. Each chunk's parameters are ``params`` with the chunk's
    size and seed, so the pooled log follows the same BG/NBD and Gamma-Gamma process as one shop.

    NOTE: a BG/NBD fit in calendar time puts ``a`` and ``b`` about 2% below the truth because of
    the seasonal peaks, as measured at 400,000 and 1,000,000 customers. With
    ``seasonal_amplitude=0`` the fit at 400,000 customers was within 2 standard errors. With
    millions of customers 2% is many standard errors, so compare large fits with the truth in
    relative terms or switch seasonality off.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     log = write_scale_log(folder, n_customers=300, chunk_customers=200, seed=1)
    ...     [chunk.customers for chunk in log.chunks], sorted(p.name for p in log.orders_dir.iterdir())
    ([150, 150], ['part-00000.parquet', 'part-00001.parquet'])
    """
    n_customers, chunk_customers, seed = (operator.index(value) for value in (n_customers, chunk_customers, seed))
    catalogue_seed = seed if catalogue_seed is None else operator.index(catalogue_seed)
    check_range("n_customers", n_customers, low=1, high=MAX_CUSTOMERS)
    check_range("chunk_customers", chunk_customers, low=1)
    check_range("seed", seed, low=0)
    check_range("catalogue_seed", catalogue_seed, low=0)

    out_dir = Path(out_dir)
    orders_dir = out_dir / ORDERS_FOLDER
    try:
        orders_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(message_id="errors.bad_out_dir", path=orders_dir, detail=error.strerror or error) from error
    for stale in orders_dir.glob(PART_GLOB):
        stale.unlink()

    n_chunks = math.ceil(n_customers / chunk_customers)
    catalogue = _shared_catalogue(catalogue_seed)
    chunks: list[ScaleChunk] = []
    counts: dict[str, int] = {}
    for index, size in enumerate(_chunk_sizes(n_customers, n_chunks)):
        chunk_seed, id_rng = _chunk_randomness(seed, index)
        chunk_params = dataclasses.replace(params, n_customers=size, seed=chunk_seed)
        chunk = _generate_shop_with_catalogue(chunk_params, catalogue)
        table = _order_table(chunk, _IdBlocks(index, n_chunks), id_rng)
        path = orders_dir / PART_NAME_FORMAT.format(index=index)
        pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS)
        chunks.append(ScaleChunk(index, chunk_seed, size, table.num_rows, path))
        for name, value in _chunk_counts(chunk).items():
            counts[name] = counts.get(name, 0) + value
        logger.info(
            "scale_chunk_written chunk=%d chunks=%d seed=%d customers=%d rows=%d path=%s",
            index, n_chunks, chunk_seed, size, table.num_rows, path,
        )
        # Free this chunk before the next one is drawn, so that only one is in memory.
        del chunk, table

    products_path = out_dir / PRODUCTS_FILE_NAME
    pq.write_table(_products_table(catalogue), products_path)
    log = ScaleLog(
        orders_dir=orders_dir,
        products_path=products_path,
        truth_path=out_dir / TRUTH_FILE_NAME,
        n_customers=n_customers,
        rows=sum(chunk.rows for chunk in chunks),
        chunks=tuple(chunks),
    )
    truth = _truth_document(log, params, seed=seed, catalogue_seed=catalogue_seed, chunk_customers=chunk_customers,
                            counts=counts, products=len(catalogue.sku))
    log.truth_path.write_text(json.dumps(truth, ensure_ascii=False, indent=2), encoding="utf-8")
    logger.info("scale_log_written out_dir=%s customers=%d rows=%d chunks=%d", out_dir, n_customers, log.rows, n_chunks)
    return log


# ---------------------------------------------------------------------------------------------
# Chunks and their randomness
# ---------------------------------------------------------------------------------------------


def _chunk_sizes(n_customers: int, n_chunks: int) -> list[int]:
    """Split ``n_customers`` into ``n_chunks`` sizes that differ by at most one, larger ones first."""
    base, extra = divmod(n_customers, n_chunks)
    return [base + 1] * extra + [base] * (n_chunks - extra)


def _chunk_randomness(seed: int, index: int) -> tuple[int, np.random.Generator]:
    """Return chunk ``index``'s shop seed and a generator for its ids, both derived from ``seed`` alone."""
    shop_sequence, id_sequence = np.random.SeedSequence(seed, spawn_key=(index,)).spawn(2)
    shop_seed = int(shop_sequence.generate_state(1, dtype=np.uint64)[0])
    return shop_seed, np.random.default_rng(id_sequence)


def _shared_catalogue(catalogue_seed: int) -> demo._Catalogue:
    """Build the catalogue that ``generate_shop`` builds for a shop with seed ``catalogue_seed``."""
    streams = np.random.SeedSequence(catalogue_seed).spawn(_DEMO_STREAMS)
    return demo._build_catalogue(np.random.default_rng(streams[_CATALOGUE_STREAM]))


def _generate_shop_with_catalogue(params: DemoParameters, catalogue: demo._Catalogue) -> demo.DrawnShop:
    """Draw one chunk's shop over the catalogue shared by every chunk."""
    return demo.draw_shop(params, catalogue)


# ---------------------------------------------------------------------------------------------
# Ids unique across chunks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _IdBlocks:
    """Chunk ``index`` of ``n_chunks`` owns the ``index``-th of ``n_chunks`` equal blocks of each id space."""

    index: int
    n_chunks: int

    def draw(self, space: int, size: int, rng: np.random.Generator, *, label: str) -> np.ndarray:
        """Draw ``size`` distinct numbers from this chunk's block of ``range(space)``.

        ``label`` names the ids in the ConfigError raised when the block is smaller than ``size``.
        """
        block = space // self.n_chunks
        check_range(label, size, high=block)
        return self.index * block + rng.choice(block, size=size, replace=False)


def _member_ids(numbers: np.ndarray) -> np.ndarray:
    """Format numbers below MEMBER_ID_SPACE as member ids such as ``tb_4f2a9c1e``."""
    digits = demo.MEMBER_ID_HEX_DIGITS
    shifts = 4 * np.arange(digits - 1, -1, -1)
    nibbles = (numbers[:, None] >> shifts) & 0xF
    ascii_codes = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles]
    hex_text = np.ascontiguousarray(ascii_codes).view(f"S{digits}")[:, 0].astype(str)
    return np.char.add(demo.MEMBER_ID_PREFIX, hex_text)


def _phone_numbers(numbers: np.ndarray) -> np.ndarray:
    """Format numbers below PHONE_SPACE as mobile numbers: a demo prefix, then 8 subscriber digits.

    The prefix comes from the lowest part of the number, so a chunk's block spans every prefix.
    """
    prefixes = np.array(demo._PHONE_PREFIXES, dtype=np.int64)
    prefix = prefixes[numbers % prefixes.size]
    subscriber = numbers // prefixes.size
    return (prefix * 10**demo.PHONE_SUBSCRIBER_DIGITS + subscriber).astype(str)


def _order_table(chunk: demo.DrawnShop, blocks: _IdBlocks, rng: np.random.Generator) -> pa.Table:
    """Lay out the shop's order lines as an Arrow table, with ids drawn from the chunk's blocks.

    The shop's own order numbers, member ids and phone numbers are replaced one for one: each
    order, customer and guest order receives a new id, and every row of it shows that id.
    """
    rows = chunk.shop.orders
    n_customers = len(chunk.shop.customers)
    is_guest = chunk.order_customer < 0
    n_guests = int(is_guest.sum())

    # Each row's position in order_totals, found through its order number.
    by_number = np.argsort(chunk.order_numbers)
    row_numbers = pa.array(rows["订单编号"]).cast(pa.int64()).to_numpy()
    order = by_number[np.searchsorted(chunk.order_numbers, row_numbers, sorter=by_number)]

    order_ids = demo.ORDER_ID_RANGE[0] + blocks.draw(ORDER_ID_SPACE, is_guest.size, rng, label="orders in a chunk")
    member_ids = _member_ids(blocks.draw(MEMBER_ID_SPACE, n_customers, rng, label="customers in a chunk"))
    # Guest orders come from one-off buyers, each with their own phone number, after the customers.
    phones = blocks.draw(PHONE_SPACE, n_customers + n_guests, rng, label="customers and guest orders in a chunk")
    person = np.where(is_guest, n_customers + np.cumsum(is_guest) - 1, chunk.order_customer)

    row_customer = pa.array(chunk.order_customer[order], mask=is_guest[order])
    gender = _text(rows["性别"])
    columns = {
        "订单编号": pa.array(order_ids[order]).cast(pa.string()),
        "买家会员名": pa.array(member_ids, type=pa.string()).take(row_customer),
        "手机号": pa.array(_phone_numbers(phones[person[order]]), type=pa.string()),
        "性别": pc.if_else(pc.equal(gender, demo.GENDER_UNKNOWN), pa.scalar(None, pa.string()), gender),
        "下单时间": pa.array(rows["下单时间"]).cast(ORDER_SCHEMA.field("下单时间").type),
        "数量": pa.array(rows["数量"]).cast(pa.float64()),
    }
    for name in ("收货人姓名", "城市", "商品ID", "商品名称", "类目", "订单状态"):
        columns[name] = _text(rows[name])
    for name in ("单价", "实付金额"):
        columns[name] = pa.array(np.round(rows[name].to_numpy(dtype=float), MONEY_DECIMALS))
    return pa.table([columns[name] for name in ORDER_COLUMNS], schema=ORDER_SCHEMA)


def _text(column: pd.Series) -> pa.Array:
    return pa.array(column).cast(pa.string())


def _products_table(catalogue: demo._Catalogue) -> pa.Table:
    """Convert the catalogue to the table in products.parquet, without pandas metadata so that files stay byte-stable."""
    return pa.Table.from_pandas(demo._products_frame(catalogue), preserve_index=False).replace_schema_metadata(None)


# ---------------------------------------------------------------------------------------------
# Truth
# ---------------------------------------------------------------------------------------------

_KIND_COUNTS = {
    "purchase_orders": demo.ORDER_KIND_PURCHASE,
    "closed_orders": demo.ORDER_KIND_CLOSED,
    "refunded_orders": demo.ORDER_KIND_REFUNDED,
    "guest_orders": demo.ORDER_KIND_GUEST,
}


def _chunk_counts(chunk: demo.DrawnShop) -> dict[str, int]:
    shop = chunk.shop
    kinds = shop.order_totals["kind"].value_counts()
    return {
        "customers": len(shop.customers),
        "alive_at_end": int(shop.customers["alive"].sum()),
        "rows": len(shop.orders),
        "duplicate_rows": chunk.duplicate_rows,
        **{name: int(kinds.get(kind, 0)) for name, kind in _KIND_COUNTS.items()},
    }


def _truth_document(
    log: ScaleLog,
    params: DemoParameters,
    *,
    seed: int,
    catalogue_seed: int,
    chunk_customers: int,
    counts: dict[str, int],
    products: int,
) -> dict:
    parameters = dataclasses.asdict(dataclasses.replace(params, n_customers=log.n_customers, seed=seed))
    parameters["start"] = params.start.isoformat()
    parameters["end"] = params.end.isoformat()
    return {
        "time_unit": "week",
        "currency": "CNY",
        "models": "BG/NBD and Gamma-Gamma in operational time (see seasonal_peaks), one true order per customer-day",
        "parameters": parameters,
        "seed": seed,
        "catalogue_seed": catalogue_seed,
        "n_customers": log.n_customers,
        "rows": log.rows,
        "chunk_customers": chunk_customers,
        "statuses": {"completed": STATUS_COMPLETED, "closed": STATUS_CLOSED, "refunded": STATUS_REFUNDED},
        "seasonal_peaks": [peak._asdict() for peak in SEASONAL_PEAKS],
        "complement_groups": [list(group) for group in COMPLEMENT_GROUPS],
        "next_order_complement_days": NEXT_ORDER_COMPLEMENT_DAYS,
        "replenishment_cycle_days": dict(REPLENISHMENT_CYCLE_DAYS),
        "counts": {**counts, "products": products, "lines_per_customer": counts["rows"] / log.n_customers},
        "chunks": [
            {"index": chunk.index, "seed": chunk.seed, "customers": chunk.customers, "rows": chunk.rows,
             "file": chunk.path.relative_to(log.orders_dir.parent).as_posix()}
            for chunk in log.chunks
        ],
    }
