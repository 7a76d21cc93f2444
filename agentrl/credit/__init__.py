"""Credit assignment (DESIGN §5): per-step advantages from grouped episodes.

    from agentrl.credit import Step, Episode, get_method, list_methods
    m = get_method("gigpo", gamma=0.95)
    advs = m.advantages(episodes)      # list[list[float]], the shape of the steps

Methods: grpo, rloo, gigpo, spa, oprl, igpo (one file each), plus third-party
methods from the entry-point group `agentrl.credit`. Importing this package does
not import torch; `spa` and `oprl` do (for their learned parts).
"""

from agentrl.credit.base import EPS, CreditError, CreditMethod, Episode, Step
from agentrl.credit.registry import get_method, list_methods, register_method

__all__ = [
    "EPS",
    "CreditError",
    "CreditMethod",
    "Episode",
    "Step",
    "get_method",
    "list_methods",
    "register_method",
]
