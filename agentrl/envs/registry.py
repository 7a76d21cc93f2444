"""Env registry: adapter names -> factories. Task ids name their adapter (docs/env-contract.md).

`textworld/w2-o3-q4/seed-17` -> adapter "textworld"; `gym:Foo-v0/seed-3` -> adapter "gym".
Third-party adapters register through the entry-point group `agentrl.envs`: the entry point's
name is the adapter name, its value a factory (usually the adapter class) called with the
recipe's `env.options` as keyword arguments (no options: no arguments). An entry point named
like a built-in adapter is ignored, with a warning. `register_env` registers a factory in this
process (tests, notebooks); it wins over both.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import Any

from agentrl.envs.base import TextAdventureEnv, TextEnv
from agentrl.errors import UserError, warn_once

_FACTORIES: dict[str, Callable[..., TextEnv]] = {}
_BUILTIN = {
    "textworld": "agentrl.envs.textworld:TextWorldEnv",
    "alfworld": "agentrl.envs.alfworld:AlfWorldEnv",
    "gym": "agentrl.envs.gym:GymTextEnv",
    "toy": "agentrl.envs.toy:ToyEnv",
}
# The attribute class of each built-in adapter, importable without the adapter's optional package
# (the driver reads the system prompt and fallback from it; tests/test_env_contract.py checks that each
# adapter class inherits them unchanged).
_BUILTIN_ATTRIBUTES: dict[str, type[TextEnv]] = {
    "textworld": TextAdventureEnv,
    "alfworld": TextAdventureEnv,
    "toy": TextAdventureEnv,
}
ENTRY_POINT_GROUP = "agentrl.envs"


def register_env(name: str, factory: Callable[..., TextEnv]) -> None:
    """Register an adapter factory in this process (it wins over built-ins and entry points)."""
    _FACTORIES[name] = factory
    adapter_attributes.cache_clear()


def unregister_env(name: str) -> None:
    _FACTORIES.pop(name, None)
    adapter_attributes.cache_clear()


def env_name_of(task_id: str) -> str:
    if task_id.startswith("gym:"):
        return "gym"
    return task_id.split("/", 1)[0]


def _load(spec: str) -> Callable[..., TextEnv]:
    module, _, attr = spec.partition(":")
    mod = __import__(module, fromlist=[attr])
    return getattr(mod, attr)


def _describe(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" of package {dist.name}" if dist is not None and getattr(dist, "name", None) else ""
    return f"entry point '{ep.name} = {ep.value}'{where} (group {ENTRY_POINT_GROUP})"


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, metadata.EntryPoint]:
    """Third-party adapters by name. One named like a built-in is ignored, with a warning."""
    try:
        found = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception:  # pragma: no cover - broken metadata
        return {}
    out: dict[str, metadata.EntryPoint] = {}
    for ep in found:
        if ep.name in _BUILTIN:
            warn_once(f"ignoring {_describe(ep)}: '{ep.name}' is a built-in adapter; give the entry point another name")
            continue
        if ep.name in out and out[ep.name].value != ep.value:
            warn_once(f"two adapters are named '{ep.name}': using {_describe(out[ep.name])}, ignoring {_describe(ep)}")
            continue
        out.setdefault(ep.name, ep)
    return out


def third_party_envs() -> list[str]:
    """The names of the adapters installed through entry points."""
    return sorted(_entry_points())


def list_envs() -> list[str]:
    return sorted(set(_BUILTIN) | set(_FACTORIES) | set(_entry_points()))


def _factory(name: str) -> Callable[..., TextEnv]:
    if name in _FACTORIES:
        return _FACTORIES[name]
    if name in _BUILTIN:
        try:
            return _load(_BUILTIN[name])
        except ImportError as e:
            raise UserError(
                f"env '{name}' needs an optional package that is not installed ({e.name or e}); "
                f"install it with: pip install 'agentrl[{name}]'"
            ) from None
    eps = _entry_points()
    if name in eps:
        try:
            factory = eps[name].load()
        except Exception as e:  # the third party's import: ModuleNotFoundError, or whatever it raised
            raise UserError(
                f"env adapter '{name}' cannot be loaded from {_describe(eps[name])}: {_one_line(e)}"
            ) from None
        if not callable(factory):
            raise UserError(f"env adapter '{name}': {_describe(eps[name])} is not a class or function")
        return factory
    raise UserError(f"unknown env '{name}' (known: {', '.join(list_envs())})")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _check_options(name: str, factory: Callable[..., TextEnv], options: Mapping[str, Any]) -> None:
    """UserError unless the factory takes these keyword arguments (`env.options`)."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C callable: let the call tell
        return
    params = [
        p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    ]
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    known = {p.name for p in params}
    unknown = sorted(set(options) - known)
    if unknown:
        takes = f"its options: {', '.join(sorted(known))}" if known else "it takes none"
        raise UserError(f"env '{name}' has no option {', '.join(unknown)} (env.options; {takes})")


