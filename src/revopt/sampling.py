"""A fixed sample of customers, chosen in the engine by the MD5 of the customer id.

A customer is in the sample when the first :data:`HASH_DIGITS` hex digits of the MD5 of their id,
read as a number, fall below a bound. MD5 gives the same digits on every engine, so DuckDB and
Spark keep the same customers, and the same data always gives the same sample. The bound is chosen
so that about ``max_customers`` of ``customers`` are kept. MD5 digits behave like independent
uniform draws across ids, so the count kept varies around that target like a binomial count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ibis

__all__ = ["HASH_BUCKETS", "HASH_DIGITS", "CustomerSample", "customer_sample"]

# 16^5 buckets: one bucket contains about 1 in a million customers, so the share kept is fine-grained
# for any practical sample size.
HASH_DIGITS = 5
HASH_BUCKETS = 16**HASH_DIGITS


@dataclass(frozen=True)
class CustomerSample:
    """The MD5 buckets of customer ids that a sample keeps.

    Attributes
    ----------
    kept_buckets : int
        Buckets ``[0, kept_buckets)`` are kept, out of :data:`HASH_BUCKETS`. All of them when the
        sample keeps every customer.
    """

    kept_buckets: int

    @property
    def share(self) -> float:
        """Expected share of customers kept, 1.0 when every customer is kept."""
        return self.kept_buckets / HASH_BUCKETS

    @property
    def sampled(self) -> bool:
        """Whether some customers are left out."""
        return self.kept_buckets < HASH_BUCKETS

    @property
    def bound(self) -> str:
        """The kept ids' MD5 prefixes are below this fixed-width lower-case hex text."""
        return format(self.kept_buckets, f"0{HASH_DIGITS}x")

    def apply(self, table: ibis.Table) -> ibis.Table:
        """Keep the rows of ``table`` whose ``customer_id`` is in the sample; rows without an id are left out."""
        if not self.sampled:
            return table
        # Fixed-width lower-case hex compares as text in the order of its numbers.
        prefix = table.customer_id.hexdigest("md5").substr(0, HASH_DIGITS)
        return table.filter(prefix < self.bound)


def customer_sample(customers: int, max_customers: int | None) -> CustomerSample:
    """Choose the buckets that keep about ``max_customers`` of ``customers`` distinct customers.

    Parameters
    ----------
    customers : int
        Distinct customers in the population, counted by the caller in the engine.
    max_customers : int or None
        Target sample size. None, or a value of at least ``customers``, keeps every customer.

    Returns
    -------
    CustomerSample
        Rounds the share up to a whole bucket, so the expected count is at least ``max_customers``
        and exceeds it by less than one bucket (``customers / HASH_BUCKETS``).
    """
    if max_customers is None or customers <= max_customers:
        return CustomerSample(HASH_BUCKETS)
    kept_buckets = math.ceil(max_customers / customers * HASH_BUCKETS)
    # A target within one bucket of the population rounds up to every bucket.
    return CustomerSample(min(kept_buckets, HASH_BUCKETS))
