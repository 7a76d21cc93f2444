"""Generic wrapper: any gymnasium env with text observations as an agentrl adapter.

Task ids: `gym:<gymnasium id>/seed-{N}` (reset the gymnasium env with seed N) or
`gym:<gymnasium id>` (seed = the `seed` given to `reset`, else none). The gymnasium id
may itself contain '/' (a namespace) and may use gymnasium's `module:Id` form to import
the module that registers it.

What is read from the wrapped env's `info` (all optional): `admissible_commands` or
`admissible` (list of str), `goal`, `anchor` (default: the observation text), `won`
(default: reward > 0 and terminated), `valid` (default: action in admissible, when known).
Rewards are taken per step as the env gives them; terminated/truncated pass through.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import gymnasium

from agentrl.envs.base import Observation, TextEnv, Transition, clean_action
from agentrl.envs.gymnasium_api import register_gymnasium_envs
from agentrl.errors import UserError

REFUSED_TEXT = "That command is not allowed."
_TASK = re.compile(r"gym:(?P<id>.+?)(?:/seed-(?P<seed>\d+))?")


def parse_task(task_id: str) -> tuple[str, int | None]:
    """`gym:Foo-v0/seed-3` -> ("Foo-v0", 3); `gym:Foo-v0` -> ("Foo-v0", None)."""
    m = _TASK.fullmatch(task_id)
    if not m:
        raise UserError(f"bad gym task id '{task_id}' (expected gym:<gymnasium id>[/seed-N])")
    return m["id"], None if m["seed"] is None else int(m["seed"])


def check_env_id(env_id: str) -> None:
    """UserError unless `env_id` is registered with gymnasium (after importing the module of a
    `module:Id` form, as gymnasium.make does). Makes no env."""
    register_gymnasium_envs()
    module, sep, name = env_id.partition(":")
    if sep:
        try:
            importlib.import_module(module)
        except Exception as e:  # the user's module: ImportError, or whatever its import raised
            raise UserError(f"cannot import module '{module}' for gymnasium env '{name}': {e}") from None
    else:
        name = env_id
    try:
        gymnasium.spec(name)
    except (gymnasium.error.Error, ValueError) as e:
        raise UserError((str(e).splitlines() or [f"no registered gymnasium env '{name}'"])[0]) from None


def make_text_env(env_id: str) -> gymnasium.Env:
    """gymnasium.make(env_id), checked to have a Text observation space (UserError otherwise)."""
    register_gymnasium_envs()
    try:
        env = gymnasium.make(env_id, disable_env_checker=True)
    except (gymnasium.error.Error, ModuleNotFoundError, ValueError) as e:
        raise UserError(f"cannot make gymnasium env '{env_id}': {e}") from None
    if not isinstance(env.observation_space, gymnasium.spaces.Text):
        space = type(env.observation_space).__name__
        env.close()
        raise UserError(f"gymnasium env '{env_id}' has {space} observations; the gym adapter needs text (spaces.Text)")
    return env


def _admissible(info: dict[str, Any]) -> list[str] | None:
    cmds = info.get("admissible_commands", info.get("admissible"))
    return None if cmds is None else [str(c) for c in cmds]


class GymTextEnv(TextEnv):
    """Turn-level adapter over a text gymnasium env; one env instance reused while the id stays the same."""

    name = "gym"

    def __init__(self) -> None:
        self._env: gymnasium.Env | None = None
        self._id: str | None = None
        self._obs: Observation | None = None

    def _observation(self, text: Any, info: dict[str, Any]) -> Observation:
        if not isinstance(text, str):
            raise UserError(f"gymnasium env '{self._id}' returned a {type(text).__name__} observation, not text")
        extra = {
            k: v
            for k, v in info.items()
            if k not in ("admissible_commands", "admissible", "goal", "anchor", "won", "valid")
        }
        return Observation(
            text=text,
            admissible=_admissible(info),
            goal=str(info.get("goal", "") or ""),
            anchor=str(info.get("anchor", text)),
            info=extra,
        )

    def check_task(self, task: str) -> None:
        env_id, _ = parse_task(task)
        try:
            check_env_id(env_id)
        except UserError as e:
            raise UserError(f"bad gym task id '{task}': {e}") from None

    def reset(self, task: str, seed: int | None = None) -> Observation:
        env_id, task_seed = parse_task(task)
        if env_id != self._id or self._env is None:
            self.close()
            self._env, self._id = make_text_env(env_id), env_id
        text, info = self._env.reset(seed=task_seed if task_seed is not None else seed)
        self._obs = self._observation(text, dict(info))
        return self._obs

    def step(self, action: str) -> Transition:
        if self._env is None or self._obs is None:
            raise RuntimeError("step() before reset()")
        cmd, ok = clean_action(action)
        if not ok:
            same = Observation(
                REFUSED_TEXT, self._obs.admissible, self._obs.goal, self._obs.anchor, dict(self._obs.info)
            )
            return Transition(same, 0.0, False, valid=False)
        before = self._obs.admissible
        text, reward, terminated, truncated, info = self._env.step(cmd)
        info = dict(info)
        self._obs = self._observation(text, info)
        reward = float(reward)
        won = bool(info.get("won", reward > 0 and terminated))
        valid = bool(info["valid"]) if "valid" in info else (before is None or cmd in before)
        return Transition(self._obs, reward, bool(terminated), bool(truncated), won=won, valid=valid)

    def close(self) -> None:
        if self._env is not None:
            try:
                self._env.close()
            finally:
                self._env, self._id = None, None
