"""ALFWorld generator: drawing a game (targets, receptacles, object placements) from a task id."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from agentrl.envs.alfworld.scenes import Scene, alfred_id, load_scene
from agentrl.envs.alfworld.tasks import (
    ACTION_PROPERTY,
    APPLIANCE,
    GENERATOR_VERSION,
    LAMP_HOLDERS,
    SMALL_DISTRACTORS,
    SMALL_RECEPTACLES,
    TASK_TYPES,
    TaskSpec,
    Unsolvable,
    alfworld_modules,
    stable_int,
)
from agentrl.errors import UserError


@dataclass
class Game:
    """A sampled game: what the PDDL problem and the goal sentence are written from."""

    spec: TaskSpec
    obj: str  # target object type
    recep: str | None  # target receptacle type (None for look_at_obj_in_light)
    toggle: str | None  # lamp type (look_at_obj_in_light only)
    goal: str  # the goal sentence, ALFWorld's template
    receptacles: list[tuple[str, str]]  # (alfred id, type)
    objects: list[tuple[str, str, str]] = field(default_factory=list)  # (alfred id, type, receptacle id)


def _candidates(spec: TaskSpec, scene: Scene) -> list[tuple[str, str | None, str | None]]:
    """Every (object type, receptacle type, lamp type) this task type allows in this scene."""
    constants, _ = alfworld_modules()
    if scene.kind not in constants.GOALS_VALID[spec.task_type]:
        return []
    val = constants.VAL_RECEPTACLE_OBJECTS
    rtypes = scene.receptacle_types
    out: list[tuple[str, str | None, str | None]] = []
    if spec.task_type == "look_at_obj_in_light":
        if not (rtypes & set(LAMP_HOLDERS)):
            return []
        for lamp in scene.lamp_types:
            for o in scene.object_types:
                if any(o in val[t] for t in rtypes):
                    out.append((o, None, lamp))
        return out
    appliance = APPLIANCE.get(spec.task_type)
    if appliance and appliance not in rtypes:
        return []
    prop = ACTION_PROPERTY.get(spec.task_type)
    for o in scene.object_types:
        if prop and o not in constants.VAL_ACTION_OBJECTS[prop]:
            continue
        homes = [t for t in rtypes if o in val[t]]
        for r in sorted(homes):
            if r == appliance or not any(t != r for t in homes):
                continue  # the object needs a start receptacle other than the target
            out.append((o, r, None))
    return out


def task_types_for(floorplan: str) -> list[str]:
    """The task types that can be generated in a floorplan."""
    scene = load_scene(floorplan)
    return [t for t in TASK_TYPES if _candidates(TaskSpec(t, floorplan, 0), scene)]


def sample_game(spec: TaskSpec, attempt: int = 0) -> Game:
    """Draw targets, receptacles and object placements for a task id (deterministic)."""
    constants, glib = alfworld_modules()
    scene = load_scene(spec.floorplan)
    cands = _candidates(spec, scene)
    if not cands:
        raise UserError(f"task type {spec.task_type} cannot be generated in {spec.floorplan} ({scene.kind})")
    rng = random.Random(stable_int(GENERATOR_VERSION, spec.id, attempt))
    obj, recep, toggle = rng.choice(cands)
    val = constants.VAL_RECEPTACLE_OBJECTS
    two = spec.task_type == "pick_two_obj_and_place"
    appliance = APPLIANCE.get(spec.task_type)

    # Receptacles: the whole room, or (small) the ones the task needs plus a few distractors.
    chosen: list[tuple[str, str]] = []

    def add(rid: str, rtype: str) -> None:
        if (rid, rtype) not in chosen:
            chosen.append((rid, rtype))

    if spec.small:
        if recep:
            add(rng.choice(scene.receptacles_of(recep)), recep)
        if appliance:
            add(rng.choice(scene.receptacles_of(appliance)), appliance)
    else:
        chosen = list(scene.receptacles)
    # Lamp: on a holder in the room.
    lamp_home = None
    if toggle:
        holders = [(rid, t) for rid, t in (chosen or scene.receptacles) if t in LAMP_HOLDERS]
        if spec.small or not holders:
            holders = [(rid, t) for rid, t in scene.receptacles if t in LAMP_HOLDERS]
        lamp_home = rng.choice(holders)
        add(*lamp_home)
    # Target objects: never already in a receptacle of the target type.
    n_targets = (2 if two else 1) if spec.small else rng.randint(2, 3) if two else rng.randint(1, 3)
    pool = scene.receptacles if spec.small else chosen
    start_homes = [(rid, t) for rid, t in pool if obj in val[t] and t != recep]
    if not start_homes:
        raise Unsolvable(f"no start receptacle for {obj}")
    placements: list[tuple[str, tuple[str, str]]] = []
    for _ in range(n_targets):
        home = rng.choice(start_homes)
        add(*home)
        placements.append((obj, home))
    # Distractor receptacles (small rooms).
    if spec.small:
        rest = [r for r in scene.receptacles if r not in chosen]
        rng.shuffle(rest)
        for r in rest[: max(0, SMALL_RECEPTACLES - len(chosen))]:
            add(*r)
    # Distractor objects: other types, in receptacles that can hold them.
    others = [o for o in scene.object_types if o != obj]
    if spec.small:
        rng.shuffle(others)
        counts = {o: 1 for o in others[:SMALL_DISTRACTORS]}
    else:
        counts = {o: rng.choice((0, 1, 1, 2)) for o in others}
    for o, c in counts.items():
        homes = [(rid, t) for rid, t in chosen if o in val[t]]
        for _ in range(c if homes else 0):
            placements.append((o, rng.choice(homes)))

    objects: list[tuple[str, str, str]] = []
    used: set[str] = set()
    if toggle and lamp_home:
        placements.append((toggle, lamp_home))
    for otype, (rid, _) in placements:
        base = [float(v) for v in rid.split("|")[1:4]]
        while True:
            xyz = tuple(round(b + rng.uniform(-0.4, 0.4), 2) for b in base)
            oid = alfred_id(otype, xyz)  # type: ignore[arg-type]
            if oid not in used:
                break
        used.add(oid)
        objects.append((oid, otype, rid))

    template = rng.choice(glib.gdict[spec.task_type]["templates"])
    goal = template.format(obj=obj.lower(), recep=(recep or "").lower(), toggle=(toggle or "").lower())
    return Game(spec, obj, recep, toggle, goal, sorted(chosen), sorted(objects))
