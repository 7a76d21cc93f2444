"""The turn-level environment protocol (ARCHITECTURE.md §3; the whole contract: docs/env-contract.md).

An adapter is constructed once (cheap) and can then be reset to any task id of
its kind. `reset(task)` returns an `Observation`; `step(action)` returns a
`Transition`. Everything crossing a process boundary here is plain data so the
env pool can pickle it.

Adapter attributes (class attributes of `TextEnv`, overridable per adapter or per instance) say
what agentrl may assume about an env: which commands never reach it (`refused_commands`), how an
action is cleaned before it does (`action_first_line`, `action_max_chars`,
`action_strip_backslashes`, or an overridden `clean_action`), what the default system prompt calls
the task (`system_intro`) and what a scripted policy plays when it has nothing else
(`fallback_action`). `TextEnv`'s values are neutral (third-party adapters start from them);
`TextAdventureEnv` holds the interactive-fiction values the TextWorld, ALFWorld and toy adapters use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Commands that put interactive-fiction interpreters into a yes/no prompt or end the game.
META_COMMANDS = frozenset({"quit", "q", "restart", "save", "restore", "load", "script", "unscript"})
MAX_ACTION_CHARS = 200
REFUSED_TEXT = "That command is not allowed."
TEXT_ADVENTURE_INTRO = "You are playing a text adventure game."
NEUTRAL_INTRO = "You are an agent acting in a text environment."
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
_CONTROL_NO_BACKSLASH = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_KEEP_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # all but tab and newline


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
    # one-line notes about this step for the user (e.g. the gym adapter inferred `won`); the rollout
    # prints each distinct one once per run. Not stored.
    warnings: tuple[str, ...] = ()


def hygiene(
    action: str,
    first_line: bool = True,
    max_chars: int | None = MAX_ACTION_CHARS,
    strip_backslashes: bool = True,
    refused: frozenset[str] = META_COMMANDS,
) -> tuple[str, bool]:
    """Action hygiene with explicit settings. Returns (safe_text, ok); ok=False: the action must not
    reach the env (empty, or a refused command: its first word or the whole text, case-insensitive).

    Control characters are always removed. `first_line`: keep the first line and collapse
    whitespace; else keep the lines (tabs and newlines), strip each line's ends. `strip_backslashes`:
    a backslash becomes a space (it hangs the Z-machine). `max_chars`: cap the length."""
    text = action if isinstance(action, str) else str(action)
    if first_line:
        text = text.strip().split("\n", 1)[0] if text.strip() else ""
        text = (_CONTROL if strip_backslashes else _CONTROL_NO_BACKSLASH).sub(" ", text)
        text = " ".join(text.split())
    else:
        text = _CONTROL_KEEP_LINES.sub(" ", text)
        if strip_backslashes:
            text = text.replace("\\", " ")
        text = "\n".join(line.strip() for line in text.strip().split("\n"))
    if max_chars is not None:
        text = text[:max_chars]
    text = text.strip()
    if not text:
        return "", False
    low = text.lower()
    if refused and (low in refused or low.split()[0] in refused):
        return text, False
    return text, True


def clean_action(action: str) -> tuple[str, bool]:
    """The text-adventure action hygiene (`TextAdventureEnv`'s). Returns (safe_text, ok).

    Strips control characters and backslashes (a backslash hangs the Z-machine), keeps
    the first line, collapses whitespace, caps the length, and refuses meta commands.
    ok=False means the action must not reach the interpreter: the adapter treats it as
    an invalid step instead.
    """
    return hygiene(action)


class TextEnv:
    """Base class for adapters. Subclasses implement `reset` and `step`; `close`, `check_task` and
    `build_tasks` are optional.

    `name` is the registry name ("textworld", "alfworld", "gym", ...). The attributes below are
    read by the env pool (hygiene, refused commands) and by the driver (the system prompt, scripted
    policies); their meaning is in docs/env-contract.md.
    """

    name: str = "base"
    # commands that never reach the env (matched case-insensitively on the whole action or its first
    # word); the step is invalid, the state unchanged, and the observation is `refused_text`
    refused_commands: frozenset[str] = frozenset()
    refused_text: str = REFUSED_TEXT
    # action hygiene before the env sees an action (control characters are always removed)
    action_first_line: bool = False  # True: only the first line, whitespace collapsed
    action_max_chars: int | None = None  # a length cap
    action_strip_backslashes: bool = False
    # the first sentence of the built-in system prompts (rollout.system_prompt replaces the whole prompt)
    system_intro: str = NEUTRAL_INTRO
    # what the random and expert policies play when the env gives no admissible list / no plan;
    # None: they play nothing (an invalid step)
    fallback_action: str | None = None

    def reset(self, task: str, seed: int | None = None) -> Observation:  # pragma: no cover
        raise NotImplementedError

    def step(self, action: str) -> Transition:  # pragma: no cover
        raise NotImplementedError

    def clean_action(self, action: str) -> tuple[str, bool]:
        """(safe_text, ok) under this adapter's hygiene attributes; ok=False: refused, the step is
        invalid and the env is not stepped. Override for other rules."""
        return hygiene(
            action,
            first_line=self.action_first_line,
            max_chars=self.action_max_chars,
            strip_backslashes=self.action_strip_backslashes,
            refused=frozenset(c.lower() for c in self.refused_commands),
        )

    def check_task(self, task: str) -> None:
        """Raise UserError (naming the id) when `task` is not a game of this adapter. Must be cheap:
        parse the id, never build or load the game. The default accepts every id (third-party
        adapters without a check); `registry.check_tasks` calls it before any work starts."""

    # Optional build/verify hook for `agentrl envs build SUITE`: a method
    # `build_tasks(task_ids, workers, progress) -> list` that generates, caches and verifies the
    # games of `task_ids` (`progress(k)`: k more task ids are ready) and returns what it built.
    # None: nothing to build.
    build_tasks = None

    def close(self) -> None:
        pass


class TextAdventureEnv(TextEnv):
    """Interactive-fiction defaults (TextWorld, ALFWorld, the toy games): meta commands refused, the
    first line of an action only, backslashes stripped, 200 characters at most, "text adventure
    game" in the system prompt, `look` as the scripted policies' fallback."""

    refused_commands = META_COMMANDS
    action_first_line = True
    action_max_chars = MAX_ACTION_CHARS
    action_strip_backslashes = True
    system_intro = TEXT_ADVENTURE_INTRO
    fallback_action = "look"
