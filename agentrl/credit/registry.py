"""Credit-method registry: names -> classes (or factories taking **params), each with an
optional signal provider.

A method's provider (`agentrl.signals`) is the part that runs on the policy model and
fills the signals the method reads; the registry names it by a "module:attr" string,
imported only by `build_credit`, so `agentrl.credit` and `get_method` never import torch.
Built-in methods are imported lazily. Third-party methods register through the
entry-point group `agentrl.credit` (entry point name = method name, value = a class or a
factory taking the method's parameters; no provider), or in-process with
`register_method` (optionally with a provider). Nothing is cached: entry points are
looked up on each call (get_method runs once per training run).

`build_credit(recipe.credit, model, tokenizer, recipe)` is the trainer's one entry: it
splits the recipe's `credit:` parameters by the declared fields of the method and of its
provider's `Params` (an unknown one is a one-line CreditError naming it and the known
ones), builds the method once and the provider on the model.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any, NamedTuple

from agentrl.credit.base import CreditError, CreditMethod

if TYPE_CHECKING:
    from agentrl.signals.base import SignalProvider

ENTRY_POINT_GROUP = "agentrl.credit"

# name -> (method "module:attr", provider "module:attr" or None)
_BUILTIN: dict[str, tuple[str, str | None]] = {
    "grpo": ("agentrl.credit.grpo:GRPO", None),
    "rloo": ("agentrl.credit.rloo:RLOO", None),
    "gigpo": ("agentrl.credit.gigpo:GiGPO", None),
    "spa": ("agentrl.credit.spa:SPA", "agentrl.signals.spa:SPAProvider"),
    "oprl": ("agentrl.credit.oprl:OPRL", "agentrl.signals.oprl:OPRLProvider"),
    "igpo": ("agentrl.credit.igpo:IGPO", "agentrl.signals.igpo:IGPOProvider"),
}
_REGISTERED: dict[str, tuple[Callable[..., CreditMethod], str | type | None]] = {}


def register_method(name: str, factory: Callable[..., CreditMethod], provider: str | type | None = None) -> None:
    """Register a method in this process (wins over built-ins and entry points).

    `provider`: its signal provider, a class or a "module:attr" string (see `agentrl.signals.base`)."""
    _REGISTERED[name] = (factory, provider)


def _entry_points() -> dict[str, metadata.EntryPoint]:
    try:
        return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    except Exception:  # pragma: no cover - broken metadata on sys.path
        return {}


def list_methods() -> list[str]:
    """Names of all known methods: built-in, registered, and entry points."""
    return sorted(set(_BUILTIN) | set(_REGISTERED) | set(_entry_points()))


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _resolve(name: str) -> Callable[..., CreditMethod]:
    if name in _REGISTERED:
        return _REGISTERED[name][0]
    if name in _BUILTIN:
        return _load(_BUILTIN[name][0])
    eps = _entry_points()
    if name in eps:
        try:
            return eps[name].load()
        except Exception as e:
            raise CreditError(f"credit method '{name}' (entry point {eps[name].value}) failed to load: {e}") from None
    raise CreditError(f"unknown credit method '{name}' (known: {', '.join(list_methods())})")


def provider_class(name: str) -> type | None:
    """The signal provider class of method `name`, or None (imports it: torch for the built-in ones)."""
    if name in _REGISTERED:
        ref = _REGISTERED[name][1]
    elif name in _BUILTIN:
        ref = _BUILTIN[name][1]
    else:
        _resolve(name)  # unknown names: the usual error
        return None
    return _load(ref) if isinstance(ref, str) else ref


def _fields(cls: Any) -> list[str] | None:
    """The init fields of a dataclass type, else None (a factory whose parameters are not declared)."""
    if dataclasses.is_dataclass(cls) and isinstance(cls, type):
        return [f.name for f in dataclasses.fields(cls) if f.init]
    return None


def _check_known(name: str, params: dict[str, Any], known: list[str]) -> None:
    for p in params:
        if p not in known:
            close = difflib.get_close_matches(p, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise CreditError(
                f"credit method '{name}' has no parameter '{p}' (known: {', '.join(known) or 'none'}){hint}"
            )


def get_method(name: str, **params: Any) -> CreditMethod:
    """An instance of the method `name` with `params` (ARCHITECTURE.md §5).

    Unknown names and unknown or invalid parameters raise CreditError (a ValueError)
    that names the culprit."""
    factory = _resolve(name)
    known = _fields(factory)
    if known is not None:
        _check_known(name, params, known)
        return factory(**params)
    try:
        method = factory(**params)
    except TypeError as e:
        raise CreditError(f"credit method '{name}': {e}") from None
    if not callable(getattr(method, "advantages", None)):
        raise CreditError(f"credit method '{name}' has no advantages(episodes) method")
    return method


class Credit(NamedTuple):
    """A recipe's credit method and its signal provider (None for methods without one)."""

    method: CreditMethod
    provider: SignalProvider | None


def split_credit_params(name: str, params: dict[str, Any], provider: type | None) -> tuple[dict, dict]:
    """`recipe.credit` params -> (the method's, the provider's), by the declared fields of the
    method (a dataclass) and of `provider.Params`. A name that is neither is a CreditError naming
    it and the known ones (a method that declares no fields gets every non-provider name)."""
    own = (_fields(getattr(provider, "Params", None)) or []) if provider is not None else []
    method_fields = _fields(_resolve(name))
    if method_fields is not None:
        _check_known(name, params, method_fields + own)
    return ({k: v for k, v in params.items() if k not in own}, {k: v for k, v in params.items() if k in own})


def build_credit(cfg, model, tokenizer, recipe) -> Credit:
    """The credit method of `cfg` (a recipe's `credit:` section: `.method`, `.params()`) and its
    signal provider on `model` (a PeftModel with adapter "policy"), or None without one.

    Parameters are checked before anything touches the model; the method is built once and
    handed to the provider (e.g. OPRL's PRM uses the method's beta)."""
    name = cfg.method
    provider_cls = provider_class(name)
    method_params, provider_params = split_credit_params(name, cfg.params(), provider_cls)
    method = get_method(name, **method_params)
    if provider_cls is None:
        return Credit(method, None)
    params_cls = getattr(provider_cls, "Params", None)
    settings = params_cls(**provider_params) if params_cls is not None else None
    return Credit(method, provider_cls(model, tokenizer, recipe, settings, method))
