"""A synthetic Chinese e-commerce shop whose true CLV parameters are known.

``revopt demo`` analyses the shop that :func:`generate_shop` draws, and tests fit the CLV models
to it and compare the estimates with :class:`DemoParameters`. The generator draws:

* customers from the BG/NBD process: purchase rate ``lambda ~ Gamma(r, alpha)`` per week, dropout
  probability ``p ~ Beta(a, b)`` after each repeat purchase, purchases as a Poisson process while
  alive, the first purchase as the acquisition event;
* order values from the Gamma-Gamma model: ``nu ~ Gamma(q, gamma)`` per customer and each order's
  value ``z ~ Gamma(p, nu)`` (shape, rate);
* seasonality as a change of clock: the process runs in *operational time*, which passes faster
  around 618 (June 18), 双十一 (November 11) and 双十二 (December 12). Both models hold exactly in
  operational time. The clock is normalised so that the history has as many operational days as
  calendar days, and the bumps are small enough for fits in calendar time to recover the
  parameters;
* order lines over a catalogue of six categories, each noun in up to four price tiers, with
  Chinese names, phone numbers and cities, and an evening-heavy time of day in China local time
  (UTC+8, written without offset);
* which products fill an order, chosen after the order's time and value are fixed. Each customer
  leans to one or two favourite categories. Further lines of an order, and the customer's next
  order, often add a complement of its main product (:data:`COMPLEMENT_GROUPS`). A consumable
  often comes back in an order placed about one cycle after it was bought
  (:data:`REPLENISHMENT_CYCLE_DAYS`). Every product must fit its line's price band, so the
  observed rates are below the configured chances;
* at most one true order per customer and calendar day, because analyses count purchase days:
  a repeat purchase that lands on a day the customer already bought on moves to the next free
  day (about 1% of the default shop's orders);
* noise that ingest has to remove, drawn *in addition to* the true process: closed orders
  (交易关闭, never paid), refunded orders (退款成功), guest orders with an empty member id, and
  exact duplicate rows. Switching the noise off leaves the true orders unchanged.

The mapping between the paper's symbols and this module: ``r, alpha, a, b`` are the BG/NBD
population parameters; ``p, q, gamma`` are the Gamma-Gamma ones. In :attr:`DemoShop.customers`,
``lambda`` and ``p`` are a customer's BG/NBD purchase rate and dropout probability, and ``nu`` is
their Gamma-Gamma spend rate.

References
----------
Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). "Counting your customers" the easy way: an
alternative to the Pareto/NBD model. Marketing Science 24(2), 275-284.

Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). RFM and CLV: using iso-value curves for
customer base analysis. Journal of Marketing Research 42(4), 415-430.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.special import ndtr

from revopt.errors import ConfigError, check_range
from revopt.timeunits import DAYS_PER_UNIT

__all__ = [
    "ORDER_COLUMNS",
    "STATUS_COMPLETED",
    "STATUS_CLOSED",
    "STATUS_REFUNDED",
    "TRUTH_FILE_NAME",
    "SEASONAL_PEAKS",
    "SeasonalPeak",
    "COMPLEMENT_GROUPS",
    "REPLENISHMENT_CYCLE_DAYS",
    "NEXT_ORDER_COMPLEMENT_DAYS",
    "DemoParameters",
    "DemoShop",
    "generate_shop",
    "write_export",
]

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Export layout
# ---------------------------------------------------------------------------------------------

ORDER_COLUMNS = (
    "订单编号",
    "买家会员名",
    "收货人姓名",
    "性别",
    "手机号",
    "城市",
    "下单时间",
    "商品ID",
    "商品名称",
    "类目",
    "数量",
    "单价",
    "实付金额",
    "订单状态",
)
STATUS_COMPLETED = "交易成功"
STATUS_CLOSED = "交易关闭"
STATUS_REFUNDED = "退款成功"

TRUTH_FILE_NAME = "truth.json"
EXPORT_ENCODING = "gbk"
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"

# Kinds of order in DemoShop.order_totals. Only "purchase" orders belong to the BG/NBD process.
ORDER_KIND_PURCHASE = "purchase"
ORDER_KIND_CLOSED = "closed"
ORDER_KIND_REFUNDED = "refunded"
ORDER_KIND_GUEST = "guest"

DAYS_PER_WEEK = DAYS_PER_UNIT["week"]
SECONDS_PER_HOUR = 3600
CENTS_PER_YUAN = 100

# ---------------------------------------------------------------------------------------------
# Seasonality
# ---------------------------------------------------------------------------------------------


class SeasonalPeak(NamedTuple):
    """A sales festival: a Gaussian bump in the purchase intensity, repeated every year."""

    name: str
    month: int
    day: int
    height: float
    """Extra intensity at the peak, relative to the baseline (1.0 doubles it)."""
    width_days: float
    """Standard deviation of the bump in days."""


# Chosen by eye to look like a shop's daily order curve: 双十一 strongest, 618 next, 双十二 mild.
# Fits in calendar time see the bumps as a small misspecification. Over 16 seeds at 20,000
# customers these heights moved the BG/NBD estimates of a and b by 0.5-0.8 standard errors
# downwards against fits in operational time, and 2.5 times these heights by 1.1-1.8.
# tests/test_demo.py requires the default shop's estimates within 3 standard errors.
SEASONAL_PEAKS = (
    SeasonalPeak("618", 6, 18, 0.8, 4.0),
    SeasonalPeak("双十一", 11, 11, 1.2, 4.0),
    SeasonalPeak("双十二", 12, 12, 0.4, 3.0),
)

# The inverse clock is interpolated on an hourly grid. Its error is well under an hour, which
# rarely matters because orders are placed on whole days.
CLOCK_GRID_POINTS_PER_DAY = 24

# ---------------------------------------------------------------------------------------------
# Orders and lines
# ---------------------------------------------------------------------------------------------

# Lines per order: 1 + Poisson(EXTRA_LINES_MEAN), at most MAX_LINES_PER_ORDER, and at most one line
# per MIN_LINE_AMOUNT of order value, so that small orders have one line.
EXTRA_LINES_MEAN = 0.5
MAX_LINES_PER_ORDER = 5
MIN_LINE_AMOUNT = 30.0
# Each line receives at least half of MIN_LINE_AMOUNT, about the list price of the cheapest
# products, and Dirichlet(LINE_SHARE_CONCENTRATION) shares of the rest of the order value.
LINE_SHARE_CONCENTRATION = 2.0
MAX_QUANTITY = 10
# A line's product is drawn among those with list price from (line amount / quantity allowed) to
# (line amount * MAX_LIST_PRICE_FACTOR). The unit price paid is then between 1 / MAX_LIST_PRICE_FACTOR
# of the list price and the list price (coupons, 满减), unless the band contains no product.
MAX_LIST_PRICE_FACTOR = 1.5
# A line whose band offers only products its order already has is redrawn from the whole
# catalogue after this many tries in its band.
BAND_REDRAWS = 5
# Closed and refunded orders fall within this many days after one of the customer's true orders.
NOISE_LAG_DAYS = 14.0
# A complement of an order's product joins the customer's next order only if that order comes
# within this many days, because a later order no longer belongs to the same purchase need.
NEXT_ORDER_COMPLEMENT_DAYS = 60

# ---------------------------------------------------------------------------------------------
# Catalogue
# ---------------------------------------------------------------------------------------------


class _CategorySpec(NamedTuple):
    name: str
    share: float
    """Share of the catalogue's popularity weight."""
    items: tuple[tuple[str, float], ...]
    """Product nouns with a typical list price in CNY."""


_CATEGORIES = (
    _CategorySpec(
        "服饰",
        0.24,
        (("T恤", 79), ("连衣裙", 199), ("牛仔裤", 159), ("卫衣", 139),
         ("衬衫", 129), ("针织衫", 149), ("运动鞋", 299), ("羽绒服", 499), ("袜子", 15)),
    ),
    _CategorySpec(
        "美妆",
        0.20,
        (("口红", 189), ("面膜", 89), ("精华液", 329), ("粉底液", 259),
         ("眼霜", 269), ("洗面奶", 69), ("防晒霜", 119), ("卸妆水", 79)),
    ),
    _CategorySpec(
        "食品",
        0.20,
        (("坚果礼盒", 129), ("牛肉干", 49), ("饼干", 29), ("绿茶", 88),
         ("咖啡豆", 79), ("蜂蜜", 59), ("大米", 69), ("螺蛳粉", 39), ("辣条", 12)),
    ),
    _CategorySpec(
        "数码",
        0.10,
        (("蓝牙耳机", 199), ("充电宝", 99), ("数据线", 29), ("手机壳", 39),
         ("机械键盘", 299), ("无线鼠标", 89), ("智能手表", 699), ("移动硬盘", 399)),
    ),
    _CategorySpec(
        "家居",
        0.14,
        (("四件套", 259), ("收纳盒", 39), ("保温杯", 89), ("抱枕", 49),
         ("毛巾", 35), ("拖鞋", 29), ("台灯", 129), ("香薰", 69), ("抽纸", 19)),
    ),
    _CategorySpec(
        "母婴",
        0.12,
        (("纸尿裤", 129), ("奶瓶", 89), ("婴儿湿巾", 39), ("儿童餐椅", 269),
         ("爬行垫", 159), ("婴儿推车", 899), ("奶粉", 299), ("宝宝辅食", 49)),
    ),
)
# Every noun is sold in its 经典款 tier and in each other tier with probability
# EXTRA_TIER_PROBABILITY, so a category offers cheaper and dearer versions of most nouns (upsell).
# A tier's list price is the noun's typical price times the tier's factor, jittered by a
# log-uniform factor in [1/e^0.1, e^0.1] so that neighbouring tiers never overlap in price.
_PRICE_TIERS = (("入门款", 0.7), ("经典款", 1.0), ("升级版", 1.4), ("旗舰款", 2.0))
BASE_TIER = "经典款"
EXTRA_TIER_PROBABILITY = 0.5
TIER_PRICE_LOG_JITTER = 0.1
# Popularity within a category falls with rank as rank ** -POPULARITY_EXPONENT (Zipf-like).
POPULARITY_EXPONENT = 0.8
SKU_NUMBER_DIGITS = 5

