"""Scripted policies: `random` (uniform over admissible commands) and `expert` (the env's plan).

They go through the same rollout path as the LLM policy; they just leave the token fields empty.
Where the env gives no admissible list (random) or no plan (expert), they play the adapter's
`fallback_action` (`look` for the text-adventure adapters); an adapter without one gets an empty
action, which the env pool refuses as an invalid step.
"""

from __future__ import annotations

import random

from agentrl.envs.registry import attributes_for, env_name_of
from agentrl.policy.base import Action, TurnContext


class _Scripted:
    def __init__(self, env_options: dict | None = None):
        self.env_options = dict(env_options or {})

    def fallback(self, task_id: str) -> Action:
        cmd = attributes_for(env_name_of(task_id), self.env_options).fallback_action
        return Action(text=cmd, raw=cmd) if cmd else Action(text="", raw="", parsed=False)

    def end_episode(self, key: int) -> None:
        pass


class RandomPolicy(_Scripted):
    name = "random"

    def __init__(self, seed: int = 0, env_options: dict | None = None):
        super().__init__(env_options)
        self.rng = random.Random(seed)

    def act(self, contexts: list[TurnContext]) -> list[Action]:
        out = []
        for c in contexts:
            cmds = c.observation.admissible
            if not cmds:
                self.rng.choice([None])  # one draw, as for a one-command list: the stream stays as it was
                out.append(self.fallback(c.task_id))
                continue
            cmd = self.rng.choice(cmds)
            out.append(Action(text=cmd, raw=cmd))
        return out


class ExpertPolicy(_Scripted):
    """Follows `observation.info["expert_plan"]` (the remaining optimal plan) step by step."""

    name = "expert"

    def act(self, contexts: list[TurnContext]) -> list[Action]:
        out = []
        for c in contexts:
            plan = c.observation.info.get("expert_plan") or []
            if plan:
                out.append(Action(text=str(plan[0]), raw=str(plan[0])))
            else:
                out.append(self.fallback(c.task_id))
        return out
