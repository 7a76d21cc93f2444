"""ALFWorld generator: building a game file (sample, plan on a lean copy, verify the plan in the
full game) and the cache of built games."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from agentrl.envs.alfworld.pddl import game_data, mangle
from agentrl.envs.alfworld.sampling import Game, sample_game
from agentrl.envs.alfworld.tasks import (
    APPLIANCE,
    GENERATOR_VERSION,
    MAX_ATTEMPTS,
    MAX_PLAN_STEPS,
    Unsolvable,
    alfworld_modules,
    game_path,
    parse_task_id,
)
from agentrl.errors import WorkError


def start_env(path: str | Path, demangle: bool = True):
    """A (fast) textworld env playing the game file at `path`; see `play.start_game`.
    The demangled env plays games that carry their plan; the other one plans."""
    from agentrl.envs.alfworld.play import start_game

    return start_game(path, demangle=demangle, plannable=not demangle)


def _atomic_write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".tw-pddl")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path, env):
    if env is None:
        return start_env(path)
    env.load(str(path))
    return env


def plan_game(path: Path, env=None) -> list[str]:
    """The Fast Downward plan of the game at `path` (its stored walkthrough if it has one)."""
    state = _load(path, env).reset()
    if state["won"]:
        raise Unsolvable("goal already true at the start")
    plan = list(state.get("extra.walkthrough") or [])
    if not plan or len(plan) > MAX_PLAN_STEPS:
        raise Unsolvable(f"planner returned {len(plan)} steps")
    return plan


def verify(path: Path, plan: list[str], env=None) -> None:
    """Play `plan` in the game at `path`; Unsolvable unless every step is accepted and it wins."""
    env = _load(path, env)
    state = env.reset()
    if state["won"]:
        raise Unsolvable("goal already true at the start")
    for cmd in plan:
        state, _, _ = env.step(cmd)
        if state["feedback"].strip() == "Nothing happens.":
            raise Unsolvable(f"plan step '{cmd}' was refused")
    if not state["won"]:
        raise Unsolvable("plan did not reach the goal")


def ensure_game(task_id: str) -> Path:
    """The cached game file of a task id, generated (and verified) first if missing."""
    path = game_path(task_id)
    if is_cached(task_id):
        return path
    spec = parse_task_id(task_id)
    last = ""
    for attempt in range(MAX_ATTEMPTS):
        try:
            game = sample_game(spec, attempt)
        except Unsolvable as e:
            last = str(e)
            continue
        data = game_data(game)
        data["agentrl"]["attempt"] = attempt
        try:
            plan = _plan_and_verify(game, data, path)
        except Unsolvable as e:
            last = str(e)
            continue
        data["walkthrough"] = plan
        data["solvable"] = True
        _atomic_write(path, data)
        return path
    raise WorkError(f"could not generate a solvable game for {task_id} in {MAX_ATTEMPTS} draws ({last})")


def _plan_and_verify(game: Game, data: dict[str, Any], path: Path) -> list[str]:
    """Plan on a lean copy of the game, then play that plan to a win in the full game.

    The planner's search grows fast with the number of objects and receptacles (a
    pick-two task in a full kitchen took minutes), so it plans a problem holding only
    the target objects, the lamp, and the receptacles an optimal plan can visit (the
    target objects' start receptacles, every receptacle of the target type, the
    appliance); all moves cost the same, so an optimal plan of the lean problem is an
    optimal plan of the full one. Its commands name entities by id (no demangler) and
    are renamed to the full game's display names before they are verified there."""
    lean = _lean(game)
    draft = path.with_name(f".draft-{os.getpid()}-{path.name}")
    try:
        _atomic_write(draft, game_data(lean))
        raw_plan = plan_game(draft, _worker_env("plan", draft))
        names = display_names(game)
        plan = [" ".join(names.get(tok, tok) for tok in cmd.split()) for cmd in raw_plan]
        _atomic_write(draft, {**data, "walkthrough": plan})
        verify(draft, plan, _worker_env("play", draft))
    finally:
        draft.unlink(missing_ok=True)
    return plan


def _lean(game: Game) -> Game:
    constants, _ = alfworld_modules()
    keep_objs = [o for o in game.objects if o[1] in (game.obj, game.toggle)]
    homes = {rid for _, _, rid in keep_objs}
    appliance = APPLIANCE.get(game.spec.task_type)
    recs = [(rid, t) for rid, t in game.receptacles if rid in homes or t in (game.recep, appliance)]
    return dataclasses.replace(game, receptacles=recs, objects=keep_objs)


def display_names(game: Game) -> dict[str, str]:
    """PDDL id (lower-case, as the planner prints it) -> the name players see ("cabinet 3"),
    numbered by ALFWorld's own demangler over the full game's receptacles and objects."""
    alfworld_modules()
    from types import SimpleNamespace

    from alfworld.agents.utils.misc import Demangler

    ids = [mangle(r).lower() for r, _ in game.receptacles] + [mangle(o).lower() for o, _, _ in game.objects]
    dm = Demangler(game_infos={i: SimpleNamespace(id=i) for i in ids})
    return {i: dm.demangle_alfred_name(i).strip() for i in ids}


_ENVS: dict[str, Any] = {}  # per process: a planning env (ids) and a playing env (names), reused


def _worker_env(kind: str, path: Path):
    if kind not in _ENVS:
        _ENVS[kind] = start_env(path, demangle=(kind == "play"))
    return _ENVS[kind]


def load_game(task_id: str) -> dict[str, Any]:
    """The game JSON of a task id (built if missing)."""
    return json.loads(ensure_game(task_id).read_text())


def is_cached(task_id: str) -> bool:
    path = game_path(task_id)
    if not path.exists():
        return False
    try:
        meta = json.loads(path.read_text()).get("agentrl", {})
    except (OSError, ValueError):
        return False
    return meta.get("generator_version") == GENERATOR_VERSION and meta.get("task_id") == task_id
