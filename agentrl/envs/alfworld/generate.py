"""Offline generator for ALFWorld text games (the six ALFWorld task types).

ALFWorld's own game files are made from ALFRED trajectories that must be downloaded.
This module builds equivalent games locally from what the `alfworld` wheel ships:
the PDDL domain (`alfred.pddl`), the text grammar (`alfred.twl2`), the goal library
(goal PDDL and goal sentences), the constants (which receptacle can hold which object,
which objects can be cleaned/heated/cooled, the train/test floorplan split) and the
120 FloorPlan layouts (the receptacles and object types of each scene).

What is generated: the receptacles come from the floorplan (its layout file, plus
the receptacle types its object list names that have no interaction pose there, such
as stoveburners and coffeemachines); object instances and their placements are
sampled from the task seed and respect the domain's `canContain` relation. Each game
is played to a win with the Fast Downward plan at build time; unsolvable samples are
redrawn. The plan is stored in the game file (`walkthrough`) so nobody plans per step.

A task id names one game: `alfworld/<task type>/<FloorPlanN>/seed-<k>` (full-size
room) or `.../small-seed-<k>` (a few receptacles and objects; fast on CPU).

The parts, in the order a game is made: `tasks` (task ids, the cache, the constants),
`scenes` (floorplans), `sampling` (a game drawn from a task id), `pddl` (the game file),
`games` (plan, verify, cache). This module plans and builds suites of games, and re-exports
the parts' public names (`agentrl.envs.alfworld.generate` is the entry point).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from agentrl.envs.alfworld.games import (
    display_names,
    ensure_game,
    is_cached,
    load_game,
    plan_game,
    start_env,
    verify,
)
from agentrl.envs.alfworld.pddl import game_data, mangle, problem_pddl
from agentrl.envs.alfworld.sampling import Game, sample_game, task_types_for
from agentrl.envs.alfworld.scenes import Scene, all_floorplans, load_scene, pickupable_types, split_floorplans
from agentrl.envs.alfworld.tasks import (
    ACTION_PROPERTY,
    APPLIANCE,
    GENERATOR_VERSION,
    LAMP_HOLDERS,
    LAMPS,
    MAX_ATTEMPTS,
    MAX_PLAN_STEPS,
    SMALL_DISTRACTORS,
    SMALL_RECEPTACLES,
    TASK_TYPES,
    TaskSpec,
    Unsolvable,
    alfworld_modules,
    cache_root,
    check_task_id,
    game_path,
    make_task_id,
    parse_task_id,
    stable_int,
)
from agentrl.errors import UserError

__all__ = [
    "ACTION_PROPERTY",
    "APPLIANCE",
    "GENERATOR_VERSION",
    "LAMPS",
    "LAMP_HOLDERS",
    "MAX_ATTEMPTS",
    "MAX_PLAN_STEPS",
    "SMALL_DISTRACTORS",
    "SMALL_RECEPTACLES",
    "TASK_TYPES",
    "Game",
    "Scene",
    "TaskSpec",
    "Unsolvable",
    "all_floorplans",
    "alfworld_modules",
    "build_alfworld",
    "build_tasks",
    "cache_root",
    "check_task_id",
    "default_n",
    "display_names",
    "ensure_game",
    "game_data",
    "game_path",
    "is_cached",
    "load_game",
    "load_scene",
    "make_task_id",
    "mangle",
    "parse_task_id",
    "pickupable_types",
    "plan_game",
    "plan_tasks",
    "problem_pddl",
    "sample_game",
    "split_floorplans",
    "stable_int",
    "start_env",
    "task_types_for",
    "verify",
]


# --------------------------------------------------------------------------- suites


def plan_tasks(
    split: str,
    n: int,
    seed: int = 0,
    task_types: list[str] | None = None,
    floorplans: list[str] | None = None,
    small: bool = False,
) -> list[str]:
    """The task ids `build_alfworld` makes, without building: task types in turn, each on a
    floorplan of the split drawn from `seed` among those where the type can be generated."""
    types = list(task_types or TASK_TYPES)
    bad = [t for t in types if t not in TASK_TYPES]
    if bad:
        raise UserError(f"unknown ALFWorld task type(s) {', '.join(bad)} (known: {', '.join(TASK_TYPES)})")
    if n < 1:
        raise UserError("--n must be at least 1")
    fps = [_norm_floorplan(f) for f in floorplans] if floorplans else split_floorplans(split)
    eligible = {t: [f for f in fps if t in task_types_for(f)] for t in types}
    empty = [t for t, f in eligible.items() if not f]
    if empty:
        raise UserError(f"no floorplan among those chosen can host {', '.join(empty)}")
    rng = random.Random(stable_int("plan", split, seed))
    ids = []
    for i in range(n):
        t = types[i % len(types)]
        ids.append(make_task_id(t, rng.choice(eligible[t]), seed * 100_000 + i, small))
    return ids


def _norm_floorplan(name: str) -> str:
    name = str(name).strip()
    fp = f"FloorPlan{name}" if name.isdigit() else name
    load_scene(fp)  # validates
    return fp


def _build_one(task_id: str) -> str:
    ensure_game(task_id)
    return task_id


def build_tasks(task_ids: list[str], workers: int = 1, progress: Callable[[int], None] | None = None) -> list[Path]:
    """Generate the missing games of `task_ids` in `workers` processes; their paths, in order.

    `progress(k)` gets the number of task ids that just became ready (cached ones at once);
    the calls add up to len(task_ids). Workers are spawned, not forked (no inherited
    threads or locks of the caller, e.g. torch's)."""
    for t in task_ids:  # validate everything before spending time
        parse_task_id(t)
    from agentrl.envs.build import build_missing

    build_missing(task_ids, is_cached, _build_one, workers, progress)
    return [game_path(t) for t in task_ids]


def default_n(split: str, small: bool) -> int:
    """How many games `build_alfworld` makes when not told: the bundled suites' sizes."""
    return {("train", True): 120, ("eval", True): 60, ("train", False): 240, ("eval", False): 60}[(split, small)]


def build_alfworld(
    split: str = "train",
    n: int | None = None,
    seed: int = 0,
    task_types: list[str] | None = None,
    floorplans: list[str] | None = None,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    small: bool = False,
) -> list[str]:
    """Generate (or find cached) `n` games and return their task ids (see `plan_tasks`).

    `split` picks the floorplans (train: ALFRED's training scenes; eval: the held-out
    ones) unless `floorplans` are given. With the defaults (n=None, seed 0, all types and
    floorplans) this builds exactly the split of the bundled suite `alfworld`, or
    `alfworld-small` with `small=True`. Built in `workers` processes; `progress(k)` is
    called with the number of games that just became ready."""
    if split not in ("train", "eval"):
        raise UserError(f"unknown split '{split}' (train | eval)")
    ids = plan_tasks(split, default_n(split, small) if n is None else n, seed, task_types, floorplans, small)
    build_tasks(ids, workers=workers, progress=progress)
    return ids
