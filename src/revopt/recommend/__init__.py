"""Cross-sell and upsell recommendations from order lines.

:func:`recommend` (or :func:`fit_recommendations`, whose model recommends to any group of customers
later) builds purchase baskets and a catalogue from clean order lines, compares the
methods on a time split, and returns the top-k products per customer with a reason for each:

* ``co_occurrence``: association rules between products bought in one basket;
* ``als``: collaborative filtering on implicit feedback (implicit's alternating least squares);
* ``popularity``: distinct recent buyers, the baseline;
* ``upsell``: a higher-priced product of a category the customer buys;
* ``replenishment``: products the customer buys on a cycle and is due to buy again.

Modules: :mod:`~revopt.recommend.baskets` (purchase lines, catalogue, training data),
:mod:`~revopt.recommend.rules` (association rules), :mod:`~revopt.recommend.methods`,
:mod:`~revopt.recommend.metrics` (ranking metrics) and :mod:`~revopt.recommend.evaluate`.
"""

from revopt.recommend.api import (
    AUTO,
    ITEM_TABLE_COLUMNS,
    RecommendationModel,
    RecommendationResult,
    fit_recommendations,
    reason_text,
    recommend,
)
from revopt.recommend.baskets import (
    BASKET_KEYS,
    NON_PRODUCT_PATTERNS,
    RecommendSettings,
    TrainingData,
    prepare_training,
    purchase_lines,
)
from revopt.recommend.evaluate import (
    DEFAULT_METHODS,
    MAX_EVALUATION_CUSTOMERS,
    SELECTION_METRIC,
    Evaluation,
    choose,
    evaluate,
)
from revopt.recommend.methods import (
    METHODS,
    CoOccurrence,
    ImplicitALS,
    Popularity,
    Recommender,
    Replenishment,
    Upsell,
    make_method,
)
from revopt.recommend.metrics import (
    average_precision_at_k,
    catalogue_coverage,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)
from revopt.recommend.rules import AssociationRules, association_rules

__all__ = [
    "AUTO",
    "BASKET_KEYS",
    "DEFAULT_METHODS",
    "ITEM_TABLE_COLUMNS",
    "METHODS",
    "MAX_EVALUATION_CUSTOMERS",
    "NON_PRODUCT_PATTERNS",
    "SELECTION_METRIC",
    "AssociationRules",
    "CoOccurrence",
    "Evaluation",
    "ImplicitALS",
    "Popularity",
    "RecommendationModel",
    "RecommendSettings",
    "RecommendationResult",
    "Recommender",
    "Replenishment",
    "TrainingData",
    "Upsell",
    "association_rules",
    "average_precision_at_k",
    "catalogue_coverage",
    "choose",
    "evaluate",
    "fit_recommendations",
    "make_method",
    "ndcg_at_k",
    "precision_at_k",
    "prepare_training",
    "purchase_lines",
    "ranking_metrics",
    "recall_at_k",
    "reason_text",
    "recommend",
]
