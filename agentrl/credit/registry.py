"""Credit-method registry: names -> classes (or factories taking **params).

Built-in methods are imported lazily (spa/oprl import torch for their learned
parts). Third-party methods register through the entry-point group
`agentrl.credit` (entry point name = method name, value = a class or a factory
taking the method's parameters), or in-process with `register_method`.
Nothing is cached: entry points are looked up on each call (get_method runs
once per training run).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from importlib import metadata
from typing import Any, Callable

from agentrl.credit.base import CreditError, CreditMethod

ENTRY_POINT_GROUP = "agentrl.credit"

_BUILTIN = {
    "grpo": "agentrl.credit.grpo:GRPO",
    "rloo": "agentrl.credit.rloo:RLOO",
    "gigpo": "agentrl.credit.gigpo:GiGPO",
    "spa": "agentrl.credit.spa:SPA",
    "oprl": "agentrl.credit.oprl:OPRL",
    "igpo": "agentrl.credit.igpo:IGPO",
}
_REGISTERED: dict[str, Callable[..., CreditMethod]] = {}


def register_method(name: str, factory: Callable[..., CreditMethod]) -> None:
    """Register a method in this process (wins over built-ins and entry points)."""
    _REGISTERED[name] = factory


def _entry_points() -> dict[str, metadata.EntryPoint]:
    try:
        return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    except Exception:  # pragma: no cover - broken metadata on sys.path
        return {}


def list_methods() -> list[str]:
    """Names of all known methods: built-in, registered, and entry points."""
    return sorted(set(_BUILTIN) | set(_REGISTERED) | set(_entry_points()))


def _resolve(name: str) -> Callable[..., CreditMethod]:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _BUILTIN:
        module, _, attr = _BUILTIN[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    eps = _entry_points()
    if name in eps:
        try:
            return eps[name].load()
        except Exception as e:
            raise CreditError(f"credit method '{name}' (entry point {eps[name].value}) failed to load: {e}") from None
    raise CreditError(f"unknown credit method '{name}' (known: {', '.join(list_methods())})")


def get_method(name: str, **params: Any) -> CreditMethod:
    """An instance of the method `name` with `params` (DESIGN §5).

    Unknown names and unknown or invalid parameters raise CreditError (a ValueError)
    that names the culprit."""
    factory = _resolve(name)
    if dataclasses.is_dataclass(factory) and isinstance(factory, type):
        known = [f.name for f in dataclasses.fields(factory) if f.init]
        for p in params:
            if p not in known:
                close = difflib.get_close_matches(p, known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise CreditError(
                    f"credit method '{name}' has no parameter '{p}' (known: {', '.join(known) or 'none'}){hint}"
                )
        return factory(**params)
    try:
        method = factory(**params)
    except TypeError as e:
        raise CreditError(f"credit method '{name}': {e}") from None
    if not callable(getattr(method, "advantages", None)):
        raise CreditError(f"credit method '{name}' has no advantages(episodes) method")
    return method
