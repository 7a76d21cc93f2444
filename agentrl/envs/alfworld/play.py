"""Playing ALFWorld game files with textworld, made fast enough for RL.

`textworld.start(path, wrappers=[AlfredDemangler])` plays a `.tw-pddl` file, but in a
full-size room every step re-derives the command text of every applicable action
through the grammar parser (~50 derivations, 70-270 ms a step), and every `reset()`
translates the PDDL problem to SAS twice again (1-3 s) even for the game it just played.
Memos remove that work without changing what the game says or accepts (a test plays a
game here and in plain textworld in a fresh interpreter and compares every observation
and admissible list); bench/alfworld_env.py measures the gain (steps ~10x, resets ~12x):

- command texts are memoised per grounded action for the loaded game, keyed by the
  arguments the template names. In this domain a command's text depends only on those
  and on `receptacleAtLocation` facts, which no action changes; templates made only of
  text and `{x}` placeholders are filled with the entities' names directly (what the
  grammar would derive);
- the PDDL->SAS translation is memoised per (domain, problem) text, so resetting a game
  reuses it (textworld only reads the translated task);
- the grammar's text snippets and conditions are parsed once per process (textworld
  re-parses every rule of the grammar for each game it loads, and the start symbol and
  conditions of every text it derives); callers get a deep copy, as textworld mutates
  what it derives;
- an env that will not ask the planner (`plannable=False`: the game file carries its
  plan) skips textworld's second, planner-optimised translation and hands the planner
  the plain one (still a correct task, only slower to search).

Wrapper classes are passed to textworld, not instances (an instance would be shared
across envs).
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

from agentrl.envs.alfworld.tasks import cache_root

_SAS_MEMO: OrderedDict[tuple[str, bool], Any] = OrderedDict()
SAS_MEMO_SIZE = 4  # translations kept per process
_MODE = {"plannable": True}  # set by FastPddlEnv around textworld's load/reset


def _imports():
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


def _install_memos() -> None:
    fast_downward, _, pddl_logic, _ = _imports()
    if not isinstance(pddl_logic.fast_downward, _MemoFastDownward):
        pddl_logic.fast_downward = _MemoFastDownward(fast_downward)
    import textworld.envs.pddl.textgen as textgen

    if not getattr(textgen._parse_and_convert, "_agentrl_memo", False):
        parse = textgen._parse_and_convert
        memo: dict[tuple, Any] = {}

        def memo_parse(text, rule_name=None, **kwargs):
            key = (text, rule_name)
            if kwargs.get("trace") or not isinstance(text, str):
                return parse(text, rule_name=rule_name, **kwargs)
            if key not in memo:
                if len(memo) > 20_000:  # texts are few (grammar rules, rule names); a safety cap
                    memo.clear()
                memo[key] = parse(text, rule_name=rule_name, **kwargs)
            return copy.deepcopy(memo[key])

        memo_parse._agentrl_memo = True
        textgen._parse_and_convert = memo_parse

    if not hasattr(textgen.Rule, "_agentrl_memo"):  # textgen only calls Rule.parse_conjunctive_query
        real_rule = textgen.Rule
        queries: dict[str, Any] = {}

        class MemoRule:
            _agentrl_memo = True

            @staticmethod
            def parse_conjunctive_query(expr: str):
                if expr not in queries:
                    queries[expr] = real_rule.parse_conjunctive_query(expr)
                return copy.deepcopy(queries[expr])

        textgen.Rule = MemoRule


_ENV_CLASS = None
_SIMPLE = re.compile(r"[^\[\]#|{}]*(\{\w+\}[^\[\]#|{}]*)*")  # text and bare {placeholders} only
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


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

            def cached_derive(rule, context=None):
                if context is None:
                    context = {}
                if rule not in templates:  # feedback and intro texts depend on the state
                    return derive(rule, context)
                # Only the placeholders the template names can change its text (a move's
                # text names where it goes, not where it starts).
                named = [(p.name, v.name) for p, v in context["mapping"].items() if _names(rule, p.name)]
                key = (rule, tuple(sorted(named)))
                if key not in memo:
                    if _SIMPLE.fullmatch(rule):  # "take {o} from {r}": each {x} is the entity's name
                        memo[key] = _PLACEHOLDER.sub(lambda m: str(context["variables"][m.group(1)]), rule)
                    else:
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
    _install_memos()
    env = _fast_env_class()(infos)
    env.plannable = plannable
    for wrapper in wrappers:
        env = wrapper(env)
    env.load(str(path))
    return env
