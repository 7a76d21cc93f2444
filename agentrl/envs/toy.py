"""Toy text envs: pure Python, instant, deterministic. For tests and smoke runs.

Task ids (N = seed; the seed only shuffles the order of the admissible list, so what
wins is the same on every seed and a policy can learn it):

    toy/pick-{k}/seed-{N}    one turn, k doors (2-8); "open the red door" wins
                             (reward 1), any other door loses (reward 0); both end the game
    toy/chain-{n}/seed-{N}   n rooms in a row (1-50); in room i one fixed exit advances,
                             the other admissible commands change nothing (same text, same
                             anchor); reward 1 when leaving the last room, 0 before
    toy/echo/seed-{N}        free text; the observation repeats the action exactly as
                             received (info["received"]): shows what hygiene let through
    toy/hang/seed-{N}        step() never returns (tests the env pool's timeout)
    toy/crash/seed-{N}       step() kills its own process with exit code 3 (pool restart)

A text that is not admissible (pick, chain) is an invalid step: nothing changes; meta
commands are refused as in the real adapters (echo applies no hygiene at all).
`ToyTextEnv` is the chain game as a plain gymnasium env (`agentrl/ToyText-v0`), used to
test the generic gymnasium wrapper.
"""

from __future__ import annotations

import os
import random
import re
import time
from typing import Any

import gymnasium

from agentrl.envs.base import Observation, TextAdventureEnv, Transition, clean_action
from agentrl.envs.gymnasium_api import TEXT_CHARSET
from agentrl.errors import UserError

GOAL = "Find the way out."
COLORS = ["red", "blue", "green", "yellow", "white", "black", "purple", "orange"]
PICK_WIN = "open the red door"
EXITS = ["go north", "go east", "climb up", "go west", "go south", "climb down"]  # room i's exit: EXITS[i % 6]
_TASK = re.compile(r"toy/(?:(?P<kind>pick|chain)-(?P<n>\d+)|(?P<special>echo|hang|crash))/seed-(?P<seed>\d+)")


def parse_task(task_id: str) -> tuple[str, int, int]:
    """toy task id -> (kind, size, seed); UserError if ill-formed."""
    m = _TASK.fullmatch(task_id)
    if not m:
        raise UserError(
            f"bad toy task id '{task_id}' (expected toy/pick-K/seed-N, toy/chain-N/seed-N, "
            "toy/echo/seed-N, toy/hang/seed-N or toy/crash/seed-N)"
        )
    kind, n = (m["kind"], int(m["n"])) if m["kind"] else (m["special"], 0)
    if kind == "pick" and not 2 <= n <= len(COLORS):
        raise UserError(f"bad toy task id '{task_id}': pick needs 2-{len(COLORS)} doors")
    if kind == "chain" and not 1 <= n <= 50:
        raise UserError(f"bad toy task id '{task_id}': chain needs 1-50 rooms")
    return kind, n, int(m["seed"])


def _shuffled(items: list[str], *key: Any) -> list[str]:
    out = list(items)
    random.Random(" ".join(map(str, key))).shuffle(out)
    return out


