"""Pure search library: spaces, constraints, Pareto tools and ask/tell strategies.

Importing this package registers the built-in strategies (``random``, ``nsga2``, ``tpe``,
``linas``).
"""

from search.base import (
    Strategy,
    create_strategy,
    list_strategies,
    register_strategy,
    strategy_class,
)
from search.constraints import (
    Bound,
    Constraints,
    Objectives,
    Sense,
    constraint_values,
    is_feasible,
    validate_constraints,
    validate_objectives,
    violation,
)
from search.linas import LinasStrategy
from search.nsga2 import NSGA2Strategy
from search.optuna_base import OptunaStrategy
from search.optuna_tpe import TPEStrategy
from search.pareto import (
    exact_hypervolume_cost,
    feasible_front,
    hypervolume,
    non_dominated,
    sampled_hypervolume,
)
from search.random_search import RandomStrategy
from search.space import Arch, Choice, SearchSpace

__all__ = [
    "Arch",
    "Bound",
    "Choice",
    "Constraints",
    "LinasStrategy",
    "NSGA2Strategy",
    "Objectives",
    "OptunaStrategy",
    "RandomStrategy",
    "SearchSpace",
    "Sense",
    "Strategy",
    "TPEStrategy",
    "constraint_values",
    "create_strategy",
    "feasible_front",
    "hypervolume",
    "sampled_hypervolume",
    "exact_hypervolume_cost",
    "is_feasible",
    "list_strategies",
    "non_dominated",
    "register_strategy",
    "strategy_class",
    "validate_constraints",
    "validate_objectives",
    "violation",
]
