"""CLV models: BG/NBD purchase counts, Gamma-Gamma spend, and discounted lifetime value.

Both models are fitted by maximum likelihood on compressed sufficient statistics (one row per
distinct customer history, weighted by its count) and share the machinery in ``_fitting``.
"""

from revopt.models._fitting import FitResult, compress
from revopt.models.bgnbd import BetaGeoModel
from revopt.models.clv import PurchaseModel, customer_lifetime_value
from revopt.models.gamma_gamma import GammaGammaModel

__all__ = [
    "BetaGeoModel",
    "GammaGammaModel",
    "FitResult",
    "PurchaseModel",
    "compress",
    "customer_lifetime_value",
]
