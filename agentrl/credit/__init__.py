"""Credit assignment (ARCHITECTURE.md §5): per-step advantages from grouped episodes.

    from agentrl.credit import Step, Episode, get_method, list_methods
    m = get_method("gigpo", gamma=0.95)
    advs = m.advantages(episodes)      # list[list[float]], the shape of the steps

Methods: grpo, rloo, gigpo, spa, oprl, igpo (one file each), plus third-party
methods from the entry-point group `agentrl.credit`. The methods are pure numpy:
importing this package or any method does not import torch. The model-computed
signals some methods read (spa, oprl, igpo) come from their providers in
`agentrl.signals`; `build_credit` builds a recipe's method and provider together.
"""

from agentrl.credit.base import EPS, CreditError, CreditMethod, Episode, Step
from agentrl.credit.registry import Credit, build_credit, get_method, list_methods, provider_class, register_method

__all__ = [
    "EPS",
    "Credit",
    "CreditError",
    "CreditMethod",
    "Episode",
    "Step",
    "build_credit",
    "get_method",
    "list_methods",
    "provider_class",
    "register_method",
]