# Consumables and the days one purchase typically lasts. Illustrative values chosen by eye, not
# measured: a pack of diapers or a can of formula lasts about a month, a bottle of cleanser two.
REPLENISHMENT_CYCLE_DAYS = MappingProxyType(
    {
        "面膜": 30, "洗面奶": 60, "卸妆水": 60, "防晒霜": 90,
        "咖啡豆": 30, "绿茶": 60, "大米": 45, "蜂蜜": 90, "螺蛳粉": 30,
        "抽纸": 45,
        "纸尿裤": 30, "婴儿湿巾": 30, "奶粉": 30, "宝宝辅食": 30,
    }
)

# Groups of nouns bought together: each noun in a group complements the others, and a noun in
# several groups complements the union of its partners. Some groups cross categories.
COMPLEMENT_GROUPS = (
    ("面膜", "卸妆水", "洗面奶"),
    ("口红", "粉底液", "卸妆水"),
    ("精华液", "眼霜", "面膜"),
    ("奶瓶", "奶粉"),
    ("奶粉", "宝宝辅食"),
    ("纸尿裤", "婴儿湿巾"),
    ("婴儿推车", "爬行垫"),
    ("手机壳", "数据线", "充电宝"),
    ("蓝牙耳机", "充电宝"),
    ("机械键盘", "无线鼠标"),
    ("咖啡豆", "保温杯"),
    ("绿茶", "保温杯"),
    ("四件套", "抱枕"),
    ("运动鞋", "袜子"),
    ("坚果礼盒", "牛肉干"),
)

# ---------------------------------------------------------------------------------------------
# People
# ---------------------------------------------------------------------------------------------

# Common surnames with rough relative frequencies, illustrative and not an official statistic.
_SURNAMES = (
    ("王", 7.1), ("李", 7.0), ("张", 6.7), ("刘", 5.4), ("陈", 4.5), ("杨", 3.1), ("黄", 2.2),
    ("赵", 2.0), ("吴", 1.8), ("周", 1.7), ("徐", 1.3), ("孙", 1.2), ("马", 1.1), ("朱", 1.1),
    ("胡", 1.0), ("郭", 1.0), ("何", 0.9), ("林", 0.9), ("高", 0.9), ("罗", 0.8),
)
_MALE_GIVEN = tuple("伟强磊军洋勇杰涛明超辉鹏浩宇俊峰建华志文")
_FEMALE_GIVEN = tuple("芳娜敏静丽艳娟霞婷雪琳颖慧佳欣怡萍玲晶倩")
TWO_CHARACTER_GIVEN_NAME_SHARE = 0.7
GENDER_MALE = "男"
GENDER_FEMALE = "女"
GENDER_UNKNOWN = ""
UNKNOWN_GENDER_SHARE = 0.08
# Among customers of known gender, because the catalogue leans to 美妆 and 母婴.
FEMALE_SHARE = 0.62

# Cities with rough, illustrative relative weights of online shoppers.
_CITIES = (
    ("上海", 8), ("北京", 7), ("广州", 6), ("深圳", 6), ("杭州", 5), ("成都", 5), ("重庆", 5),
    ("武汉", 4), ("南京", 4), ("苏州", 4), ("西安", 3), ("天津", 3), ("长沙", 3), ("郑州", 3),
    ("青岛", 2), ("宁波", 2), ("东莞", 2), ("合肥", 2), ("沈阳", 2), ("昆明", 2), ("厦门", 2),
    ("福州", 2), ("济南", 2), ("哈尔滨", 1),
)
# Mainland mobile number prefixes (three digits). The remaining eight digits are random.
_PHONE_PREFIXES = (
    130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 150, 151, 152, 153, 155, 156, 157, 158,
    159, 166, 170, 171, 173, 175, 176, 177, 178, 180, 181, 182, 183, 184, 185, 186, 187, 188,
    189, 191, 198, 199,
)
PHONE_SUBSCRIBER_DIGITS = 8
MEMBER_ID_PREFIX = "tb_"
MEMBER_ID_HEX_DIGITS = 8
ORDER_ID_RANGE = (10**17, 10**18)  # 18-digit order numbers, like a Taobao export

# Relative order counts per local hour 0-23: busy at lunch, busiest 20:00-23:00, a midnight tail.
# Shaped by eye, not fitted to data.
_HOUR_WEIGHTS = (
    3.0, 1.6, 0.8, 0.4, 0.3, 0.3, 0.6, 1.2, 2.2, 3.2, 4.0, 4.3,
    4.8, 4.5, 4.0, 4.0, 4.1, 4.2, 4.5, 5.4, 6.8, 7.5, 7.0, 5.0,
)


