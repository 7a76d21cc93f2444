"""ALFWorld generator: the floorplans (scenes) as the alfworld wheel's layout files describe them."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from agentrl.envs.alfworld.tasks import LAMPS, alfworld_modules, stable_int
from agentrl.errors import UserError


@dataclass(frozen=True)
class Scene:
    """A floorplan: its receptacles (ALFRED object id, type) and pickupable object types."""

    name: str
    kind: str  # Kitchen | LivingRoom | Bedroom | Bathroom
    receptacles: tuple[tuple[str, str], ...]
    object_types: tuple[str, ...]
    lamp_types: tuple[str, ...]

    def receptacles_of(self, rtype: str) -> list[str]:
        return [rid for rid, t in self.receptacles if t == rtype]

    @property
    def receptacle_types(self) -> set[str]:
        return {t for _, t in self.receptacles}


def _layout_dir() -> Path:
    constants, _ = alfworld_modules()
    return Path(constants.__file__).parent / "layouts"


def all_floorplans() -> list[str]:
    constants, _ = alfworld_modules()
    return [f"FloorPlan{n}" for n in sorted(constants.SCENE_NUMBERS)]


def split_floorplans(split: str) -> list[str]:
    """ALFRED's scene split: train = scenes 7-30 of each room kind, eval = the held-out 1-6."""
    constants, _ = alfworld_modules()
    if split == "train":
        nums = constants.TRAIN_SCENE_NUMBERS
    elif split == "eval":
        nums = constants.TEST_SCENE_NUMBERS
    else:
        raise UserError(f"unknown split '{split}' (train | eval)")
    return [f"FloorPlan{n}" for n in sorted(nums)]


def pickupable_types() -> set[str]:
    """Object types some receptacle can hold (ALFWorld's VAL_RECEPTACLE_OBJECTS), no slices."""
    constants, _ = alfworld_modules()
    return {o for objs in constants.VAL_RECEPTACLE_OBJECTS.values() for o in objs if not o.endswith("Sliced")}


def _rtype_of(rid: str) -> str:
    parts = rid.split("|")
    return parts[-1] if len(parts) > 4 else parts[0]  # "Sink|x|y|z|SinkBasin" -> SinkBasin


def _fake_coords(*key: Any) -> tuple[float, float, float]:
    rng = random.Random(stable_int(*key))
    return tuple(round(rng.uniform(-3.0, 3.0), 2) for _ in range(3))  # type: ignore[return-value]


def alfred_id(otype: str, xyz: tuple[float, float, float], suffix: str = "") -> str:
    return "|".join([otype, *(f"{v:+06.2f}" for v in xyz)]) + (f"|{suffix}" if suffix else "")


@cache
def load_scene(name: str) -> Scene:
    """Read a floorplan's layout files. Receptacle types the scene has but its layout lists
    no instance of (stoveburners, coffeemachines, toasters, garbage cans, towel holders...)
    get instances at fixed pseudo-coordinates: one each, four stoveburners."""
    constants, _ = alfworld_modules()
    if not re.fullmatch(r"FloorPlan\d+", name) or int(name[9:]) not in constants.SCENE_NUMBERS:
        raise UserError(f"unknown floorplan '{name}' (FloorPlan1-30, 201-230, 301-330, 401-430)")
    num = int(name[9:])
    kind = next(k for k, r in constants.SCENE_TYPE.items() if num in r)
    layout = _layout_dir()
    openable = json.loads((layout / f"{name}-openable.json").read_text())
    types_present = set(json.loads((layout / f"{name}-objects.json").read_text()))
    static = set(constants.RECEPTACLES) - set(constants.MOVABLE_RECEPTACLES)
    recs = [(rid, _rtype_of(rid)) for rid in sorted(openable)]
    have = {t for _, t in recs}
    for rtype in sorted((types_present & static) - have):
        for k in range(4 if rtype == "StoveBurner" else 1):
            suffix = "SinkBasin" if rtype == "SinkBasin" else ("BathtubBasin" if rtype == "BathtubBasin" else "")
            base = {"SinkBasin": "Sink", "BathtubBasin": "Bathtub"}.get(rtype, rtype)
            recs.append((alfred_id(base, _fake_coords(name, rtype, k), suffix), rtype))
    objs = tuple(sorted(types_present & pickupable_types()))
    lamps = tuple(t for t in LAMPS if t in types_present)
    return Scene(name, kind, tuple(recs), objs, lamps)
