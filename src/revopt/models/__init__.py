"""CLV models: purchase counts (BG/NBD, MBG/NBD, Pareto/NBD, BG/BB), retention (sBG), spend
(Gamma-Gamma), and discounted lifetime value.

Every model is fitted by maximum likelihood on compressed sufficient statistics (one row per
distinct customer history, weighted by its count) and shares the machinery in ``_fitting``.
"""

from revopt.models._fitting import FitResult, compress
from revopt.models.bgbb import BetaGeoBetaBinomialModel
from revopt.models.bgnbd import BetaGeoModel
from revopt.models.bgnbd_covariates import BetaGeoCovariateModel, design_matrix
from revopt.models.clv import PurchaseModel, customer_lifetime_value
from revopt.models.gamma_gamma import GammaGammaModel
from revopt.models.mbgnbd import ModifiedBetaGeoModel
from revopt.models.pareto_nbd import ParetoNBDModel
from revopt.models.pareto_nbd_covariates import ParetoNBDCovariateModel
from revopt.models.sbg import ShiftedBetaGeometricModel

__all__ = [
    "BetaGeoBetaBinomialModel",
    "BetaGeoCovariateModel",
    "BetaGeoModel",
    "GammaGammaModel",
    "FitResult",
    "ModifiedBetaGeoModel",
    "ParetoNBDCovariateModel",
    "ParetoNBDModel",
    "PurchaseModel",
    "ShiftedBetaGeometricModel",
    "compress",
    "customer_lifetime_value",
    "design_matrix",
]