# ---------------------------------------------------------------------------------------------
# Public types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoParameters:
    """True parameters and settings of a demo shop. Time is in weeks, money in CNY.

    Parameters
    ----------
    r, alpha : float, default 0.25 and 4.0
        Shape and rate of the Gamma distribution of purchase rates (per week). The mean rate
        ``r / alpha`` is one purchase per 16 weeks, close to the CDNOW fit of Fader, Hardie and Lee
        (2005), r = 0.243 and alpha = 4.414.
    a, b : float, default 0.8 and 2.5
        Beta distribution of the dropout probability after each repeat purchase; mean
        ``a / (a + b)`` about 0.24.
    p, q, gamma : float, default 6.0, 3.8 and 70.0
        Gamma-Gamma spend model: ``nu ~ Gamma(q, rate gamma)``, order value ``z ~ Gamma(p, rate nu)``.
        The mean order value ``p * gamma / (q - 1)`` is 150 CNY.
    n_customers : int, default 20000
        Customers acquired in the acquisition window.
    start, end : datetime.date, default 2024-01-01 and 2025-12-31
        First and last calendar day of the history, both included.
    acquisition_months : int, default 12
        Customers make their first purchase within this many months from ``start``.
    seasonal_amplitude : float, default 1.0
        Multiplies the heights of :data:`SEASONAL_PEAKS`; 0 switches seasonality off.
    cancelled_share, refunded_share, guest_share : float, default 0.03, 0.02 and 0.01
        Closed (never paid), refunded and guest orders added per true order, in expectation.
    duplicate_share : float, default 0.005
        Exact duplicate rows added per order line, in expectation.
    taste_strength : float, default 0.7
        Weight of a customer's favourite categories in their category mix. The mix is
        ``(1 - taste_strength) * share + taste_strength * favourite``, where ``share`` is the
        catalogue's category share and ``favourite`` spreads 1 evenly over the customer's one or two
        favourite categories. With 0, every customer buys with the catalogue's mix.
    second_category_share : float, default 0.4
        Share of customers with a second favourite category.
    complement_probability : float, default 0.5
        Chance that each further line of an order whose main (largest) line has complements is
        filled with a complement, drawn among the complements that fit the line's price band. A line
        without a complement in its band keeps its product, so the observed rate is lower.
    next_order_complement_probability : float, default 0.3
        Chance that a customer's next order, if it comes within ``NEXT_ORDER_COMPLEMENT_DAYS``, has a
        complement of the previous order's first product with complements, in the first line whose
        price band fits one.
    replenish_probability : float, default 0.7
        Chance that an order placed exactly one cycle after a customer's last consumable purchase
        repeats that SKU (see :data:`REPLENISHMENT_CYCLE_DAYS`). At a gap of ``g`` days after a
        purchase with cycle ``c`` the chance is ``replenish_probability * exp(-ln(g / c)**2 /
        (2 * cycle_log_sd**2))``. The SKU takes the first line whose price band contains its list
        price, and the order is left as drawn when no line fits.
    cycle_log_sd : float, default 0.3
        Width of the replenishment window on the log scale: 0.3 gives half the peak chance at gaps
        0.7 and 1.4 times the cycle.
    seed : int, default 2025
        Seed of the random generators; the same parameters give the same shop.

    Raises
    ------
    ConfigError
        If a parameter is outside its range, the history is empty, or the acquisition window
        does not end before ``end``.
    """

    r: float = 0.25
    alpha: float = 4.0
    a: float = 0.8
    b: float = 2.5
    p: float = 6.0
    q: float = 3.8
    gamma: float = 70.0
    n_customers: int = 20_000
    start: date = date(2024, 1, 1)
    end: date = date(2025, 12, 31)
    acquisition_months: int = 12
    seasonal_amplitude: float = 1.0
    cancelled_share: float = 0.03
    refunded_share: float = 0.02
    guest_share: float = 0.01
    duplicate_share: float = 0.005
    taste_strength: float = 0.7
    second_category_share: float = 0.4
    complement_probability: float = 0.5
    next_order_complement_probability: float = 0.3
    replenish_probability: float = 0.7
    cycle_log_sd: float = 0.3
    seed: int = 2025

    def __post_init__(self) -> None:
        for name in ("r", "alpha", "a", "b", "p", "q", "gamma"):
            check_range(name, getattr(self, name), low=0.0, low_inclusive=False)
        for name in ("n_customers", "acquisition_months", "seed"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ConfigError(f"{name} must be an integer; got {value!r}")
        check_range("n_customers", self.n_customers, low=1)
        check_range("acquisition_months", self.acquisition_months, low=1)
        check_range("seed", self.seed, low=0)
        check_range("seasonal_amplitude", self.seasonal_amplitude, low=0.0)
        unit_interval = (
            "cancelled_share", "refunded_share", "guest_share", "duplicate_share", "taste_strength",
            "second_category_share", "complement_probability", "next_order_complement_probability",
            "replenish_probability",
        )
        for name in unit_interval:
            check_range(name, getattr(self, name), low=0.0, high=1.0)
        check_range("cycle_log_sd", self.cycle_log_sd, low=0.0, low_inclusive=False)
        if self.end <= self.start:
            raise ConfigError(f"end must be after start; got start={self.start} and end={self.end}")
        if self.acquisition_end > self.end:
            raise ConfigError(
                f"the acquisition window of {self.acquisition_months} months from {self.start} "
                f"ends after end={self.end}; shorten acquisition_months or move end"
            )

    @property
    def history_days(self) -> int:
        """Calendar days from ``start`` to ``end``, both included."""
        return (self.end - self.start).days + 1

    @property
    def acquisition_end(self) -> date:
        """Last day on which a customer can make their first purchase."""
        first_day_after = pd.Timestamp(self.start) + pd.DateOffset(months=self.acquisition_months)
        return (first_day_after - pd.Timedelta(days=1)).date()


@dataclass(frozen=True)
class DemoShop:
    """A generated shop: the order export, and the truth behind it.

    Attributes
    ----------
    orders : pandas.DataFrame
        One row per order line with the columns :data:`ORDER_COLUMNS`, sorted by 下单时间. Identifiers,
        names and phone numbers are strings, 下单时间 is a naive ``datetime64`` in China local time,
        数量 an integer, 单价 and 实付金额 CNY amounts with two decimals (实付金额 = 数量 × 单价).
        Includes the noise rows.
    customers : pandas.DataFrame
        One row per customer: ``member_id``, ``name``, ``gender``, ``phone``, ``city``,
        ``first_order_at``, ``lambda`` (purchases per week, operational time), ``p`` (dropout
        probability), ``nu`` (spend rate), ``alive`` (still alive at the end of the history),
        ``n_orders`` (true orders including the first), ``favourite_category`` and
        ``second_category`` (empty for customers with one favourite).
    order_totals : pandas.DataFrame
        One row per order, true or noise: ``order_id``, ``member_id`` (empty for guests), ``kind``
        (purchase, closed, refunded or guest) and ``total`` (CNY, the sum of the order's lines).
    parameters : DemoParameters
        The parameters the shop was drawn with.
    products : pandas.DataFrame
        The catalogue, one row per product sorted by list price: ``product_id`` (商品ID), ``name``
        (商品名称), ``noun``, ``tier``, ``category`` (类目), ``list_price`` (CNY), ``popularity``
        (weight among all products when no taste or band applies, summing to 1), ``is_consumable``,
        ``cycle_days`` (nullable integer, missing for durables) and ``complements`` (tuple of the
        nouns that complement this one, see :data:`COMPLEMENT_GROUPS`).
    """

    orders: pd.DataFrame
    customers: pd.DataFrame
    order_totals: pd.DataFrame
    parameters: DemoParameters
    products: pd.DataFrame


# ---------------------------------------------------------------------------------------------
# Seasonal clock
# ---------------------------------------------------------------------------------------------


class _SeasonalClock:
    """Map calendar days since ``start`` to operational days and back.

    Operational time is the integral of the relative intensity
    ``scale * (1 + sum_k height_k * exp(-(t - centre_k)**2 / (2 * width_k**2)))``, where ``scale``
    makes the history last as many operational days as calendar days.
    """

    def __init__(self, params: DemoParameters) -> None:
        centres, heights, widths = [], [], []
        # Peaks of the year before and after the history leak into it through their tails.
        for year in range(params.start.year - 1, params.end.year + 2):
            for peak in SEASONAL_PEAKS:
                centres.append((date(year, peak.month, peak.day) - params.start).days)
                heights.append(params.seasonal_amplitude * peak.height)
                widths.append(peak.width_days)
        self._centres = np.asarray(centres, dtype=float)
        self._heights = np.asarray(heights)
        self._widths = np.asarray(widths)

        days = params.history_days
        self._calendar_grid = np.linspace(0.0, days, days * CLOCK_GRID_POINTS_PER_DAY + 1)
        raw = self._raw_operational(self._calendar_grid)
        self._operational_grid = raw * (days / raw[-1])

    def _raw_operational(self, calendar_days: np.ndarray) -> np.ndarray:
        t = calendar_days[:, None]
        bump_areas = self._heights * self._widths * np.sqrt(2.0 * np.pi)
        cumulative = ndtr((t - self._centres) / self._widths) - ndtr(-self._centres / self._widths)
        return calendar_days + (bump_areas * cumulative).sum(axis=1)

    def to_operational(self, calendar_days: np.ndarray) -> np.ndarray:
        return np.interp(calendar_days, self._calendar_grid, self._operational_grid)

    def to_calendar(self, operational_days: np.ndarray) -> np.ndarray:
        return np.interp(operational_days, self._operational_grid, self._calendar_grid)


# ---------------------------------------------------------------------------------------------
# The true process
# ---------------------------------------------------------------------------------------------


class _TrueOrders(NamedTuple):
    customer: np.ndarray  # customer index per order, orders sorted by customer then time
    operational_days: np.ndarray
    purchase_rate: np.ndarray  # lambda per customer
    dropout: np.ndarray  # p per customer
    alive: np.ndarray


def _draw_true_orders(params: DemoParameters, clock: _SeasonalClock, rng: np.random.Generator) -> _TrueOrders:
    """Draw the BG/NBD process in operational time: first purchases, then repeat purchases."""
    n = params.n_customers
    purchase_rate = rng.gamma(params.r, 1.0 / params.alpha, size=n)
    dropout = rng.beta(params.a, params.b, size=n)

    acquisition_days = (params.acquisition_end - params.start).days + 1
    first_purchase = rng.uniform(0.0, clock.to_operational(np.array([acquisition_days]))[0], size=n)
    exposure_weeks = (params.history_days - first_purchase) / DAYS_PER_WEEK

    # Repeat purchases a customer would make in [0, T] if never dropping out: N ~ Poisson(lambda T).
    # Dropout comes after the J-th repeat purchase, J ~ Geometric(p), so x = min(N, J). J is drawn
    # given J <= N by inverting the truncated CDF 1 - (1 - p)^j, because p can be so small that an
    # untruncated J overflows an integer.
    potential = rng.poisson(purchase_rate * exposure_weeks)
    log_stay = np.log1p(-dropout)
    drop_by_end = -np.expm1(potential * log_stay)  # P(J <= N)
    dropped = rng.uniform(size=n) < drop_by_end
    frequency = potential.copy()
    u = rng.uniform(size=int(dropped.sum())) * drop_by_end[dropped]
    last = np.ceil(np.log1p(-u) / log_stay[dropped])
    frequency[dropped] = np.clip(last, 1, potential[dropped]).astype(frequency.dtype)

    # Given N, the N purchase times are uniform order statistics on [0, T]. Keep the first x.
    owner = np.repeat(np.arange(n), potential)
    weeks_after_first = rng.uniform(size=owner.size) * exposure_weeks[owner]
    order = np.lexsort((weeks_after_first, owner))
    weeks_after_first = weeks_after_first[order]
    rank = np.arange(owner.size) - np.repeat(np.cumsum(potential) - potential, potential)
    kept = rank < frequency[owner]
    repeat_owner = owner[kept]
    repeat_days = first_purchase[repeat_owner] + DAYS_PER_WEEK * weeks_after_first[kept]

    customer = np.concatenate([np.arange(n), repeat_owner])
    operational_days = np.concatenate([first_purchase, repeat_days])
    by_customer_time = np.lexsort((operational_days, customer))
    return _TrueOrders(
        customer=customer[by_customer_time],
        operational_days=operational_days[by_customer_time],
        purchase_rate=purchase_rate,
        dropout=dropout,
        alive=~dropped,
    )


def _spread_same_day_orders(customer: np.ndarray, day: np.ndarray, last_day: int) -> np.ndarray:
    """Move orders so that a customer has at most one order per calendar day.

    A repeat order on a day the customer already ordered on moves to the next free day, or, near
    the end of the history, to the previous free one. Orders must be sorted by customer, then day.
    Analyses count purchase days, merging a customer's orders of one day. A Poisson process puts
    about 1% of the default shop's orders on an occupied day. Without the move, merging would lower
    the heaviest buyers' counts, and over 8 seeds at 20,000 customers it moved the BG/NBD
    estimates of r and alpha upwards by 1 and 2 standard errors on average.

    Raises
    ------
    ConfigError
        If a customer has more orders than days from their first order to the end of the history.
    """
    group_start = np.searchsorted(customer, customer, side="left")
    group_end = np.searchsorted(customer, customer, side="right")
    rank = np.arange(day.size) - group_start

    # Forward pass: moved_j = max(day_j, moved_{j-1} + 1) is a running maximum of day_j - j.
    # Offsetting each customer by a stride wider than any day - rank keeps the maximum per customer.
    stride = last_day + day.size + 1
    running = np.maximum.accumulate(day - rank + customer * stride) - customer * stride
    moved = rank + running
    # Backward pass: the j-th of k orders may be no later than last_day - (k - 1 - j).
    moved = np.minimum(moved, last_day - (group_end - 1 - np.arange(day.size)))

    first = rank == 0
    if (moved[first] != day[first]).any():
        raise ConfigError(
            "some customers have more orders than days left in the history, "
            "so lower the purchase rates (smaller r or larger alpha)"
        )
    return moved


def _draw_order_values(shape: float, spend_rate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw each order's value ``z ~ Gamma(p, rate nu)`` and round it to whole cents (at least 1)."""
    values = rng.gamma(shape, 1.0 / spend_rate)
    return np.maximum(np.rint(values * CENTS_PER_YUAN), 1).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Catalogue and order lines
# ---------------------------------------------------------------------------------------------


class _ProductSet(NamedTuple):
    """Products of one category or complement set, sorted by list price."""

    product: np.ndarray  # catalogue indices
    list_price: np.ndarray  # CNY
    cumulative_weight: np.ndarray  # length size + 1, starts at 0, in list-price order


class _Catalogue(NamedTuple):
    """Products sorted by list price, ascending, with the sets that draws are restricted to."""

    sku: np.ndarray
    name: np.ndarray
    noun: np.ndarray
    tier: np.ndarray
    category: np.ndarray
    category_index: np.ndarray  # index into _CATEGORIES
    list_price: np.ndarray  # CNY
    weight: np.ndarray  # popularity: category share times Zipf weight within the category
    cumulative_weight: np.ndarray  # length n_products + 1, starts at 0, in list-price order
    cycle_days: np.ndarray  # NaN for durables
    complement_set: np.ndarray  # index into complement_sets, -1 for nouns without complements
    categories: tuple[_ProductSet, ...]  # one per _CATEGORIES entry, weights normalised per category
    complement_sets: tuple[_ProductSet, ...]
    category_shares: np.ndarray


def _complements_by_noun() -> dict[str, tuple[str, ...]]:
    """Map each noun of :data:`COMPLEMENT_GROUPS` to its partners, in table order."""
    partners: dict[str, list[str]] = {}
    for group in COMPLEMENT_GROUPS:
        for noun in group:
            known = partners.setdefault(noun, [])
            known.extend(other for other in group if other != noun and other not in known)
    return {noun: tuple(others) for noun, others in partners.items()}


def _product_set(members: np.ndarray, list_price: np.ndarray, weight: np.ndarray) -> _ProductSet:
    """Build a set from catalogue indices in ascending order, which keeps it sorted by list price."""
    return _ProductSet(members, list_price[members], np.concatenate([[0.0], np.cumsum(weight[members])]))


def _build_catalogue(rng: np.random.Generator) -> _Catalogue:
    tier_labels = np.array([label for label, _ in _PRICE_TIERS])
    tier_factors = np.array([factor for _, factor in _PRICE_TIERS])
    names, nouns, tiers, category_index, prices, weights = [], [], [], [], [], []
    for index, spec in enumerate(_CATEGORIES):
        offered = rng.uniform(size=(len(spec.items), len(_PRICE_TIERS))) < EXTRA_TIER_PROBABILITY
        offered[:, list(tier_labels).index(BASE_TIER)] = True
        item_index, tier_index = np.nonzero(offered)
        size = item_index.size
        noun = np.array([noun for noun, _ in spec.items])[item_index]
        typical = np.array([price for _, price in spec.items], dtype=float)[item_index]
        jitter = np.exp(rng.uniform(-TIER_PRICE_LOG_JITTER, TIER_PRICE_LOG_JITTER, size=size))
        # Shop prices end in .9 (79.9, 148.9).
        prices.append(np.floor(typical * tier_factors[tier_index] * jitter) + 0.9)
        names.append(np.char.add(tier_labels[tier_index], noun))
        nouns.append(noun)
        tiers.append(tier_labels[tier_index])
        category_index.append(np.full(size, index))
        popularity = rng.permutation(np.arange(1, size + 1) ** -POPULARITY_EXPONENT)
        weights.append(spec.share * popularity / popularity.sum())

    by_price = np.argsort(np.concatenate(prices), kind="stable")
    name, noun, tier = (np.concatenate(parts)[by_price] for parts in (names, nouns, tiers))
    category_index = np.concatenate(category_index)[by_price]
    list_price = np.concatenate(prices)[by_price]
    weight = np.concatenate(weights)[by_price]
    sku_numbers = rng.choice(10**SKU_NUMBER_DIGITS, size=name.size, replace=False)
    sku = np.char.add("SKU", np.char.zfill(sku_numbers.astype(str), SKU_NUMBER_DIGITS))

    shares = np.array([spec.share for spec in _CATEGORIES])
    categories = tuple(
        _product_set(np.flatnonzero(category_index == index), list_price, weight / shares[index])
        for index in range(len(_CATEGORIES))
    )
    partners = _complements_by_noun()
    anchors = [anchor for anchor in partners if np.isin(partners[anchor], noun).any()]
    complement_sets = tuple(
        _product_set(np.flatnonzero(np.isin(noun, partners[anchor])), list_price, weight) for anchor in anchors
    )
    complement_set = np.full(noun.size, -1)
    for set_index, anchor in enumerate(anchors):
        complement_set[noun == anchor] = set_index
    cycle_days = np.array([REPLENISHMENT_CYCLE_DAYS.get(item, np.nan) for item in noun], dtype=float)

    return _Catalogue(
        sku=sku,
        name=name,
        noun=noun,
        tier=tier,
        category=np.array([spec.name for spec in _CATEGORIES])[category_index],
        category_index=category_index,
        list_price=list_price,
        weight=weight,
        cumulative_weight=np.concatenate([[0.0], np.cumsum(weight)]),
        cycle_days=cycle_days,
        complement_set=complement_set,
        categories=categories,
        complement_sets=complement_sets,
        category_shares=shares,
    )


def _products_frame(catalogue: _Catalogue) -> pd.DataFrame:
    partners = _complements_by_noun()
    return pd.DataFrame(
        {
            "product_id": catalogue.sku,
            "name": catalogue.name,
            "noun": catalogue.noun,
            "tier": catalogue.tier,
            "category": catalogue.category,
            "list_price": catalogue.list_price,
            "popularity": catalogue.weight,
            "is_consumable": ~np.isnan(catalogue.cycle_days),
            "cycle_days": pd.array(np.where(np.isnan(catalogue.cycle_days), None, catalogue.cycle_days), dtype="Int64"),
            "complements": [partners.get(noun, ()) for noun in catalogue.noun],
        }
    )


# ---------------------------------------------------------------------------------------------
# Customer taste
# ---------------------------------------------------------------------------------------------


class _Tastes(NamedTuple):
    favourite: np.ndarray  # category index per customer
    second: np.ndarray  # category index, -1 for customers with one favourite
    mix: np.ndarray  # (n_customers + 1, n_categories) category mix, with the guests' mix in the last row


def _draw_tastes(params: DemoParameters, shares: np.ndarray, rng: np.random.Generator) -> _Tastes:
    """Draw one or two favourite categories per customer in proportion to the category shares."""
    n, n_categories = params.n_customers, shares.size
    rows = np.arange(n)
    favourite = rng.choice(n_categories, size=n, p=shares)

    # The second favourite is drawn by share among the other categories.
    others = np.tile(shares, (n, 1))
    others[rows, favourite] = 0.0
    cumulative = np.cumsum(others, axis=1)
    u = rng.uniform(size=n) * cumulative[:, -1]
    second = np.minimum((cumulative <= u[:, None]).sum(axis=1), n_categories - 1)
    second = np.where(rng.uniform(size=n) < params.second_category_share, second, -1)

    has_second = second >= 0
    favourite_weight = np.zeros((n, n_categories))
    favourite_weight[rows, favourite] = np.where(has_second, 0.5, 1.0)
    favourite_weight[rows[has_second], second[has_second]] = 0.5
    mix = (1.0 - params.taste_strength) * shares + params.taste_strength * favourite_weight
    return _Tastes(favourite, second, np.vstack([mix, shares]))


# ---------------------------------------------------------------------------------------------
# Order lines and their products
# ---------------------------------------------------------------------------------------------


class _LineSlots(NamedTuple):
    """Order lines before their products are chosen: grouped by order, largest line first."""

    order: np.ndarray  # index into the orders passed in
    target_cents: np.ndarray
    is_main: np.ndarray  # the largest line of its order
    low: np.ndarray  # price band of the line's list price, CNY
    high: np.ndarray


class _Lines(NamedTuple):
    order: np.ndarray  # index into the orders passed in
    product: np.ndarray  # index into the catalogue
    quantity: np.ndarray
    unit_cents: np.ndarray


def _line_slots(totals_cents: np.ndarray, rng: np.random.Generator) -> _LineSlots:
    """Split each order's value into line targets and give each line its list-price band."""
    n_orders = totals_cents.size
    min_line_cents = MIN_LINE_AMOUNT * CENTS_PER_YUAN
    n_lines = 1 + rng.poisson(EXTRA_LINES_MEAN, size=n_orders)
    n_lines = np.minimum(n_lines, MAX_LINES_PER_ORDER)
    n_lines = np.minimum(n_lines, np.maximum(totals_cents // min_line_cents, 1)).astype(np.int64)
    line_order = np.repeat(np.arange(n_orders), n_lines)

    # Every line gets half a minimum line amount, and Dirichlet shares of the rest. Because an
    # order has at most one line per MIN_LINE_AMOUNT, the largest line is at least MIN_LINE_AMOUNT
    # (or the whole order), which leaves room for the other lines' rounding.
    floor_cents = np.where(n_lines > 1, min_line_cents / 2, 0.0)[line_order]
    shares = rng.gamma(LINE_SHARE_CONCENTRATION, size=line_order.size)
    shares /= np.bincount(line_order, weights=shares)[line_order]
    rest = totals_cents[line_order] - floor_cents * n_lines[line_order]
    target_cents = floor_cents + rest * shares

    by_size = np.lexsort((-target_cents, line_order))
    line_order = line_order[by_size]
    target_cents = target_cents[by_size]
    is_main = np.ones(line_order.size, dtype=bool)
    is_main[1:] = line_order[1:] != line_order[:-1]

    target_yuan = target_cents / CENTS_PER_YUAN
    max_quantity = np.where(is_main, 1, MAX_QUANTITY)
    low, high = target_yuan / max_quantity, target_yuan * MAX_LIST_PRICE_FACTOR
    return _LineSlots(line_order, target_cents, is_main, low, high)


def _price_lines(slots: _LineSlots, product: np.ndarray, totals_cents: np.ndarray, catalogue: _Catalogue) -> _Lines:
    """Set quantities and unit prices so that each order's lines add up to its value, to the cent.

    The main line has quantity 1 and absorbs the rounding remainder of the other lines, whose unit
    prices are rounded to whole cents.
    """
    target_yuan = slots.target_cents / CENTS_PER_YUAN
    max_quantity = np.where(slots.is_main, 1, MAX_QUANTITY)
    quantity = np.clip(np.ceil(target_yuan / catalogue.list_price[product]), 1, max_quantity).astype(np.int64)
    unit_cents = np.maximum(np.rint(slots.target_cents / quantity), 1).astype(np.int64)

    other_lines = np.where(slots.is_main, 0, quantity * unit_cents)
    other_cents = np.bincount(slots.order, weights=other_lines, minlength=totals_cents.size).astype(np.int64)
    unit_cents[slots.is_main] = totals_cents - other_cents
    return _Lines(slots.order, product, quantity, unit_cents)


def _mass_in_band(products: _ProductSet, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Popularity weight of the set's products with list price in [low, high]."""
    first = np.searchsorted(products.list_price, low, side="left")
    stop = np.maximum(np.searchsorted(products.list_price, high, side="right"), first)
    return products.cumulative_weight[stop] - products.cumulative_weight[first]


def _draw_in_band(products: _ProductSet, low: np.ndarray, high: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw a product of the set per line by popularity among those with list price in [low, high].

    A line whose band contains none of the set's products gets the next product above the band, or
    the set's most expensive product when the band lies above all of them. Returns catalogue indices.
    """
    first = np.searchsorted(products.list_price, low, side="left")
    stop = np.maximum(np.searchsorted(products.list_price, high, side="right"), first)
    weight_low = products.cumulative_weight[first]
    target = weight_low + rng.uniform(size=low.size) * (products.cumulative_weight[stop] - weight_low)
    drawn = np.searchsorted(products.cumulative_weight, target, side="right") - 1
    drawn = np.clip(drawn, first, np.maximum(stop - 1, first))
    return products.product[np.minimum(drawn, products.product.size - 1)]


def _whole_catalogue(catalogue: _Catalogue) -> _ProductSet:
    return _ProductSet(np.arange(catalogue.sku.size), catalogue.list_price, catalogue.cumulative_weight)


def _draw_by_taste(
    low: np.ndarray, high: np.ndarray, mix: np.ndarray, catalogue: _Catalogue, rng: np.random.Generator
) -> np.ndarray:
    """Draw a product per line with weight ``mix[category] * popularity within the category`` in its band.

    ``mix`` has one row per line. A line whose band contains products only in categories outside
    its mix is drawn with the catalogue's shares, and a line whose band is empty falls back as in
    :func:`_draw_in_band` over the whole catalogue.
    """
    in_band = np.column_stack([_mass_in_band(products, low, high) for products in catalogue.categories])
    mass = in_band * mix
    outside_mix = mass.sum(axis=1) <= 0.0
    mass[outside_mix] = in_band[outside_mix] * catalogue.category_shares
    cumulative = np.cumsum(mass, axis=1)
    total = cumulative[:, -1]

    # The category is the first column whose cumulative mass exceeds a uniform share of the total.
    u = rng.uniform(size=low.size) * total
    category = np.minimum((cumulative <= u[:, None]).sum(axis=1), len(catalogue.categories) - 1)
    empty_band = total <= 0.0
    product = np.empty(low.size, dtype=np.int64)
    product[empty_band] = _draw_in_band(_whole_catalogue(catalogue), low[empty_band], high[empty_band], rng)
    for index, products in enumerate(catalogue.categories):
        rows = (category == index) & ~empty_band
        product[rows] = _draw_in_band(products, low[rows], high[rows], rng)
    return product


def _complement_mass(set_index: np.ndarray, low: np.ndarray, high: np.ndarray, catalogue: _Catalogue) -> np.ndarray:
    """Popularity weight in each line's band of the complement set it names (0 where set_index is -1)."""
    mass = np.zeros(low.size)
    for index in np.unique(set_index[set_index >= 0]):
        rows = set_index == index
        mass[rows] = _mass_in_band(catalogue.complement_sets[index], low[rows], high[rows])
    return mass


def _draw_complements(
    set_index: np.ndarray, low: np.ndarray, high: np.ndarray, catalogue: _Catalogue, rng: np.random.Generator
) -> np.ndarray:
    """Draw a product from each line's complement set within its band. The caller checks the band's mass."""
    product = np.empty(low.size, dtype=np.int64)
    for index in np.unique(set_index):
        rows = set_index == index
        product[rows] = _draw_in_band(catalogue.complement_sets[index], low[rows], high[rows], rng)
    return product


# Lines of a group of orders are contiguous and each order starts with its main line, so the
# helpers below find an order's lines from the running count of main lines.


def _line_group(is_main: np.ndarray) -> np.ndarray:
    return np.cumsum(is_main) - 1


def _first_in_order(mask: np.ndarray, is_main: np.ndarray) -> np.ndarray:
    """Mark, per order, the first line where ``mask`` is true."""
    count = np.cumsum(mask)
    starts = np.flatnonzero(is_main)
    before = count[starts] - mask[starts]
    return mask & (count - before[_line_group(is_main)] == 1)


def _any_in_order(mask: np.ndarray, is_main: np.ndarray) -> np.ndarray:
    """Broadcast to every line whether any line of its order has ``mask`` true."""
    group = _line_group(is_main)
    return np.bincount(group, weights=mask, minlength=int(is_main.sum()))[group] > 0


def _redraw_duplicates(
    order: np.ndarray,
    product: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    mix: np.ndarray,
    catalogue: _Catalogue,
    rng: np.random.Generator,
) -> np.ndarray:
    """Redraw lines whose product an earlier line of the order already has, so none repeats.

    A repeated line is redrawn by taste in its band, and after BAND_REDRAWS tries from the whole
    catalogue by popularity. Exact duplicate rows are the export glitch that ingest removes, so a
    true order must not contain two identical lines.
    """
    product = product.copy()
    n_products = catalogue.sku.size
    attempt = 0
    while True:
        repeated = pd.Series(order * n_products + product).duplicated().to_numpy()
        if not repeated.any():
            return product
        if attempt < BAND_REDRAWS:
            product[repeated] = _draw_by_taste(low[repeated], high[repeated], mix[repeated], catalogue, rng)
        else:
            product[repeated] = rng.choice(n_products, size=int(repeated.sum()), p=catalogue.weight)
        attempt += 1


def _add_complements(
    lines: np.ndarray,
    product: np.ndarray,
    slots: _LineSlots,
    locked: np.ndarray,
    probability: float,
    catalogue: _Catalogue,
    rng: np.random.Generator,
) -> np.ndarray:
    """Fill further lines with complements of their order's main product, each with ``probability``.

    ``lines`` index a group of whole orders, and ``locked`` marks lines that keep their product.
    Returns the group's products.
    """
    product = product[lines].copy()
    is_main, low, high = slots.is_main[lines], slots.low[lines], slots.high[lines]
    main_product = product[np.flatnonzero(is_main)][_line_group(is_main)]
    set_index = catalogue.complement_set[main_product]
    chosen = ~is_main & ~locked & (set_index >= 0) & (rng.uniform(size=lines.size) < probability)
    chosen[chosen] = _complement_mass(set_index[chosen], low[chosen], high[chosen], catalogue) > 0.0
    product[chosen] = _draw_complements(set_index[chosen], low[chosen], high[chosen], catalogue, rng)
    return product


class _History(NamedTuple):
    """Per-customer state that a customer's earlier true orders pass on to the next one."""

    consumable: np.ndarray  # catalogue index of the last consumable bought, -1 if none
    consumable_day: np.ndarray
    anchor: np.ndarray  # first product with complements in the last order, -1 if none
    anchor_day: np.ndarray


def _replenish(
    product: np.ndarray,
    is_main: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    customer: np.ndarray,
    day: np.ndarray,
    history: _History,
    params: DemoParameters,
    catalogue: _Catalogue,
    rng: np.random.Generator,
) -> np.ndarray:
    """Put each customer's last consumable back into their order when the order falls near its cycle.

    Arguments are per line of a group of whole orders. Changes ``product`` in place and returns a
    mask of the lines that received the consumable.
    """
    stock = history.consumable[customer]
    has_stock = stock >= 0
    gap = (day - history.consumable_day[customer]).astype(float)
    cycle = np.where(has_stock, catalogue.cycle_days[np.maximum(stock, 0)], 1.0)
    log_ratio = np.log(np.where(has_stock, gap, 1.0) / cycle) / params.cycle_log_sd
    chance = np.where(has_stock, params.replenish_probability * np.exp(-0.5 * log_ratio**2), 0.0)

    # One decision per order, taken on its main line.
    decided = (rng.uniform(size=product.size) < chance)[np.flatnonzero(is_main)][_line_group(is_main)]
    stock_price = catalogue.list_price[np.maximum(stock, 0)]
    already = _any_in_order(decided & (product == stock), is_main)
    fits = decided & ~already & (low <= stock_price) & (stock_price <= high)
    placed = _first_in_order(fits, is_main)
    product[placed] = stock[placed]
    return placed


def _add_next_order_complements(
    product: np.ndarray,
    is_main: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    customer: np.ndarray,
    day: np.ndarray,
    locked: np.ndarray,
    history: _History,
    params: DemoParameters,
    catalogue: _Catalogue,
    rng: np.random.Generator,
) -> np.ndarray:
    """Add a complement of the previous order's anchor product to the first line that fits one.

    Arguments are per line of a group of whole orders. Changes ``product`` in place and returns a
    mask of the lines that received a complement.
    """
    anchor = history.anchor[customer]
    recent = (anchor >= 0) & (day - history.anchor_day[customer] <= NEXT_ORDER_COMPLEMENT_DAYS)
    decided = recent & (rng.uniform(size=product.size) < params.next_order_complement_probability)
    decided = decided[np.flatnonzero(is_main)][_line_group(is_main)]
    set_index = np.where(decided, catalogue.complement_set[np.maximum(anchor, 0)], -1)
    open_lines = decided & ~locked
    open_lines[open_lines] = _complement_mass(set_index[open_lines], low[open_lines], high[open_lines], catalogue) > 0
    placed = _first_in_order(open_lines, is_main)
    product[placed] = _draw_complements(set_index[placed], low[placed], high[placed], catalogue, rng)
    return placed


def _update_history(
    history: _History,
    product: np.ndarray,
    is_main: np.ndarray,
    customer: np.ndarray,
    day: np.ndarray,
    catalogue: _Catalogue,
) -> None:
    """Record each order's first consumable and first product with complements, in place."""
    consumable = _first_in_order(~np.isnan(catalogue.cycle_days[product]), is_main)
    history.consumable[customer[consumable]] = product[consumable]
    history.consumable_day[customer[consumable]] = day[consumable]

    # An order without an anchor clears the previous one, because next-order complements look back
    # one order only.
    history.anchor[customer[is_main]] = -1
    anchor = _first_in_order(catalogue.complement_set[product] >= 0, is_main)
    history.anchor[customer[anchor]] = product[anchor]
    history.anchor_day[customer[anchor]] = day[anchor]


def _choose_true_products(
    slots: _LineSlots,
    order_customer: np.ndarray,
    order_day: np.ndarray,
    tastes: _Tastes,
    params: DemoParameters,
    catalogue: _Catalogue,
    rng: np.random.Generator,
) -> np.ndarray:
    """Choose the products of the true orders: taste first, then replenishment and complements.

    Orders must be sorted by customer, then time. Replenishment and next-order complements depend
    on the customer's earlier orders, so the orders are filled by their rank within the customer:
    all first orders at once, then all second orders, and so on. Each pass is vectorised over
    customers, and the number of passes is the largest number of orders of one customer.
    """
    line_customer = order_customer[slots.order]
    mix = tastes.mix[line_customer]
    product = _draw_by_taste(slots.low, slots.high, mix, catalogue, rng)

    order_rank = np.arange(order_customer.size) - np.searchsorted(order_customer, order_customer, side="left")
    line_rank = order_rank[slots.order]
    by_rank = np.argsort(line_rank, kind="stable")
    bounds = np.searchsorted(line_rank[by_rank], np.arange(line_rank.max() + 2))
    n_customers = params.n_customers
    history = _History(
        consumable=np.full(n_customers, -1),
        consumable_day=np.zeros(n_customers, dtype=np.int64),
        anchor=np.full(n_customers, -1),
        anchor_day=np.zeros(n_customers, dtype=np.int64),
    )

    for rank in range(bounds.size - 1):
        lines = by_rank[bounds[rank]:bounds[rank + 1]]
        chosen = product[lines]
        is_main, low, high = slots.is_main[lines], slots.low[lines], slots.high[lines]
        customer, day = line_customer[lines], order_day[slots.order[lines]]

        locked = _replenish(chosen, is_main, low, high, customer, day, history, params, catalogue, rng)
        locked |= _add_next_order_complements(
            chosen, is_main, low, high, customer, day, locked, history, params, catalogue, rng
        )
        product[lines] = chosen
        chosen = _add_complements(lines, product, slots, locked, params.complement_probability, catalogue, rng)
        chosen = _redraw_duplicates(slots.order[lines], chosen, low, high, mix[lines], catalogue, rng)
        product[lines] = chosen
        _update_history(history, chosen, is_main, customer, day, catalogue)
    return product


def _choose_noise_products(
    slots: _LineSlots,
    order_customer: np.ndarray,
    tastes: _Tastes,
    params: DemoParameters,
    catalogue: _Catalogue,
    rng: np.random.Generator,
) -> np.ndarray:
    """Choose the products of noise orders by taste and same-order complements, without history.

    Guests (customer -1) draw with the catalogue's category shares.
    """
    mix = tastes.mix[order_customer[slots.order]]
    product = _draw_by_taste(slots.low, slots.high, mix, catalogue, rng)
    lines = np.arange(slots.order.size)
    locked = np.zeros(lines.size, dtype=bool)
    product = _add_complements(lines, product, slots, locked, params.complement_probability, catalogue, rng)
    return _redraw_duplicates(slots.order, product, slots.low, slots.high, mix, catalogue, rng)


# ---------------------------------------------------------------------------------------------
# Identities and timestamps
# ---------------------------------------------------------------------------------------------


class _People(NamedTuple):
    name: np.ndarray
    gender: np.ndarray
    phone: np.ndarray
    city: np.ndarray


def _weighted_choice(table: tuple[tuple[str, float], ...], size: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.array([label for label, _ in table])
    weights = np.array([weight for _, weight in table], dtype=float)
    return labels[rng.choice(labels.size, size=size, p=weights / weights.sum())]


def _draw_given_characters(female: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    male, female_pool = np.array(_MALE_GIVEN), np.array(_FEMALE_GIVEN)
    male_pick = male[rng.integers(0, male.size, size=female.size)]
    female_pick = female_pool[rng.integers(0, female_pool.size, size=female.size)]
    return np.where(female, female_pick, male_pick)


def _draw_people(size: int, rng: np.random.Generator) -> _People:
    """Draw names, genders, phone numbers and cities."""
    female = rng.uniform(size=size) < FEMALE_SHARE
    gender = np.where(female, GENDER_FEMALE, GENDER_MALE)
    gender[rng.uniform(size=size) < UNKNOWN_GENDER_SHARE] = GENDER_UNKNOWN

    second = np.where(rng.uniform(size=size) < TWO_CHARACTER_GIVEN_NAME_SHARE, _draw_given_characters(female, rng), "")
    name = np.char.add(np.char.add(_weighted_choice(_SURNAMES, size, rng), _draw_given_characters(female, rng)), second)

    prefix = np.array(_PHONE_PREFIXES, dtype=np.int64)[rng.integers(0, len(_PHONE_PREFIXES), size=size)]
    subscriber = rng.integers(0, 10**PHONE_SUBSCRIBER_DIGITS, size=size)
    phone = (prefix * 10**PHONE_SUBSCRIBER_DIGITS + subscriber).astype(str)

    city = _weighted_choice(_CITIES, size, rng)
    return _People(name, gender, phone, city)


def _draw_member_ids(size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw distinct member ids such as ``tb_4f2a9c1e``."""
    numbers = rng.choice(16**MEMBER_ID_HEX_DIGITS, size=size, replace=False)
    shifts = 4 * np.arange(MEMBER_ID_HEX_DIGITS - 1, -1, -1)
    digits = (numbers[:, None] >> shifts) & 0xF
    ascii_codes = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[digits]
    hex_text = np.ascontiguousarray(ascii_codes).view(f"S{MEMBER_ID_HEX_DIGITS}")[:, 0].astype(str)
    return np.char.add(MEMBER_ID_PREFIX, hex_text)


def _timestamps(start: date, calendar_days: np.ndarray, history_days: int, rng: np.random.Generator) -> np.ndarray:
    """Place each order on its calendar day at a local time drawn from :data:`_HOUR_WEIGHTS`.

    The process fixes the day; the time within the day is drawn independently of it.
    """
    day = np.clip(np.floor(calendar_days), 0, history_days - 1).astype(np.int64)
    hour_weights = np.asarray(_HOUR_WEIGHTS)
    hour = rng.choice(hour_weights.size, size=day.size, p=hour_weights / hour_weights.sum())
    seconds = hour * SECONDS_PER_HOUR + rng.integers(0, SECONDS_PER_HOUR, size=day.size)
    return np.datetime64(start, "s") + day.astype("timedelta64[D]") + seconds.astype("timedelta64[s]")


# ---------------------------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------------------------


class _Orders(NamedTuple):
    """Orders before their lines are drawn: who, of which kind, when and how much."""

    customer: np.ndarray  # customer index, or -1 for a guest
    kind: np.ndarray
    calendar_days: np.ndarray  # days since start; the integer part is the order's day
    totals_cents: np.ndarray


def _draw_noise_orders(
    params: DemoParameters,
    clock: _SeasonalClock,
    true_orders: _Orders,
    spend_rate: np.ndarray,
    rng: np.random.Generator,
) -> _Orders:
    """Draw closed, refunded and guest orders on top of the true ones."""
    n_true = true_orders.customer.size
    n_closed = rng.binomial(n_true, params.cancelled_share)
    n_refunded = rng.binomial(n_true, params.refunded_share)
    n_guest = rng.binomial(n_true, params.guest_share)

    # Closed and refunded orders come from customers with true orders, shortly after one of them.
    source = rng.integers(0, n_true, size=n_closed + n_refunded)
    customer = true_orders.customer[source]
    source_days = true_orders.calendar_days[source]
    room = np.minimum(NOISE_LAG_DAYS, params.history_days - source_days)
    member_days = source_days + rng.uniform(size=source.size) * room
    member_totals = _draw_order_values(params.p, spend_rate[customer], rng)

    # Guests are anonymous one-off buyers with their own spend rate, spread over the history.
    guest_days = clock.to_calendar(rng.uniform(0.0, params.history_days, size=n_guest))
    guest_rate = rng.gamma(params.q, 1.0 / params.gamma, size=n_guest)
    guest_totals = _draw_order_values(params.p, guest_rate, rng)

    kinds = (ORDER_KIND_CLOSED, ORDER_KIND_REFUNDED, ORDER_KIND_GUEST)
    return _Orders(
        customer=np.concatenate([customer, np.full(n_guest, -1)]),
        kind=np.repeat(np.array(kinds), [n_closed, n_refunded, n_guest]),
        calendar_days=np.concatenate([member_days, guest_days]),
        totals_cents=np.concatenate([member_totals, guest_totals]),
    )


_STATUS_BY_KIND = {
    ORDER_KIND_PURCHASE: STATUS_COMPLETED,
    ORDER_KIND_CLOSED: STATUS_CLOSED,
    ORDER_KIND_REFUNDED: STATUS_REFUNDED,
    ORDER_KIND_GUEST: STATUS_COMPLETED,
}


def _order_lines_frame(
    order_ids: np.ndarray,
    member_ids: np.ndarray,
    people: _People,
    orders: _Orders,
    times: np.ndarray,
    lines: _Lines,
    catalogue: _Catalogue,
) -> pd.DataFrame:
    """Lay out one export row per order line. A guest order (customer -1) uses the person drawn
    for it, stored after the customers in ``people``, and an empty member id."""
    n_customers = member_ids.size
    is_guest = orders.customer < 0
    person = np.where(is_guest, n_customers + np.cumsum(is_guest) - 1, orders.customer)[lines.order]
    member_id = np.where(is_guest, "", member_ids[np.maximum(orders.customer, 0)])[lines.order]
    status = pd.Series(orders.kind).map(_STATUS_BY_KIND).to_numpy(dtype=str)[lines.order]
    return pd.DataFrame(
        {
            "订单编号": order_ids[lines.order],
            "买家会员名": member_id,
            "收货人姓名": people.name[person],
            "性别": people.gender[person],
            "手机号": people.phone[person],
            "城市": people.city[person],
            "下单时间": times[lines.order],
            "商品ID": catalogue.sku[lines.product],
            "商品名称": catalogue.name[lines.product],
            "类目": catalogue.category[lines.product],
            "数量": lines.quantity,
            "单价": lines.unit_cents / CENTS_PER_YUAN,
            "实付金额": lines.quantity * lines.unit_cents / CENTS_PER_YUAN,
            "订单状态": status,
        }
    )


def _concatenate(first: NamedTuple, second: NamedTuple, *, order_offset: int = 0) -> NamedTuple:
    """Join two tuples of arrays field by field, adding ``order_offset`` to the second's ``order`` field."""
    fields = {name: np.concatenate([getattr(first, name), getattr(second, name)]) for name in first._fields}
    if order_offset:
        fields["order"] = np.concatenate([first.order, second.order + order_offset])
    return type(first)(**fields)


def generate_shop(params: DemoParameters = DemoParameters()) -> DemoShop:
    """Draw a synthetic shop: customers, their true orders, noise orders and the order-line export.

    Parameters
    ----------
    params : DemoParameters, default DemoParameters()
        True parameters, history, noise shares and seed.

    Returns
    -------
    DemoShop
        The export (``orders``) and the truth (``customers``, ``order_totals``, ``parameters``).

    Raises
    ------
    ConfigError
        If the purchase rates are so high that a customer has more orders than days left.

    Notes
    -----
    The BG/NBD and Gamma-Gamma models hold in operational time (see the module docstring). The
    calendar dates in the export are the operational times mapped through the seasonal clock.
    Independent random streams drive the true process, the spend, the people, the catalogue, the
    customers' tastes, the true orders' lines and times, the noise, and the noise orders' products.
    Changing a noise share therefore changes only the noise rows and the order numbers, and
    changing a taste, complement or replenishment setting changes only which products fill the
    orders, with their quantities and unit prices.

    Examples
    --------
    >>> shop = generate_shop(DemoParameters(n_customers=50, seed=1))
    >>> list(shop.orders.columns) == list(ORDER_COLUMNS)
    True
    >>> bool(shop.customers["member_id"].is_unique)
    True
    """
    return draw_shop(params).shop


class DrawnShop(NamedTuple):
    """A shop from :func:`draw_shop`, with facts about its orders that the shop's frames leave out."""

    shop: DemoShop
    order_customer: np.ndarray  # customer index per row of shop.order_totals, -1 for a guest order
    order_numbers: np.ndarray  # order id per row of shop.order_totals, as int64
    duplicate_rows: int  # exact copies added to shop.orders


def draw_shop(params: DemoParameters, catalogue: _Catalogue | None = None) -> DrawnShop:
    """Draw a shop as :func:`generate_shop` does, over ``catalogue`` when one is given.

    A chunked log (:mod:`revopt.scalegen`) draws every chunk over one catalogue, so that product ids
    mean the same product in every chunk.
    """
    streams = [np.random.default_rng(seed) for seed in np.random.SeedSequence(params.seed).spawn(9)]
    process_rng, spend_rng, people_rng, catalogue_rng, lines_rng, time_rng, noise_rng = streams[:7]
    taste_rng, noise_lines_rng = streams[7:]
    clock = _SeasonalClock(params)
    catalogue = _build_catalogue(catalogue_rng) if catalogue is None else catalogue
    tastes = _draw_tastes(params, catalogue.category_shares, taste_rng)

    # The true process: purchases in operational time, mapped to calendar days
    process = _draw_true_orders(params, clock, process_rng)
    spend_rate = spend_rng.gamma(params.q, 1.0 / params.gamma, size=params.n_customers)
    calendar_days = np.floor(clock.to_calendar(process.operational_days)).astype(np.int64)
    true_orders = _Orders(
        customer=process.customer,
        kind=np.full(process.customer.size, ORDER_KIND_PURCHASE),
        calendar_days=_spread_same_day_orders(process.customer, calendar_days, params.history_days - 1),
        totals_cents=_draw_order_values(params.p, spend_rate[process.customer], spend_rng),
    )
    true_times = _timestamps(params.start, true_orders.calendar_days, params.history_days, time_rng)
    true_slots = _line_slots(true_orders.totals_cents, lines_rng)
    true_products = _choose_true_products(
        true_slots, true_orders.customer, true_orders.calendar_days, tastes, params, catalogue, lines_rng
    )
    true_lines = _price_lines(true_slots, true_products, true_orders.totals_cents, catalogue)
    member_ids = _draw_member_ids(params.n_customers, people_rng)
    customer_people = _draw_people(params.n_customers, people_rng)

    # Noise orders from their own streams, one of them for the products alone
    noise_orders = _draw_noise_orders(params, clock, true_orders, spend_rate, noise_rng)
    noise_times = _timestamps(params.start, noise_orders.calendar_days, params.history_days, noise_rng)
    noise_slots = _line_slots(noise_orders.totals_cents, noise_rng)
    noise_products = _choose_noise_products(
        noise_slots, noise_orders.customer, tastes, params, catalogue, noise_lines_rng
    )
    noise_lines = _price_lines(noise_slots, noise_products, noise_orders.totals_cents, catalogue)
    guest_people = _draw_people(int((noise_orders.customer < 0).sum()), noise_rng)

    # The export, with exact copies of random rows as export glitches
    all_orders = _concatenate(true_orders, noise_orders)
    n_orders = all_orders.customer.size
    id_draws = noise_rng.choice(ORDER_ID_RANGE[1] - ORDER_ID_RANGE[0], size=n_orders, replace=False)
    order_ids = (id_draws + ORDER_ID_RANGE[0]).astype(str)
    orders = _order_lines_frame(
        order_ids,
        member_ids,
        _concatenate(customer_people, guest_people),
        all_orders,
        np.concatenate([true_times, noise_times]),
        _concatenate(true_lines, noise_lines, order_offset=true_orders.customer.size),
        catalogue,
    )
    n_duplicates = noise_rng.binomial(len(orders), params.duplicate_share)
    copies = noise_rng.choice(len(orders), size=n_duplicates, replace=False)
    orders = pd.concat([orders, orders.iloc[copies]], ignore_index=True)
    orders = orders.sort_values(["下单时间", "订单编号"], kind="stable", ignore_index=True)

    # The truth
    catalogue_categories = np.array([spec.name for spec in _CATEGORIES])
    first_order = np.searchsorted(process.customer, np.arange(params.n_customers))
    customers = pd.DataFrame(
        {
            "member_id": member_ids,
            "name": customer_people.name,
            "gender": customer_people.gender,
            "phone": customer_people.phone,
            "city": customer_people.city,
            "first_order_at": true_times[first_order],
            "lambda": process.purchase_rate,
            "p": process.dropout,
            "nu": spend_rate,
            "alive": process.alive,
            "n_orders": np.bincount(process.customer, minlength=params.n_customers),
            "favourite_category": catalogue_categories[tastes.favourite],
            "second_category": np.where(tastes.second >= 0, catalogue_categories[tastes.second], ""),
        }
    )
    order_totals = pd.DataFrame(
        {
            "order_id": order_ids,
            "member_id": np.where(all_orders.customer < 0, "", member_ids[np.maximum(all_orders.customer, 0)]),
            "kind": all_orders.kind,
            "total": all_orders.totals_cents / CENTS_PER_YUAN,
        }
    )
    logger.info(
        "demo_shop_generated seed=%d customers=%d true_orders=%d noise_orders=%d rows=%d duplicate_rows=%d",
        params.seed,
        params.n_customers,
        true_orders.customer.size,
        noise_orders.customer.size,
        len(orders),
        n_duplicates,
    )
    shop = DemoShop(
        orders=orders,
        customers=customers,
        order_totals=order_totals,
        parameters=params,
        products=_products_frame(catalogue),
    )
    return DrawnShop(shop, all_orders.customer, id_draws + ORDER_ID_RANGE[0], int(n_duplicates))


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def _truth_document(shop: DemoShop) -> dict:
    parameters = dataclasses.asdict(shop.parameters)
    parameters["start"] = shop.parameters.start.isoformat()
    parameters["end"] = shop.parameters.end.isoformat()
    kinds = shop.order_totals["kind"].value_counts()
    return {
        "time_unit": "week",
        "currency": "CNY",
        "models": "BG/NBD and Gamma-Gamma in operational time (see seasonal_peaks), one true order per customer-day",
        "parameters": parameters,
        "seasonal_peaks": [peak._asdict() for peak in SEASONAL_PEAKS],
        "complement_groups": [list(group) for group in COMPLEMENT_GROUPS],
        "next_order_complement_days": NEXT_ORDER_COMPLEMENT_DAYS,
        "replenishment_cycle_days": dict(REPLENISHMENT_CYCLE_DAYS),
        "counts": {
            "customers": len(shop.customers),
            "products": len(shop.products),
            "alive_at_end": int(shop.customers["alive"].sum()),
            "rows": len(shop.orders),
            "duplicate_rows": int(shop.orders.duplicated().sum()),
            **{f"{kind}_orders": int(kinds.get(kind, 0)) for kind in _STATUS_BY_KIND},
        },
    }


def write_export(shop: DemoShop, path: str | Path) -> Path:
    """Write the shop's orders as a GBK-encoded CSV and the true parameters to ``truth.json`` beside it.

    Parameters
    ----------
    shop : DemoShop
        A shop from :func:`generate_shop`.
    path : str or pathlib.Path
        The CSV file to write; missing parent folders are created, an existing file is replaced.
        ``truth.json`` in the same folder is replaced as well.

    Returns
    -------
    pathlib.Path
        The path of the CSV file.

    Raises
    ------
    ConfigError
        If ``path`` is itself named ``truth.json``.

    Notes
    -----
    The CSV looks like a Chinese shop's export: GBK without a byte-order mark, a header row of
    :data:`ORDER_COLUMNS`, timestamps as ``YYYY-MM-DD HH:MM:SS`` local time, amounts with two
    decimals. Order numbers and phone numbers are digit strings, so read the file back with
    ``dtype=str`` to keep them as text.
    """
    path = Path(path)
    if path.name == TRUTH_FILE_NAME:
        raise ConfigError(
            f"the export cannot be named {TRUTH_FILE_NAME}, the file that receives the true parameters; "
            "choose another name"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    shop.orders.to_csv(
        path,
        index=False,
        encoding=EXPORT_ENCODING,
        date_format=TIMESTAMP_FORMAT,
        float_format="%.2f",
    )
    truth_path = path.with_name(TRUTH_FILE_NAME)
    truth_path.write_text(json.dumps(_truth_document(shop), ensure_ascii=False, indent=2), encoding="utf-8")
    logger.info("demo_export_written path=%s rows=%d truth=%s", path, len(shop.orders), truth_path)
    return path
