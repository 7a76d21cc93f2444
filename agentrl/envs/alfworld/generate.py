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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from agentrl.errors import UserError, WorkError

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


# --------------------------------------------------------------------------- paths


def cache_root() -> Path:
    """`$AGENTRL_CACHE` if set, else `~/.cache/agentrl`."""
    return Path(os.environ.get("AGENTRL_CACHE") or Path.home() / ".cache" / "agentrl")


def game_path(task_id: str) -> Path:
    """Where the game of a task id is cached: `<cache>/games/<task id>.tw-pddl`."""
    parse_task_id(task_id)
    return cache_root() / "games" / f"{task_id}.tw-pddl"


def _alfworld():
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
        constants, _ = _alfworld()
    except UserError:
        return spec
    if int(spec.floorplan[len("FloorPlan"):]) not in constants.SCENE_NUMBERS:
        raise UserError(f"bad alfworld task id '{task_id}': unknown floorplan {spec.floorplan} "
                        "(FloorPlan1-30, 201-230, 301-330, 401-430)")
    return spec


# --------------------------------------------------------------------------- scenes


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
    constants, _ = _alfworld()
    return Path(constants.__file__).parent / "layouts"


def all_floorplans() -> list[str]:
    constants, _ = _alfworld()
    return [f"FloorPlan{n}" for n in sorted(constants.SCENE_NUMBERS)]


def split_floorplans(split: str) -> list[str]:
    """ALFRED's scene split: train = scenes 7-30 of each room kind, eval = the held-out 1-6."""
    constants, _ = _alfworld()
    if split == "train":
        nums = constants.TRAIN_SCENE_NUMBERS
    elif split == "eval":
        nums = constants.TEST_SCENE_NUMBERS
    else:
        raise UserError(f"unknown split '{split}' (train | eval)")
    return [f"FloorPlan{n}" for n in sorted(nums)]


def pickupable_types() -> set[str]:
    """Object types some receptacle can hold (ALFWorld's VAL_RECEPTACLE_OBJECTS), no slices."""
    constants, _ = _alfworld()
    return {o for objs in constants.VAL_RECEPTACLE_OBJECTS.values() for o in objs if not o.endswith("Sliced")}


def _rtype_of(rid: str) -> str:
    parts = rid.split("|")
    return parts[-1] if len(parts) > 4 else parts[0]  # "Sink|x|y|z|SinkBasin" -> SinkBasin


def _fake_coords(*key: Any) -> tuple[float, float, float]:
    rng = random.Random(_stable_int(*key))
    return tuple(round(rng.uniform(-3.0, 3.0), 2) for _ in range(3))  # type: ignore[return-value]


def _alfred_id(otype: str, xyz: tuple[float, float, float], suffix: str = "") -> str:
    return "|".join([otype, *(f"{v:+06.2f}" for v in xyz)]) + (f"|{suffix}" if suffix else "")


@lru_cache(maxsize=None)
def load_scene(name: str) -> Scene:
    """Read a floorplan's layout files. Receptacle types the scene has but its layout lists
    no instance of (stoveburners, coffeemachines, toasters, garbage cans, towel holders...)
    get instances at fixed pseudo-coordinates: one each, four stoveburners."""
    constants, _ = _alfworld()
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
            recs.append((_alfred_id(base, _fake_coords(name, rtype, k), suffix), rtype))
    objs = tuple(sorted(types_present & pickupable_types()))
    lamps = tuple(t for t in LAMPS if t in types_present)
    return Scene(name, kind, tuple(recs), objs, lamps)


# --------------------------------------------------------------------------- sampling


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


def _stable_int(*key: Any) -> int:
    return int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little")


def _candidates(spec: TaskSpec, scene: Scene) -> list[tuple[str, str | None, str | None]]:
    """Every (object type, receptacle type, lamp type) this task type allows in this scene."""
    constants, _ = _alfworld()
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
    constants, glib = _alfworld()
    scene = load_scene(spec.floorplan)
    cands = _candidates(spec, scene)
    if not cands:
        raise UserError(f"task type {spec.task_type} cannot be generated in {spec.floorplan} ({scene.kind})")
    rng = random.Random(_stable_int(GENERATOR_VERSION, spec.id, attempt))
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
            oid = _alfred_id(otype, xyz)  # type: ignore[arg-type]
            if oid not in used:
                break
        used.add(oid)
        objects.append((oid, otype, rid))

    template = rng.choice(glib.gdict[spec.task_type]["templates"])
    goal = template.format(obj=obj.lower(), recep=(recep or "").lower(), toggle=(toggle or "").lower())
    return Game(spec, obj, recep, toggle, goal, sorted(chosen), sorted(objects))


# --------------------------------------------------------------------------- PDDL


def mangle(name: str) -> str:
    """ALFWorld's PDDL-safe names (`Apple|+01.00|...` -> `Apple_bar__plus_01_dot_00_bar_...`)."""
    for a, b in (("-", "_minus_"), ("|", "_bar_"), ("+", "_plus_"), (".", "_dot_"), (",", "_comma_")):
        name = name.replace(a, b)
    return name


