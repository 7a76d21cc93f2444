"""Generic wrapper: any gymnasium env with text observations as an agentrl adapter.

Task ids: `gym:<gymnasium id>/seed-{N}` (reset the gymnasium env with seed N) or
`gym:<gymnasium id>` (seed = the `seed` given to `reset`, else none). The gymnasium id
may itself contain '/' (a namespace) and may use gymnasium's `module:Id` form to import
the module that registers it.

What is read from the wrapped env's `info` (all optional; docs/env-contract.md, "The gym: route"):

- `admissible`: `info["admissible_commands"]`, else `info["admissible"]` (a list of str);
- `goal`: `info["goal"]`; `anchor`: `info["anchor"]`, else the observation text;
- `won`: `info["won"]` (a bool), else INFERRED as `terminated and reward > 0`, with a warning once
  per run (a loss with partial credit would count as a win);
- `valid`: `info["valid"]` (a bool; anything else, e.g. a list of commands, is refused with an
  error that ends the episode), else `action in admissible` when the env gives a list, else True.

Options (`env.options` of the recipe or `options` of the suite): `info_keys` maps these fields to
other info keys (`{admissible: valid, won: solved}`); `make_kwargs` are passed to
`gymnasium.make`; `refused_commands`, `system_intro`, `fallback_action` set the adapter
attributes (neutral by default: nothing refused, no fallback). Rewards are taken per step as the
env gives them; terminated/truncated pass through.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import gymnasium
import numpy as np

from agentrl.envs.base import REFUSED_TEXT, Observation, TextEnv, Transition
from agentrl.envs.gymnasium_api import register_gymnasium_envs
from agentrl.errors import UserError

__all__ = ["REFUSED_TEXT", "GymTextEnv", "INFO_FIELDS", "parse_task"]
INFO_FIELDS = ("admissible", "goal", "anchor", "won", "valid")  # what `info_keys` may map
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


def make_text_env(env_id: str, make_kwargs: dict[str, Any] | None = None) -> gymnasium.Env:
    """gymnasium.make(env_id, **make_kwargs), checked to have a Text observation space (UserError otherwise)."""
    register_gymnasium_envs()
    try:
        env = gymnasium.make(env_id, disable_env_checker=True, **(make_kwargs or {}))
    except (gymnasium.error.Error, ModuleNotFoundError, ValueError, TypeError) as e:
        raise UserError(f"cannot make gymnasium env '{env_id}': {e}") from None
    if not isinstance(env.observation_space, gymnasium.spaces.Text):
        space = type(env.observation_space).__name__
        env.close()
        raise UserError(f"gymnasium env '{env_id}' has {space} observations; the gym adapter needs text (spaces.Text)")
    return env


def _flag(env_id: str | None, field: str, key: str, value: Any) -> bool:
    """A bool from info (bool, numpy bool, or the integers 0/1); anything else is refused."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    hint = " (map another key with env.options: {info_keys: {admissible: " + key + "}})" if field == "valid" else ""
    raise UserError(
        f"gymnasium env '{env_id}': info['{key}'] ({field}) must be a bool, got {type(value).__name__}{hint}"
    )


