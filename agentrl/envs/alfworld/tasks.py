"""ALFWorld generator: the task ids, the game cache, and the constants of the generator.

A task id names one game: `alfworld/<task type>/<FloorPlanN>/seed-<k>` (full-size room) or
`.../small-seed-<k>` (a few receptacles and objects; fast on CPU). See `generate` for the whole.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentrl.errors import UserError

TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
GENERATOR_VERSION = 1  # bump when the sampling changes: cached games of another version are rebuilt
MAX_ATTEMPTS = 25  # redraws before a task id is declared impossible
MAX_PLAN_STEPS = 100  # ALFWorld's PLANNER_MAX_STEPS
SMALL_RECEPTACLES = 6  # receptacles in a small room (the required ones may add a few)
SMALL_DISTRACTORS = 3  # non-target objects in a small room
LAMPS = ("DeskLamp", "FloorLamp")
# Receptacles a lamp can stand on/in (the domain's ToggleObject needs the lamp inReceptacle).
LAMP_HOLDERS = ("SideTable", "Desk", "Dresser", "Shelf", "TVStand", "CoffeeTable", "DiningTable", "Cart", "Ottoman")
# The appliance a task type needs, and which may therefore not be its target receptacle.
APPLIANCE = {
    "pick_clean_then_place_in_recep": "SinkBasin",
    "pick_heat_then_place_in_recep": "Microwave",
    "pick_cool_then_place_in_recep": "Fridge",
}
ACTION_PROPERTY = {  # task type -> the object property it needs (ALFWorld's VAL_ACTION_OBJECTS key)
    "pick_clean_then_place_in_recep": "Cleanable",
    "pick_heat_then_place_in_recep": "Heatable",
    "pick_cool_then_place_in_recep": "Coolable",
}
_ID = re.compile(r"^alfworld/([a-z_]+)/(FloorPlan\d+)/(small-)?seed-(\d+)$")


class Unsolvable(Exception):
    """A sampled game the planner could not win (the sample is redrawn)."""


def stable_int(*key: Any) -> int:
    """A 64-bit integer of `key` that is the same in every process (seeds the generator's draws)."""
    return int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little")


# --------------------------------------------------------------------------- paths


def cache_root() -> Path:
    """`$AGENTRL_CACHE` if set, else `~/.cache/agentrl`."""
    return Path(os.environ.get("AGENTRL_CACHE") or Path.home() / ".cache" / "agentrl")


def game_path(task_id: str) -> Path:
    """Where the game of a task id is cached: `<cache>/games/<task id>.tw-pddl`."""
    parse_task_id(task_id)
    return cache_root() / "games" / f"{task_id}.tw-pddl"


def alfworld_modules():
    """Import the alfworld data modules without letting them create `~/.cache/alfworld`."""
    os.environ.setdefault("ALFWORLD_DATA", str(cache_root() / "alfworld-data"))
    try:
        import alfworld.gen.constants as constants
        import alfworld.gen.goal_library as goal_library
    except ImportError as e:
        raise UserError("the alfworld env needs the alfworld package: pip install 'agentrl[alfworld]'") from e
    return constants, goal_library


# --------------------------------------------------------------------------- task ids


@dataclass(frozen=True)
class TaskSpec:
    """A parsed task id."""

    task_type: str
    floorplan: str
    seed: int
    small: bool = False

    @property
    def id(self) -> str:
        return make_task_id(self.task_type, self.floorplan, self.seed, self.small)


def make_task_id(task_type: str, floorplan: str, seed: int, small: bool = False) -> str:
    return f"alfworld/{task_type}/{floorplan}/{'small-' if small else ''}seed-{seed}"


def parse_task_id(task_id: str) -> TaskSpec:
    m = _ID.match(task_id)
    if not m or m.group(1) not in TASK_TYPES:
        raise UserError(
            f"bad alfworld task id '{task_id}' (expected alfworld/<task type>/FloorPlanN/seed-K "
            f"or .../small-seed-K; task types: {', '.join(TASK_TYPES)})"
        )
    return TaskSpec(m.group(1), m.group(2), int(m.group(4)), bool(m.group(3)))


def check_task_id(task_id: str) -> TaskSpec:
    """`parse_task_id`, and the floorplan must be one of ALFRED's scenes (when the alfworld package
    is installed to say which; without it, playing fails with its own message). Builds nothing."""
    spec = parse_task_id(task_id)
    try:
        constants, _ = alfworld_modules()
    except UserError:
        return spec
    if int(spec.floorplan[len("FloorPlan") :]) not in constants.SCENE_NUMBERS:
        raise UserError(
            f"bad alfworld task id '{task_id}': unknown floorplan {spec.floorplan} "
            "(FloorPlan1-30, 201-230, 301-330, 401-430)"
        )
    return spec
