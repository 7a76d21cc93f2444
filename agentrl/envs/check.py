"""`agentrl envs check TASK_ID`: does an adapter keep the env contract (docs/env-contract.md)?

What it does, all in this process, through the env pool's own per-process logic (`pool._Envs`:
the adapter's action hygiene included, as in a worker):

1. the task id parses (`check_tasks`: the adapter's `check_task`, and the adapter takes `options`);
2. plays the task `steps` steps four times and compares every observation (text, admissible list,
   anchor, goal, `info["expert_plan"]`) and every step's reward, terminated, truncated, won and
   valid with the first run:
   - `alone, new instance`: a fresh adapter, reset(task, seed), then the steps;
   - `alone, same instance again`: the same adapter reset again (state must not leak across resets);
   - `interleaved A` and `interleaved B`: two fresh adapters in one process, both reset, then
     stepped in turn, A, B, A, B... (episodes that share a worker process must not change each
     other: an env drawing from the process-global `random` fails here);
   the actions are a function of the observation and the step only: a seeded choice among the
   admissible commands (`random.Random("<seed>/<t>")`), else the first expert-plan command, else
   the adapter's `fallback_action` (none: only the reset is checked);
3. reports the sizes of the admissible lists and of the user messages (the prompt) they make, in
   characters and tokens (exact with a tokenizer, else estimated at 4 characters a token), and
   warns about what would hurt training: no expert plan or walkthrough, an expert plan that does
   not win, no `check_task`, empty anchors, prompts past the default `max_prompt_tokens`, a task
   seed (`.../seed-N`) that does not change the start.

The first difference (or an exception the env raised) is the result; `agentrl envs check` exits 1
with it.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from agentrl.envs.base import Observation, TextEnv, Transition
from agentrl.envs.pool import _Envs
from agentrl.envs.registry import attributes_for, check_tasks, env_name_of
from agentrl.errors import UserError

FIELDS = ("text", "admissible", "anchor", "goal", "expert_plan", "reward", "terminated", "truncated", "won", "valid")
DEFAULT_MAX_PROMPT_TOKENS = 2048  # RolloutConfig.max_prompt_tokens's default
CHARS_PER_TOKEN = 4  # the estimate without a tokenizer
_SEED_SUFFIX = re.compile(r"(.*/seed-)(\d+)")


@dataclass
class Snapshot:
    """One reset (t = -1) or step of a run, as compared."""

    t: int
    action: str
    text: str
    admissible: list[str] | None
    anchor: str
    goal: str
    expert_plan: list[str] | None
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    won: bool = False
    valid: bool = True


@dataclass
class Run:
    name: str
    snapshots: list[Snapshot] = field(default_factory=list)
    error: str | None = None  # an exception the env raised, with where
    walkthrough: bool = False  # the reset's info has "walkthrough"


@dataclass
class CheckReport:
    task: str
    seed: int
    steps: int
    runs: list[Run] = field(default_factory=list)
    difference: str | None = None  # the first difference, or the env's exception
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    admissible_max: int | None = None  # None: the env gives no lists
    admissible_mean: float | None = None
    prompt_chars_max: int = 0
    prompt_tokens_max: int = 0
    tokens_exact: bool = False

    @property
    def ok(self) -> bool:
        return self.difference is None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def choose_action(obs: Observation, t: int, seed: int, fallback: str | None) -> str | None:
    """The check's action at step t: a function of (observation, t, seed) only."""
    if obs.admissible:
        return obs.admissible[random.Random(f"{seed}/{t}").randrange(len(obs.admissible))]
    plan = obs.info.get("expert_plan") or []
    if plan:
        return str(plan[0])
    return fallback


def _plan(obs: Observation) -> list[str] | None:
    plan = obs.info.get("expert_plan")
    return None if plan is None else [str(c) for c in plan]


def _snap(t: int, action: str, obs: Observation, tr: Transition | None = None) -> Snapshot:
    s = Snapshot(
        t, action, obs.text, None if obs.admissible is None else list(obs.admissible), obs.anchor, obs.goal, _plan(obs)
    )
    if tr is not None:
        s.reward, s.terminated, s.truncated = float(tr.reward), bool(tr.terminated), bool(tr.truncated)
        s.won, s.valid = bool(tr.won), bool(tr.valid)
    return s


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


