"""ALFWorld generator: a sampled game as a `.tw-pddl` file (ALFWorld's PDDL domain and grammar,
the game's PDDL problem and goal sentence)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentrl.envs.alfworld.sampling import Game
from agentrl.envs.alfworld.tasks import GENERATOR_VERSION, LAMPS, alfworld_modules


def mangle(name: str) -> str:
    """ALFWorld's PDDL-safe names (`Apple|+01.00|...` -> `Apple_bar__plus_01_dot_00_bar_...`)."""
    for a, b in (("-", "_minus_"), ("|", "_bar_"), ("+", "_plus_"), (".", "_dot_"), (",", "_comma_")):
        name = name.replace(a, b)
    return name


def problem_pddl(game: Game) -> str:
    """The PDDL problem of a game, in the shape ALFWorld's `initial_state.pddl` has.

    Each receptacle gets its own location; the agent starts at a location of its own
    ("in the middle of a room")."""
    constants, glib = alfworld_modules()
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
    constants, _ = alfworld_modules()
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
