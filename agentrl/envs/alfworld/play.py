"""Playing ALFWorld game files with textworld, made fast enough for RL.

`textworld.start(path, wrappers=[AlfredDemangler])` plays a `.tw-pddl` file, but in a
full-size room every step re-derives the command text of every applicable action
through the grammar parser (~50 derivations, 70-270 ms a step), and every `reset()`
translates the PDDL problem to SAS twice again (1-3 s) even for the game it just played.
Two exact memos remove that work, without changing what the game says or accepts:

- command texts are memoised per grounded action for the loaded game. In this domain a
  command's text depends only on the action's arguments and on `receptacleAtLocation`
  facts, which no action changes (checked by tests/test_alfworld.py against plain
  textworld, command for command);
- the PDDL->SAS translation is memoised per (domain, problem) text, so resetting a game
  reuses it (textworld only reads the translated task);
- an env that will not ask the planner (`plannable=False`: the game file carries its
  plan) skips textworld's second, planner-optimised translation and hands the planner
  the plain one (still a correct task, only slower to search).

Wrapper classes are passed to textworld, not instances (an instance would be shared
across envs).
"""

from __future__ import annotations

import hashlib
import os
import re
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

_SAS_MEMO: OrderedDict[tuple[str, bool], Any] = OrderedDict()
SAS_MEMO_SIZE = 4  # translations kept per process
_MODE = {"plannable": True}  # set by FastPddlEnv around textworld's load/reset


def _imports():
    from agentrl.envs.alfworld.generate import cache_root

    os.environ.setdefault("ALFWORLD_DATA", str(cache_root() / "alfworld-data"))
    import fast_downward
    import textworld
    import textworld.envs.pddl.logic as pddl_logic
    from textworld.envs.pddl.pddl import PddlEnv

    return fast_downward, textworld, pddl_logic, PddlEnv


class _MemoFastDownward(types.ModuleType):
    """Stands in for the `fast_downward` module inside textworld's PDDL logic: the same
    module, with `pddl2sas` memoised."""

    def __init__(self, real):
        super().__init__(real.__name__)
        self._real = real

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def pddl2sas(self, domain: str, problem: str, verbose: bool = False, optimize: bool = False):
        if optimize and not _MODE["plannable"]:
            optimize = False
        key = (hashlib.sha1((domain + "\0" + problem).encode()).hexdigest(), bool(optimize))
        if key in _SAS_MEMO:
            _SAS_MEMO.move_to_end(key)
            return _SAS_MEMO[key]
        out = self._real.pddl2sas(domain, problem, verbose=verbose, optimize=optimize)
        _SAS_MEMO[key] = out
        while len(_SAS_MEMO) > SAS_MEMO_SIZE:
            _SAS_MEMO.popitem(last=False)
        return out


def _install_sas_memo() -> None:
    fast_downward, _, pddl_logic, _ = _imports()
    if not isinstance(pddl_logic.fast_downward, _MemoFastDownward):
        pddl_logic.fast_downward = _MemoFastDownward(fast_downward)


_ENV_CLASS = None


def _names(template: str, placeholder: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(placeholder)}(?![A-Za-z0-9_])", template) is not None


def _fast_env_class():
    """textworld's PddlEnv whose grammar memoises command-template derivations per game."""
    global _ENV_CLASS
    if _ENV_CLASS is not None:
        return _ENV_CLASS
    _, _, _, PddlEnv = _imports()

    class FastPddlEnv(PddlEnv):
        plannable = True

        def reset(self):
            _MODE["plannable"] = self.plannable
            try:
                return super().reset()
            finally:
                _MODE["plannable"] = True

        def load(self, filename_or_data):
            _MODE["plannable"] = self.plannable
            try:
                super().load(filename_or_data)
            finally:
                _MODE["plannable"] = True
            grammar = self._logic.grammar
            templates = {a.template for a in self._logic.actions.values()}
            derive = grammar.derive
            memo: dict[tuple, str] = {}

            def cached_derive(rule, context={}):
                if rule not in templates:  # feedback and intro texts depend on the state
                    return derive(rule, context)
                # Only the placeholders the template names can change its text (a move's
                # text names where it goes, not where it starts).
                key = (rule, tuple(sorted((p.name, v.name) for p, v in context["mapping"].items() if _names(rule, p.name))))
                if key not in memo:
                    memo[key] = derive(rule, context)
                return memo[key]

            grammar.derive = cached_derive

    _ENV_CLASS = FastPddlEnv
    return FastPddlEnv


def start_game(path: str | Path, demangle: bool = True, fast: bool = True, plannable: bool = True):
    """A textworld env playing an ALFWorld game file, names demangled as ALFWorld does
    ("cabinet 3"; `demangle=False` keeps PDDL ids). Infos: admissible commands, won, and
    `extra.walkthrough` (the stored plan, or a planner call if the file has none).
    `plannable=False` for games whose file carries the plan (see the module docstring);
    `fast=False` is plain `textworld.start` (for comparisons)."""
    _, textworld, _, _ = _imports()
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler

    infos = textworld.EnvInfos(admissible_commands=True, won=True, extras=["walkthrough"])
    wrappers = [AlfredDemangler] if demangle else []
    if not fast:
        return textworld.start(str(path), request_infos=infos, wrappers=wrappers)
    _install_sas_memo()
    env = _fast_env_class()(infos)
    env.plannable = plannable
    for wrapper in wrappers:
        env = wrapper(env)
    env.load(str(path))
    return env
