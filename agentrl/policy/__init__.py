"""Policies: scripted (random, expert) and LLM (HF transformers)."""

from agentrl.policy.base import Action, Policy, TurnContext

__all__ = ["Action", "Policy", "TurnContext"]
