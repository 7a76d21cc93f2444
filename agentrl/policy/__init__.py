"""Policies: scripted (random, expert) and LLM (HF transformers).

Never touches the network: HF_HUB_OFFLINE is set here, before any policy or learner module
(`agentrl.learner` imports this package first) imports transformers or peft.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from agentrl.policy.base import Action, Policy, TurnContext  # noqa: E402

__all__ = ["Action", "Policy", "TurnContext"]