class GymTextEnv(TextEnv):
    """Turn-level adapter over a text gymnasium env; one env instance reused while the id stays the same."""

    name = "gym"

    def __init__(
        self,
        info_keys: dict[str, str] | None = None,
        make_kwargs: dict[str, Any] | None = None,
        refused_commands: list[str] | None = None,
        system_intro: str | None = None,
        fallback_action: str | None = None,
    ) -> None:
        keys = dict(info_keys or {})
        bad = sorted(set(keys) - set(INFO_FIELDS))
        if bad:
            raise UserError(f"gym option info_keys: unknown field {', '.join(bad)} (fields: {', '.join(INFO_FIELDS)})")
        if not all(isinstance(v, str) and v for v in keys.values()):
            raise UserError("gym option info_keys: each value must be the name of an info key")
        if make_kwargs is not None and not isinstance(make_kwargs, dict):
            raise UserError("gym option make_kwargs must be a mapping (keyword arguments of gymnasium.make)")
        self.info_keys = keys
        self.make_kwargs = dict(make_kwargs or {})
        if refused_commands is not None:
            self.refused_commands = frozenset(str(c).lower() for c in refused_commands)
        if system_intro is not None:
            self.system_intro = str(system_intro)
        if fallback_action is not None:
            self.fallback_action = str(fallback_action)
        self._env: gymnasium.Env | None = None
        self._id: str | None = None
        self._obs: Observation | None = None

    def _keys(self, field: str) -> tuple[str, ...]:
        """The info keys a field is read from, in order."""
        if field in self.info_keys:
            return (self.info_keys[field],)
        taken = set(self.info_keys.values())  # a key mapped to another field is not read by default
        keys = ("admissible_commands", "admissible") if field == "admissible" else (field,)
        return tuple(k for k in keys if k not in taken)

    def _get(self, info: dict[str, Any], field: str) -> tuple[str | None, Any]:
        for key in self._keys(field):
            if key in info:
                return key, info[key]
        return None, None

    def _observation(self, text: Any, info: dict[str, Any]) -> Observation:
        if not isinstance(text, str):
            raise UserError(f"gymnasium env '{self._id}' returned a {type(text).__name__} observation, not text")
        used = {k for f in INFO_FIELDS for k in self._keys(f)}
        extra = {k: v for k, v in info.items() if k not in used}
        key, cmds = self._get(info, "admissible")
        if cmds is not None and (isinstance(cmds, (str, bytes)) or not hasattr(cmds, "__iter__")):
            raise UserError(
                f"gymnasium env '{self._id}': info['{key}'] (admissible) must be a list of commands, "
                f"got {type(cmds).__name__}"
            )
        _, goal = self._get(info, "goal")
        _, anchor = self._get(info, "anchor")
        return Observation(
            text=text,
            admissible=None if cmds is None else [str(c) for c in cmds],
            goal=str(goal or ""),
            anchor=str(text if anchor is None else anchor),
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
            self._env, self._id = make_text_env(env_id, self.make_kwargs), env_id
        text, info = self._env.reset(seed=task_seed if task_seed is not None else seed)
        self._obs = self._observation(text, dict(info))
        return self._obs

    def step(self, action: str) -> Transition:
        if self._env is None or self._obs is None:
            raise RuntimeError("step() before reset()")
        cmd, ok = self.clean_action(action)
        if not ok:
            same = Observation(
                self.refused_text, self._obs.admissible, self._obs.goal, self._obs.anchor, dict(self._obs.info)
            )
            return Transition(same, 0.0, False, valid=False)
        before = self._obs.admissible
        text, reward, terminated, truncated, info = self._env.step(cmd)
        info = dict(info)
        self._obs = self._observation(text, info)
        reward, terminated = float(reward), bool(terminated)
        notes: tuple[str, ...] = ()
        won_key, won = self._get(info, "won")
        if won_key is not None:
            won = _flag(self._id, "won", won_key, won)
        else:
            won = reward > 0 and terminated
            if terminated:
                notes = (
                    f"gymnasium env '{self._id}' gives no info['{self.info_keys.get('won', 'won')}']: "
                    "won is inferred as terminated with reward > 0 (a loss with partial credit counts as a win); "
                    "give it, or map a key with env.options: {info_keys: {won: KEY}}",
                )
        valid_key, valid = self._get(info, "valid")
        if valid_key is not None:
            valid = _flag(self._id, "valid", valid_key, valid)
        else:  # not given: the action was one of the admissible commands (True when the env lists none)
            valid = before is None or cmd in before
        return Transition(self._obs, reward, terminated, bool(truncated), won=won, valid=valid, warnings=notes)

    def close(self) -> None:
        if self._env is not None:
            try:
                self._env.close()
            finally:
                self._env, self._id = None, None