class ToyEnv(TextAdventureEnv):
    """All toy games behind the turn-level protocol."""

    name = "toy"

    def __init__(self) -> None:
        self.kind, self.n, self.seed = "", 0, 0
        self.pos = 0  # chain: rooms passed
        self.done = self.won = False
        self.obs: Observation | None = None

    # --- observations of the current state
    def _pick_obs(self) -> Observation:
        doors = [f"open the {c} door" for c in COLORS[: self.n]]
        text = f"You are in a small room with {self.n} doors."
        return Observation(text, _shuffled(doors, "pick", self.seed), GOAL, text, {"expert_plan": [PICK_WIN]})

    def _chain_obs(self) -> Observation:
        text = f"You are in room {self.pos + 1} of {self.n}. Exits lead in every direction."
        plan = [EXITS[i % len(EXITS)] for i in range(self.pos, self.n)]
        return Observation(text, _shuffled(EXITS, "chain", self.seed, self.pos), GOAL, text, {"expert_plan": plan})

    def check_task(self, task: str) -> None:
        parse_task(task)

    def reset(self, task: str, seed: int | None = None) -> Observation:
        self.kind, self.n, self.seed = parse_task(task)
        self.pos, self.done, self.won = 0, False, False
        if self.kind == "pick":
            self.obs = self._pick_obs()
        elif self.kind == "chain":
            self.obs = self._chain_obs()
        else:
            text = {
                "echo": "Say something.",
                "hang": "This game hangs on every step.",
                "crash": "This game crashes on every step.",
            }[self.kind]
            self.obs = Observation(text, None if self.kind == "echo" else ["wait"], "", text, {})
        self.obs.info["walkthrough"] = list(self.obs.info.get("expert_plan", []))
        return self.obs

    def _unchanged(self, text: str | None = None, valid: bool = True) -> Transition:
        assert self.obs is not None
        info = {k: v for k, v in self.obs.info.items() if k != "walkthrough"}
        obs = Observation(
            text or self.obs.text, list(self.obs.admissible or []) or None, self.obs.goal, self.obs.anchor, info
        )
        return Transition(obs, 0.0, self.done, won=self.won, valid=valid)

    def step(self, action: str) -> Transition:
        if self.obs is None:
            raise RuntimeError("step() before reset()")
        if self.kind == "hang":
            while True:
                time.sleep(3600)
        if self.kind == "crash":
            os._exit(3)
        if self.kind == "echo":
            text = f"You said: {action}"
            return Transition(Observation(text, None, "", text, {"received": action}), 0.0, False)
        if self.done:
            return self._unchanged("The game is over.", valid=False)
        action, ok = clean_action(action)  # same hygiene as the real adapters
        if not ok:
            return self._unchanged("That command is not allowed.", valid=False)
        if action not in (self.obs.admissible or []):
            return self._unchanged("Nothing happens.", valid=False)
        if self.kind == "pick":
            self.done, self.won = True, action == PICK_WIN
            text = "The door opens onto daylight. You are free!" if self.won else "The door opens onto a pit. You fall."
            self.obs = Observation(text, [], GOAL, text, {"expert_plan": []})
            return Transition(self.obs, float(self.won), True, won=self.won)
        # chain
        if action != EXITS[self.pos % len(EXITS)]:
            return self._unchanged()
        self.pos += 1
        if self.pos == self.n:
            self.done = self.won = True
            text = "You step out into the daylight. You are free!"
            self.obs = Observation(text, [], GOAL, text, {"expert_plan": []})
            return Transition(self.obs, 1.0, True, won=True)
        self.obs = self._chain_obs()
        return Transition(self.obs, 0.0, False)


class ToyTextEnv(gymnasium.Env):
    """The chain game as an ordinary gymnasium env with text observations and actions:
    info carries admissible_commands, goal and won, like many text-game gym envs do."""

    metadata = {"render_modes": []}

    def __init__(self, rooms: int = 3) -> None:
        self.rooms = rooms
        self.observation_space = gymnasium.spaces.Text(max_length=1000, min_length=0, charset=TEXT_CHARSET)
        self.action_space = gymnasium.spaces.Text(max_length=200, min_length=0, charset=TEXT_CHARSET)
        self._env = ToyEnv()

    def _info(self, obs: Observation, won: bool = False) -> dict[str, Any]:
        return {
            "admissible_commands": list(obs.admissible or []),
            "goal": obs.goal,
            "won": won,
            "expert_plan": list(obs.info.get("expert_plan", [])),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        game_seed = int(self.np_random.integers(0, 2**31 - 1))
        obs = self._env.reset(f"toy/chain-{self.rooms}/seed-{game_seed}")
        return obs.text, self._info(obs)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        tr = self._env.step(action)
        return tr.observation.text, tr.reward, tr.terminated, False, self._info(tr.observation, tr.won)
