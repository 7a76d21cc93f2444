"""ALFWorld generator and adapter: one small game of each of the six task types is built,
verified, and played to a win with its stored plan through the adapter."""

from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("textworld")
pytest.importorskip("alfworld")

from agentrl.envs.alfworld import (  # noqa: E402
    TASK_TYPES,
    AlfWorldEnv,
    build_alfworld,
    default_n,
    ensure_game,
    game_path,
    make_task_id,
    parse_task_id,
    plan_tasks,
    split_floorplans,
)
from agentrl.envs.alfworld import generate as gen  # noqa: E402
from agentrl.envs.alfworld.adapter import normalize_command, split_intro  # noqa: E402
from agentrl.errors import UserError  # noqa: E402

# One floorplan per task type (a kitchen for the kitchen-only types, a living room with a lamp).
FLOORPLAN = {
    "pick_and_place_simple": "FloorPlan7",
    "look_at_obj_in_light": "FloorPlan210",
    "pick_clean_then_place_in_recep": "FloorPlan410",
    "pick_heat_then_place_in_recep": "FloorPlan8",
    "pick_cool_then_place_in_recep": "FloorPlan9",
    "pick_two_obj_and_place": "FloorPlan310",
}
# What the plan of each type must do, besides going and taking (the type's defining verb).
VERB = {
    "pick_and_place_simple": "move ",
    "look_at_obj_in_light": "use ",
    "pick_clean_then_place_in_recep": "clean ",
    "pick_heat_then_place_in_recep": "heat ",
    "pick_cool_then_place_in_recep": "cool ",
    "pick_two_obj_and_place": "move ",
}


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("agentrl-cache")
    mp.setenv("AGENTRL_CACHE", str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def games(cache):
    """The six small games, built once (about a second each)."""
    ids = {t: make_task_id(t, FLOORPLAN[t], 1, small=True) for t in TASK_TYPES}
    for tid in ids.values():
        ensure_game(tid)
    return ids


@pytest.fixture(scope="module")
def env():
    e = AlfWorldEnv()
    yield e
    e.close()


def test_task_ids_round_trip_and_refuse_bad_ones():
    spec = parse_task_id("alfworld/pick_two_obj_and_place/FloorPlan12/small-seed-40")
    assert (spec.task_type, spec.floorplan, spec.seed, spec.small) == (
        "pick_two_obj_and_place",
        "FloorPlan12",
        40,
        True,
    )
    assert spec.id == "alfworld/pick_two_obj_and_place/FloorPlan12/small-seed-40"
    assert parse_task_id("alfworld/look_at_obj_in_light/FloorPlan201/seed-3").small is False
    for bad in (
        "alfworld/fly/FloorPlan1/seed-0",
        "alfworld/pick_and_place_simple/Kitchen1/seed-0",
        "textworld/x/seed-1",
        "alfworld/pick_and_place_simple/FloorPlan1/seed-x",
    ):
        with pytest.raises(UserError):
            parse_task_id(bad)
    with pytest.raises(UserError):  # heating needs a microwave: kitchens only
        gen.sample_game(parse_task_id("alfworld/pick_heat_then_place_in_recep/FloorPlan301/seed-0"))


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_small_game_of_each_type_is_won_by_its_plan(games, env, task_type):
    tid = games[task_type]
    data = json.loads(game_path(tid).read_text())
    meta = data["agentrl"]
    assert data["solvable"] is True and meta["task_id"] == tid and meta["small"] is True
    assert meta["receptacles"] <= gen.SMALL_RECEPTACLES + 3
    obs = env.reset(tid)
    plan = obs.info["walkthrough"]
    assert plan and plan == obs.info["expert_plan"] == data["walkthrough"]
    assert any(step.startswith(VERB[task_type]) for step in plan)
    # The goal sentence is one of ALFWorld's templates for this type, filled with the targets.
    _, glib = gen.alfworld_modules()
    fills = dict(
        obj=meta["object_target"].lower(),
        recep=(meta["parent_target"] or "").lower(),
        toggle=(meta["toggle_target"] or "").lower(),
    )
    assert obs.goal.rstrip(".") in {t.format(**fills) for t in glib.gdict[task_type]["templates"]}
    assert obs.text.startswith("You are in the middle of a room.") and "Your task is to" not in obs.text
    assert obs.anchor.startswith("-= Welcome to TextWorld, ALFRED! =-")
    assert obs.admissible == sorted(obs.admissible) and plan[0] in obs.admissible
    rewards = []
    for k in range(len(plan)):
        action = obs.info["expert_plan"][0]
        tr = env.step(action)
        obs = tr.observation
        rewards.append(tr.reward)
        assert tr.valid and obs.anchor == obs.text
        assert obs.info["expert_plan"] == plan[k + 1 :]
        assert tr.terminated == tr.won == (k == len(plan) - 1)
    assert rewards == [0.0] * (len(plan) - 1) + [1.0]


def test_placements_respect_can_contain_and_leave_the_goal_open():
    constants, _ = gen.alfworld_modules()
    val = constants.VAL_RECEPTACLE_OBJECTS
    rng = random.Random(0)
    for task_type in TASK_TYPES:
        fps = [f for f in split_floorplans("train") if task_type in gen.task_types_for(f)]
        for fp in rng.sample(fps, 3):
            for small in (False, True):
                game = gen.sample_game(gen.TaskSpec(task_type, fp, rng.randrange(1000), small))
                rtype = dict(game.receptacles)
                assert len(rtype) == len(game.receptacles)  # no receptacle twice
                targets = [(o, r) for o, t, r in game.objects if t == game.obj]
                assert len(targets) >= (2 if task_type == "pick_two_obj_and_place" else 1)
                for oid, otype, rid in game.objects:
                    assert oid.startswith(otype + "|") and rid in rtype
                    if otype in gen.LAMPS:
                        assert rtype[rid] in gen.LAMP_HOLDERS
                    else:
                        assert otype in val[rtype[rid]], (otype, rtype[rid])
                for _, rid in targets:
                    assert rtype[rid] != game.recep  # not already done
                if task_type in gen.APPLIANCE:
                    assert gen.APPLIANCE[task_type] in rtype.values() and game.recep != gen.APPLIANCE[task_type]
                if task_type == "look_at_obj_in_light":
                    assert game.toggle in gen.LAMPS and any(t == game.toggle for _, t, _ in game.objects)
                if small:
                    assert len(game.objects) <= len(targets) + gen.SMALL_DISTRACTORS + 1
                else:
                    assert len(game.receptacles) == len(gen.load_scene(fp).receptacles)


def test_same_task_id_same_game_file(games, cache):
    tid = games["pick_clean_then_place_in_recep"]
    first = game_path(tid).read_bytes()
    game_path(tid).unlink()
    assert ensure_game(tid).read_bytes() == first


def test_sinks_and_problem_use_alfworld_names(games):
    data = json.loads(game_path(games["pick_clean_then_place_in_recep"]).read_text())
    assert "_bar_SinkBasin" in data["pddl_problem"] and "(:goal" in data["pddl_problem"]
    assert "UNKNOWN GOAL" not in data["grammar"]
    assert any(step.startswith("clean ") and step.endswith(" with sinkbasin 1") for step in data["walkthrough"])


def test_invalid_and_refused_actions_are_steps_that_change_nothing(games):
    env = AlfWorldEnv(invalid_reward=-0.1)
    tid = games["pick_two_obj_and_place"]
    obs0 = env.reset(tid)
    for action in ("jump around", "restart", "go to the moon", "take nothing from nowhere", "a\\b"):
        tr = env.step(action)
        assert (tr.valid, tr.reward, tr.terminated) == (False, -0.1, False)
        assert tr.observation.text == "Nothing happens."
        assert tr.observation.admissible == obs0.admissible
        assert tr.observation.info["expert_plan"] == obs0.info["walkthrough"]
    # Case and a trailing period do not matter; "put X in/on Y" is the wheel's "move X to Y".
    first = obs0.info["walkthrough"][0]
    tr = env.step(first.upper() + ".")
    assert tr.valid and tr.observation.info["expert_plan"] == obs0.info["walkthrough"][1:]
    move = "move cup 1 to diningtable 1"
    assert normalize_command("put cup 1 in/on diningtable 1", [move]) == move
    assert normalize_command("Put cup 1 on diningtable 1.", [move]) == move
    assert split_intro("-= Welcome to TextWorld, ALFRED! =-\n\nRoom.\n\nYour task is to: do x.") == ("Room.", "do x.")
    env.close()


def test_expert_plan_survives_detours_and_goes_stale_on_real_deviation(games, env):
    tid = games["pick_two_obj_and_place"]
    obs = env.reset(tid)
    plan = obs.info["walkthrough"]
    tr = env.step(plan[0])  # go to the first target's receptacle
    here = plan[0][len("go to ") :]
    elsewhere = next(a for a in tr.observation.admissible if a.startswith("go to ") and a != plan[0])
    assert env.step("look").observation.info["expert_plan"] == plan[1:]
    tr = env.step(elsewhere)  # a detour: the plan first goes back
    assert tr.observation.info["expert_plan"] == [f"go to {here}"] + plan[1:]
    obs = tr.observation
    while not tr.terminated:  # and following it still wins
        tr = env.step(obs.info["expert_plan"][0])
        obs = tr.observation
    assert tr.won and tr.reward == 1.0
    # Taking a distractor is a real deviation: the plan is dropped and flagged.
    obs = env.reset(games["pick_and_place_simple"])
    data = json.loads(game_path(games["pick_and_place_simple"]).read_text())
    target = data["agentrl"]["object_target"].lower()
    for a in [x for x in obs.admissible if x.startswith("go to ")]:
        tr = env.step(a)
        if tr.observation.text.endswith("is closed."):
            tr = env.step("open " + a[len("go to ") :])
        takes = [x for x in tr.observation.admissible if x.startswith("take ") and not x.startswith(f"take {target} ")]
        if takes:
            tr = env.step(takes[0])
            assert tr.valid and tr.observation.info == {"expert_plan": [], "expert_plan_stale": True}
            break
    else:
        pytest.fail("no distractor to take")


# Plays a game with plain textworld (a fresh interpreter, so none of play.py's memos are
# installed): the plan's steps, then seeded random admissible commands; prints the log.
_PLAY = """
def play(env):
    logs = []
    for _ in range(2):  # a second reset of the same game (the fast env reuses its translation)
        rng = random.Random(3)
        state = env.reset()
        log = [[state["feedback"], state["admissible_commands"]]]
        for i in range(14):
            plan = state["extra.walkthrough"]
            cmd = plan[i] if i < len(plan) else rng.choice(state["admissible_commands"])
            state, _, _ = env.step(cmd)
            log.append([state["feedback"], state["admissible_commands"], state["won"]])
        logs.append(log)
    return logs
"""

# the same play() in a clean process, on plain textworld (no agentrl patches imported)
_PLAIN = (
    """
import json, os, random, sys
os.environ.setdefault("ALFWORLD_DATA", sys.argv[2])
import textworld
from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
infos = textworld.EnvInfos(admissible_commands=True, won=True, extras=["walkthrough"])
env = textworld.start(sys.argv[1], request_infos=infos, wrappers=[AlfredDemangler])
"""
    + _PLAY
    + """
print(json.dumps(play(env)))
"""
)


def test_fast_env_says_exactly_what_plain_textworld_says(games, cache):
    import subprocess
    import sys

    from agentrl.envs.alfworld.play import start_game

    path = game_path(games["pick_heat_then_place_in_recep"])
    out = subprocess.run(
        [sys.executable, "-c", _PLAIN, str(path), str(cache / "alfworld-data")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    plain = json.loads(out)
    namespace = {"random": random}
    exec(_PLAY, namespace)
    tw = start_game(path, plannable=False)
    fast = namespace["play"](tw)
    tw.close()
    assert fast == plain
    assert any(entry[2] for entry in plain[0][1:])  # the plan part won


def test_plan_tasks_is_deterministic_balanced_and_split_by_floorplan():
    ids = plan_tasks("eval", 12, seed=3, small=True)
    assert ids == plan_tasks("eval", 12, seed=3, small=True) and ids != plan_tasks("eval", 12, seed=4, small=True)
    specs = [parse_task_id(i) for i in ids]
    assert [s.task_type for s in specs] == list(TASK_TYPES) * 2
    assert all(s.small for s in specs)
    constants, _ = gen.alfworld_modules()
    test_scenes = {f"FloorPlan{n}" for n in constants.TEST_SCENE_NUMBERS}
    assert {s.floorplan for s in specs} <= test_scenes
    train = {parse_task_id(i).floorplan for i in plan_tasks("train", 60, seed=0)}
    assert train and not (train & test_scenes)
    only = plan_tasks("train", 4, seed=0, task_types=["pick_cool_then_place_in_recep"], floorplans=["12"])
    assert only == [make_task_id("pick_cool_then_place_in_recep", "FloorPlan12", i, False) for i in range(4)]
    with pytest.raises(UserError):
        plan_tasks("train", 2, task_types=["look_at_obj_in_light"], floorplans=["FloorPlan7"])
    with pytest.raises(UserError):
        plan_tasks("test", 2)


def test_bundled_suites_are_what_the_builder_builds_by_default():
    from agentrl.envs.suites import load_suite

    for name, small in (("alfworld-small", True), ("alfworld", False)):
        suite = load_suite(name)
        assert suite.env == "alfworld"
        assert suite.train == plan_tasks("train", default_n("train", small), 0, small=small)
        assert suite.eval == plan_tasks("eval", default_n("eval", small), 0, small=small)
        assert {parse_task_id(t).task_type for t in suite.eval} == set(TASK_TYPES)


def test_build_alfworld_reports_progress_and_caches(games):
    ticks = []
    ids = build_alfworld("train", 2, seed=7, small=True, workers=1, progress=ticks.append)
    assert len(ids) == 2 and sum(ticks) == 2
    assert all(game_path(i).exists() for i in ids)
    ticks.clear()
    assert build_alfworld("train", 2, seed=7, small=True, workers=1, progress=ticks.append) == ids
    assert sum(ticks) == 2  # all cached this time
    ticks.clear()
    more = build_alfworld("train", 4, seed=7, small=True, workers=2, progress=ticks.append)
    assert more[:2] == ids and sum(ticks) == 4 and all(game_path(i).exists() for i in more)


def test_registry_and_gymnasium(games):
    import gymnasium
    from gymnasium.utils.env_checker import check_env

    from agentrl.envs.registry import make_env

    assert isinstance(make_env(games["pick_and_place_simple"]), AlfWorldEnv)
    from agentrl.envs.gymnasium_api import register_gymnasium_envs

    register_gymnasium_envs()
    genv = gymnasium.make("agentrl/ALFWorld-v0", task=games["pick_and_place_simple"])
    check_env(genv.unwrapped, skip_render_check=True)
    text, info = genv.reset(options={"task": games["look_at_obj_in_light"]})
    assert info["goal"].startswith(("look at", "examine the")) and info["expert_plan"]
    genv.close()


@pytest.mark.slow
@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_full_size_game_of_each_type_is_won(task_type):
    fp = "FloorPlan201" if task_type == "look_at_obj_in_light" else "FloorPlan1"
    tid = make_task_id(task_type, fp, 0)
    env = AlfWorldEnv()
    obs = env.reset(tid)
    tr = None
    while obs.info["expert_plan"]:
        tr = env.step(obs.info["expert_plan"][0])
        obs = tr.observation
    assert tr is not None and tr.won and tr.reward == 1.0
    env.close()
