"""Scripted policies: `random` (uniform over admissible commands) and `expert` (the env's plan).

They go through the same rollout path as the LLM policy; they just leave the token fields empty.
"""

from __future__ import annotations

import random

from agentrl.policy.base import Action, TurnContext

FALLBACK = "look"


class RandomPolicy:
    name = "random"

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    def act(self, contexts: list[TurnContext]) -> list[Action]:
        out = []
        for c in contexts:
            cmds = c.observation.admissible or [FALLBACK]
            cmd = self.rng.choice(cmds)
            out.append(Action(text=cmd, raw=cmd))
        return out

    def end_episode(self, key: int) -> None:
        pass


class ExpertPolicy:
    """Follows `observation.info["expert_plan"]` (the remaining optimal plan) step by step."""

    name = "expert"

    def act(self, contexts: list[TurnContext]) -> list[Action]:
        out = []
        for c in contexts:
            plan = c.observation.info.get("expert_plan") or []
            cmd = plan[0] if plan else FALLBACK
            out.append(Action(text=cmd, raw=cmd))
        return out

    def end_episode(self, key: int) -> None:
        pass
