"""revopt: customer revenue optimization for e-commerce.

Ingest a shop's order export, build customer summaries with Ibis, fit buy-till-you-die CLV models
on compressed sufficient statistics, and score customers with lifetime value, probability alive,
RFM segments and value tiers.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