def make_env(name_or_task: str, options: Mapping[str, Any] | None = None) -> TextEnv:
    """An adapter instance for an adapter name or a task id, built with `options` (the recipe's
    `env.options`, merged over its suite's `options`) as keyword arguments."""
    name = env_name_of(name_or_task)
    factory = _factory(name)
    options = dict(options or {})
    _check_options(name, factory, options)
    if name in _BUILTIN and name not in _FACTORIES:
        return factory(**options)
    try:
        env = factory(**options)
    except UserError:
        raise
    except Exception as e:  # a third-party constructor: say which adapter failed, in one line
        raise UserError(f"env adapter '{name}' failed to start: {_one_line(e)}") from None
    if not isinstance(env, TextEnv):
        raise UserError(
            f"env adapter '{name}' made a {type(env).__name__}, not an agentrl.envs.TextEnv (adapters subclass it)"
        )
    return env


@dataclass(frozen=True)
class AdapterAttributes:
    """What the driver reads from an adapter (docs/env-contract.md, "Adapter attributes")."""

    system_intro: str
    fallback_action: str | None
    refused_commands: frozenset[str]


def _attributes_of(obj: Any) -> AdapterAttributes:
    base = TextEnv
    return AdapterAttributes(
        system_intro=str(getattr(obj, "system_intro", base.system_intro)),
        fallback_action=getattr(obj, "fallback_action", base.fallback_action),
        refused_commands=frozenset(getattr(obj, "refused_commands", base.refused_commands)),
    )


def _freeze(options: Mapping[str, Any] | None) -> str:
    import json

    return json.dumps(dict(options or {}), sort_keys=True, default=str)


def attributes_for(name: str, options: Mapping[str, Any] | None = None) -> AdapterAttributes:
    """The adapter attributes of adapter `name` built with `options` (cached)."""
    return adapter_attributes(name, _freeze(options))


@lru_cache(maxsize=64)
def adapter_attributes(name: str, frozen_options: str = "{}") -> AdapterAttributes:
    import json

    options = json.loads(frozen_options)
    if not options and name in _BUILTIN_ATTRIBUTES and name not in _FACTORIES:
        return _attributes_of(_BUILTIN_ATTRIBUTES[name])  # no need to import the adapter's package
    env = make_env(name, options)
    try:
        return _attributes_of(env)
    finally:
        env.close()


def check_tasks(task_ids: list[str], options: Mapping[str, Any] | None = None) -> None:
    """Fail early (UserError naming the first bad id) when a task names an unknown adapter, one whose
    package is missing, is not a valid id of its adapter (`TextEnv.check_task`: parsed, not built),
    or when the adapter does not take `options`."""
    envs: dict[str, TextEnv] = {}
    try:
        for task in dict.fromkeys(task_ids):
            name = env_name_of(task)
            if name not in envs:
                envs[name] = make_env(name, options)
            envs[name].check_task(task)
    finally:
        for env in envs.values():
            env.close()
