"""The turn-level environment protocol (ARCHITECTURE.md §3).

An adapter is constructed once (cheap) and can then be reset to any task id of
its kind. `reset(task)` returns an `Observation`; `step(action)` returns a
`Transition`. Everything crossing a process boundary here is plain data so the
env pool can pickle it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Commands that put interactive-fiction interpreters into a yes/no prompt or end the game.
META_COMMANDS = frozenset({"quit", "q", "restart", "save", "restore", "load", "script", "unscript"})
MAX_ACTION_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


@dataclass
class Observation:
    text: str  # what the agent reads this turn, cleaned of interpreter status lines/prompts
    admissible: list[str] | None = None  # valid commands now, if the env knows them
    goal: str = ""  # the task's goal sentence
    anchor: str = ""  # state key for GiGPO: the raw current observation, no history
    info: dict[str, Any] = field(default_factory=dict)  # extras, e.g. "expert_plan": [remaining commands]


@dataclass
class Transition:
    observation: Observation
    reward: float  # this step's reward (not cumulative)
    terminated: bool  # the game ended (won or lost)
    truncated: bool = False  # cut short by the env itself (not by the rollout's max_steps)
    won: bool = False
    valid: bool = True  # False when the env did not understand / could not apply the action


def clean_action(action: str) -> tuple[str, bool]:
    """Action hygiene. Returns (safe_text, ok).

    Strips control characters and backslashes (a backslash hangs the Z-machine), keeps
    the first line, collapses whitespace, caps the length, and refuses meta commands.
    ok=False means the action must not reach the interpreter: the adapter treats it as
    an invalid step instead.
    """
    text = action if isinstance(action, str) else str(action)
    text = text.strip().split("\n", 1)[0] if text.strip() else ""
    text = _CONTROL.sub(" ", text)
    text = " ".join(text.split())[:MAX_ACTION_CHARS].strip()
    if not text:
        return "", False
    if text.lower() in META_COMMANDS or text.lower().split()[0] in META_COMMANDS:
        return text, False
    return text, True


class TextEnv:
    """Base class for adapters. Subclasses implement `reset` and `step`; `close` is optional.

    `name` is the registry name ("textworld", "alfworld", "gym", ...).
    """

    name: str = "base"

    def reset(self, task: str, seed: int | None = None) -> Observation:  # pragma: no cover
        raise NotImplementedError

    def step(self, action: str) -> Transition:  # pragma: no cover
        raise NotImplementedError

    def check_task(self, task: str) -> None:
        """Raise UserError (naming the id) when `task` is not a game of this adapter. Must be cheap:
        parse the id, never build or load the game. The default accepts every id (third-party
        adapters without a check); `registry.check_tasks` calls it before any work starts."""

    def close(self) -> None:
        pass
