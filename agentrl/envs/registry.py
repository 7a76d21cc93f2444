"""Env registry: adapter names -> factories. Task ids name their adapter.

`textworld/w2-o3-q4/seed-17` -> adapter "textworld"; `gym:Foo-v0/seed-3` -> adapter "gym".
Third-party adapters register through the entry-point group `agentrl.envs`
(the entry point's name is the adapter name, its value a zero-argument factory).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from importlib import metadata

from agentrl.envs.base import TextEnv
from agentrl.errors import UserError

_FACTORIES: dict[str, Callable[[], TextEnv]] = {}
_BUILTIN = {
    "textworld": "agentrl.envs.textworld:TextWorldEnv",
    "alfworld": "agentrl.envs.alfworld:AlfWorldEnv",
    "gym": "agentrl.envs.gym:GymTextEnv",
    "toy": "agentrl.envs.toy:ToyEnv",
}


def register_env(name: str, factory: Callable[[], TextEnv]) -> None:
    _FACTORIES[name] = factory


def env_name_of(task_id: str) -> str:
    if task_id.startswith("gym:"):
        return "gym"
    return task_id.split("/", 1)[0]


def _load(spec: str) -> Callable[[], TextEnv]:
    module, _, attr = spec.partition(":")
    mod = __import__(module, fromlist=[attr])
    return getattr(mod, attr)


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, metadata.EntryPoint]:
    try:
        return {ep.name: ep for ep in metadata.entry_points(group="agentrl.envs")}
    except Exception:  # pragma: no cover - broken metadata
        return {}


def list_envs() -> list[str]:
    return sorted(set(_BUILTIN) | set(_FACTORIES) | set(_entry_points()))


def make_env(name_or_task: str) -> TextEnv:
    """An adapter instance for an adapter name or a task id."""
    name = env_name_of(name_or_task)
    if name in _FACTORIES:
        return _FACTORIES[name]()
    if name not in _BUILTIN and name in _entry_points():
        return _entry_points()[name].load()()
    if name in _BUILTIN:
        try:
            factory = _load(_BUILTIN[name])
        except ImportError as e:
            raise UserError(
                f"env '{name}' needs an optional package that is not installed ({e.name or e}); "
                f"install it with: pip install 'agentrl[{name}]'"
            ) from None
        return factory()
    raise UserError(f"unknown env '{name}' (known: {', '.join(list_envs())})")


def check_tasks(task_ids: list[str]) -> None:
    """Fail early (UserError naming the first bad id) when a task names an unknown adapter, one whose
    package is missing, or is not a valid id of its adapter (`TextEnv.check_task`: parsed, not built)."""
    envs: dict[str, TextEnv] = {}
    try:
        for task in dict.fromkeys(task_ids):
            name = env_name_of(task)
            if name not in envs:
                envs[name] = make_env(name)
            envs[name].check_task(task)
    finally:
        for env in envs.values():
            env.close()