def problem_pddl(game: Game) -> str:
    """The PDDL problem of a game, in the shape ALFWorld's `initial_state.pddl` has.

    Each receptacle gets its own location; the agent starts at a location of its own
    ("in the middle of a room")."""
    constants, glib = _alfworld()
    val = constants.VAL_RECEPTACLE_OBJECTS
    act = constants.VAL_ACTION_OBJECTS
    recs = [(mangle(rid), t) for rid, t in game.receptacles]
    objs = [(mangle(oid), t, mangle(rid)) for oid, t, rid in game.objects]
    loc = {r: f"loc_bar_{i}" for i, (r, _) in enumerate(recs)}
    # Types the domain and the goal name must be declared even when absent from the room.
    otypes = sorted({t for _, t, _ in objs} | {game.obj, game.toggle or "Knife", "Knife", "ButterKnife"})
    rtypes = sorted({t for _, t in recs} | {game.recep or "Fridge", "SinkBasin", "Microwave", "Fridge"})
    decl = (
        ["agent1 - agent", "loc_bar_start - location"]
        + [f"{loc[r]} - location" for r, _ in recs]
        + [f"{t}Type - otype" for t in otypes]
        + [f"{t}Type - rtype" for t in rtypes]
        + [f"{r} - receptacle" for r, _ in recs]
        + [f"{o} - object" for o, _, _ in objs]
    )
    init = ["(atLocation agent1 loc_bar_start)"]
    for r, t in recs:
        init.append(f"(receptacleType {r} {t}Type)")
        init.append(f"(receptacleAtLocation {r} {loc[r]})")
        if t in constants.OPENABLE_CLASS_SET:
            init.append(f"(openable {r})")
    present_o = {t for _, t, _ in objs}
    for rt in sorted({t for _, t in recs}):
        init += [f"(canContain {rt}Type {ot}Type)" for ot in sorted(present_o & val.get(rt, set()))]
    for o, t, r in objs:
        init += [f"(objectType {o} {t}Type)", f"(inReceptacle {o} {r})", f"(objectAtLocation {o} {loc[r]})"]
        if t in LAMPS:
            init.append(f"(toggleable {o})")
            continue
        init.append(f"(pickupable {o})")
        if t in constants.MOVABLE_RECEPTACLES_SET:
            init.append(f"(isReceptacleObject {o})")
        for prop in ("Cleanable", "Heatable", "Coolable", "Sliceable"):
            if t in act[prop]:
                init.append(f"({prop.lower()} {o})")
    goal = glib.gdict[game.spec.task_type]["pddl"]
    goal = goal.format(obj=game.obj, recep=game.recep or "", toggle=game.toggle or "")
    goal = goal.replace("#", "-")  # the goal library writes types as `?x # type`; its text closes `(define`
    sep = "\n        "
    return (
        f"(define (problem {mangle(game.spec.id.replace('/', '_'))})\n    (:domain alfred)\n"
        f"    (:objects{sep}{sep.join(decl)}\n    )\n"
        f"    (:init{sep}{sep.join(init)}\n    )\n{goal}"
    )


def game_data(game: Game) -> dict[str, Any]:
    """The `.tw-pddl` JSON (without the walkthrough): domain, grammar with the goal, problem."""
    constants, _ = _alfworld()
    data_dir = Path(constants.__file__).parent.parent / "data"
    grammar = (data_dir / "alfred.twl2").read_text()
    return {
        "pddl_domain": (data_dir / "alfred.pddl").read_text(),
        "grammar": grammar.replace("UNKNOWN GOAL", game.goal),
        "pddl_problem": problem_pddl(game),
        "solvable": False,
        "agentrl": {
            "task_id": game.spec.id,
            "generator_version": GENERATOR_VERSION,
            "task_type": game.spec.task_type,
            "floorplan": game.spec.floorplan,
            "small": game.spec.small,
            "object_target": game.obj,
            "parent_target": game.recep,
            "toggle_target": game.toggle,
            "goal": game.goal,
            "receptacles": len(game.receptacles),
            "objects": len(game.objects),
        },
    }


# --------------------------------------------------------------------------- playing


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
    if _is_cached(task_id):
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
    constants, _ = _alfworld()
    keep_objs = [o for o in game.objects if o[1] in (game.obj, game.toggle)]
    homes = {rid for _, _, rid in keep_objs}
    appliance = APPLIANCE.get(game.spec.task_type)
    recs = [(rid, t) for rid, t in game.receptacles if rid in homes or t in (game.recep, appliance)]
    return dataclasses.replace(game, receptacles=recs, objects=keep_objs)


def display_names(game: Game) -> dict[str, str]:
    """PDDL id (lower-case, as the planner prints it) -> the name players see ("cabinet 3"),
    numbered by ALFWorld's own demangler over the full game's receptacles and objects."""
    _alfworld()
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
    rng = random.Random(_stable_int("plan", split, seed))
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

    build_missing(task_ids, _is_cached, _build_one, workers, progress)
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


def _is_cached(task_id: str) -> bool:
    path = game_path(task_id)
    if not path.exists():
        return False
    try:
        meta = json.loads(path.read_text()).get("agentrl", {})
    except (OSError, ValueError):
        return False
    return meta.get("generator_version") == GENERATOR_VERSION and meta.get("task_id") == task_id