class _Player:
    """One episode on one slot of an `_Envs`, stepped one action at a time."""

    def __init__(self, envs: _Envs, slot: int, run: Run, task: str, seed: int, fallback: str | None):
        self.envs, self.slot, self.run = envs, slot, run
        self.task, self.seed, self.fallback = task, seed, fallback
        self.obs: Observation | None = None
        self.done = False

    def reset(self) -> None:
        try:
            self.obs = self.envs.handle("reset", self.slot, (self.task, self.seed))
        except Exception as e:
            self.run.error, self.done = f"reset raised {_err(e)}", True
            return
        self.run.snapshots.append(_snap(-1, "(reset)", self.obs))
        self.run.walkthrough = "walkthrough" in self.obs.info

    def step(self, t: int) -> None:
        if self.done or self.obs is None:
            return
        action = choose_action(self.obs, t, self.seed, self.fallback)
        if action is None:
            self.done = True
            return
        try:
            tr = self.envs.handle("step", self.slot, action)
        except Exception as e:
            self.run.error, self.done = f"step {t} (action '{action}') raised {_err(e)}", True
            return
        self.obs = tr.observation
        self.run.snapshots.append(_snap(t, action, tr.observation, tr))
        if tr.terminated or tr.truncated:
            self.done = True


def _show(value: Any, n: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def first_difference(ref: Run, other: Run) -> str | None:
    """Where `other` first differs from `ref`, in words; None when they agree."""
    if other.error and other.error != ref.error:
        return f"{other.name}: {other.error}"
    for a, b in zip(ref.snapshots, other.snapshots):
        where = "the reset" if a.t < 0 else f"step {a.t} (action '{a.action}')"
        if a.action != b.action:
            return f"{other.name}: at {where}, the action chosen differs ('{b.action}')"
        for f in FIELDS:
            va, vb = getattr(a, f), getattr(b, f)
            if va != vb:
                what = "observation text" if f == "text" else ("admissible list" if f == "admissible" else f)
                return f"{other.name} differs from {ref.name} at {where}: {what} {_show(vb)} vs {_show(va)}"
    if len(ref.snapshots) != len(other.snapshots):
        return f"{other.name} ended after {len(other.snapshots) - 1} steps, {ref.name} after {len(ref.snapshots) - 1}"
    return None


def _neighbour(task: str) -> str | None:
    """The task id with the next seed (`.../seed-N` -> `.../seed-N+1`), or None."""
    m = _SEED_SUFFIX.fullmatch(task)
    return f"{m[1]}{int(m[2]) + 1}" if m else None


def _start(obs: Observation) -> tuple:
    return obs.text, obs.admissible, obs.anchor, obs.goal, _plan(obs)


def check_env(
    task: str, steps: int = 20, seed: int = 0, options: dict[str, Any] | None = None, tokenizer=None
) -> CheckReport:
    """Check the adapter of `task` against the contract (module docstring). UserError (before
    anything is played) when the task id does not parse or the options are not the adapter's."""
    options = dict(options or {})
    report = CheckReport(task, seed, steps)
    try:
        check_tasks([task], options)
    except UserError:
        raise
    except Exception as e:  # the adapter's own check_task or constructor failed: that is the finding
        report.difference = f"checking the task id raised {_err(e)}"
        return report
    name = env_name_of(task)
    attrs = attributes_for(name, options)
    fallback = attrs.fallback_action

    runs = [Run("alone, new instance"), Run("alone, same instance again"), Run("interleaved A"), Run("interleaved B")]
    report.runs = runs
    first = _Envs(options)
    try:
        for run in runs[:2]:
            p = _Player(first, 0, run, task, seed, fallback)
            p.reset()
            for t in range(steps):
                p.step(t)
        env0 = first.envs.get(0)
    finally:
        first.close_all()
    pair = _Envs(options)
    try:
        a = _Player(pair, 0, runs[2], task, seed, fallback)
        b = _Player(pair, 1, runs[3], task, seed, fallback)
        a.reset()
        b.reset()
        for t in range(steps):
            a.step(t)
            b.step(t)
    finally:
        pair.close_all()

    ref = runs[0]
    if ref.error:
        report.difference = f"{ref.name}: {ref.error}"
    else:
        report.difference = next((d for d in (first_difference(ref, r) for r in runs[1:]) if d), None)
    if ref.snapshots:
        _probe_seeds(report, task, seed, options)
        _expert(report, task, seed, options, steps)
        _sizes(report, ref, attrs.system_intro, tokenizer)
        _warnings(report, ref, env0, fallback)
    return report


def _probe_seeds(report: CheckReport, task: str, seed: int, options: dict) -> None:
    """Notes on what the reset seed and the task's seed change (warnings when the task seed changes nothing)."""
    envs = _Envs(options)
    try:
        base = envs.handle("reset", 0, (task, seed))
        other = envs.handle("reset", 0, (task, seed + 1))
        if _start(base) == _start(other):
            report.notes.append(f"reset seed: {seed} and {seed + 1} start the same (the task id alone sets the game)")
        else:
            report.notes.append(
                f"reset seed: {seed} and {seed + 1} start differently (the caller's seed reaches the game; "
                "a group shares one seed, replay uses the stored one)"
            )
        nxt = _neighbour(task)
        if nxt is not None:
            try:
                check_tasks([nxt], options)
            except Exception:
                return
            if _start(envs.handle("reset", 1, (nxt, seed))) == _start(base):
                report.warnings.append(
                    f"{task} and {nxt} start identically: does the task's seed reach the game? "
                    "(fine only if the seed changes later states)"
                )
    except Exception as e:  # a probe only: the main runs already say whether reset works
        report.notes.append(f"seed probe skipped: {_err(e)}")
    finally:
        envs.close_all()


def _expert(report: CheckReport, task: str, seed: int, options: dict, steps: int) -> None:
    """Follow info["expert_plan"] from the reset: does it win within `steps`?"""
    envs = _Envs(options)
    try:
        obs = envs.handle("reset", 0, (task, seed))
        if obs.info.get("expert_plan") is None:
            return
        for t in range(steps):
            plan = obs.info.get("expert_plan") or []
            if not plan:
                report.warnings.append(f"info['expert_plan'] is empty at step {t} before a win (the expert stops)")
                return
            tr = envs.handle("step", 0, str(plan[0]))
            obs = tr.observation
            if tr.won:
                report.notes.append(f"expert plan: wins in {t + 1} steps")
                return
            if tr.terminated or tr.truncated:
                report.warnings.append(f"following info['expert_plan'] ended the game at step {t} without a win")
                return
        report.warnings.append(f"following info['expert_plan'] did not win within {steps} steps")
    except Exception as e:
        report.warnings.append(f"following info['expert_plan'] raised {_err(e)}")
    finally:
        envs.close_all()


def _sizes(report: CheckReport, ref: Run, intro: str, tokenizer) -> None:
    from agentrl.policy.prompt import default_system_prompt, system_message, user_message

    lists = [len(s.admissible) for s in ref.snapshots if s.admissible is not None]
    if lists:
        report.admissible_max = max(lists)
        report.admissible_mean = sum(lists) / len(lists)
    system = default_system_prompt("admissible", intro=intro)
    fmt = None
    if tokenizer is not None:
        from agentrl.policy.prompt import chat_format

        fmt = chat_format(tokenizer)
        report.tokens_exact = True
    for s in ref.snapshots:
        user = user_message(s.text, s.admissible)
        sysmsg = system_message(system, s.goal)
        report.prompt_chars_max = max(report.prompt_chars_max, len(user) + len(sysmsg))
        tokens = len(fmt.head(sysmsg, user)) if fmt is not None else -(-(len(user) + len(sysmsg)) // CHARS_PER_TOKEN)
        report.prompt_tokens_max = max(report.prompt_tokens_max, tokens)
    if report.prompt_tokens_max > DEFAULT_MAX_PROMPT_TOKENS:
        approx = "" if report.tokens_exact else "~"
        report.warnings.append(
            f"the largest one-turn prompt ({approx}{report.prompt_tokens_max} tokens, {report.admissible_max or 0} "
            f"valid commands) is past the default rollout.max_prompt_tokens={DEFAULT_MAX_PROMPT_TOKENS}: such an "
            "episode ends with an error; set rollout.show_admissible: K (or raise max_prompt_tokens)"
        )


def _warnings(report: CheckReport, ref: Run, env: TextEnv | None, fallback: str | None) -> None:
    reset = ref.snapshots[0]
    if reset.expert_plan is None:
        report.warnings.append("no info['expert_plan'] at reset: the expert policy has nothing to follow")
    if not ref.walkthrough:
        report.warnings.append("no info['walkthrough'] at reset: igpo (credit.truth: walkthrough) cannot use this env")
    if env is not None:
        if type(env).check_task is TextEnv.check_task:
            report.warnings.append("the adapter has no check_task: a bad task id is found only when it is reset")
    if all(not s.anchor for s in ref.snapshots):
        report.warnings.append("every anchor is empty: GiGPO would put every step in one state group")
    if reset.admissible is None:
        report.notes.append("no admissible lists: admissible mode generates free text for this env")
        if reset.expert_plan is None and fallback is None:
            report.warnings.append(
                "no admissible list, no expert plan and no fallback_action: only the reset could be checked"
            )
