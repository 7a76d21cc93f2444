"""TextWorld adapter: reproducible cached games, cleaning, per-step rewards, expert plans, hygiene."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("textworld")

from agentrl.envs.registry import make_env  # noqa: E402
from agentrl.envs.textworld import (  # noqa: E402
    REFUSED_TEXT,
    TextWorldEnv,
    build_games,
    clean_text,
    game_path,
    parse_task,
    strip_banner,
)
from agentrl.errors import UserError  # noqa: E402

CUSTOM = "textworld/w2-o2-q2/seed-0"
QUICK = "textworld/tw-treasure_hunter-l1/seed-0"  # the quickest kind to generate
COOKING = "textworld/tw-cooking-r1-t1-open/seed-0"
TASKS = [CUSTOM, QUICK, COOKING]


@pytest.fixture(scope="session")
def games(tmp_path_factory):
    """The few games these tests play, generated once per session (2 spawned workers)."""
    cache = os.environ.get("AGENTRL_CACHE") or str(tmp_path_factory.getbasetemp() / "agentrl-cache")
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTRL_CACHE", cache)
        paths = build_games(TASKS + [QUICK], workers=2, progress=calls.append)
    assert sum(calls) == len(TASKS) + 1  # progress advances add up to the number of ids
    assert paths[1] == paths[3]
    return dict(zip(TASKS, paths))


@pytest.fixture
def env(games):
    e = TextWorldEnv()
    yield e
    e.close()


def test_games_are_cached_under_agentrl_cache(games):
    for task, path in games.items():
        assert path == game_path(task)
        assert path.is_file() and path.with_suffix(".json").is_file()
        assert str(path).startswith(os.environ["AGENTRL_CACHE"])
    assert games[CUSTOM].relative_to(os.environ["AGENTRL_CACHE"]).as_posix() == "games/w2-o2-q2/seed-0.z8"
    assert not list(games[CUSTOM].parent.glob(".build-*"))  # temp folders cleaned up


def test_same_task_id_gives_byte_identical_game(games, tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path))  # an empty cache: generate again
    again = build_games([QUICK])[0]
    assert again != games[QUICK] and again.is_file()
    assert again.read_bytes() == games[QUICK].read_bytes()


def test_task_id_grammar():
    s = parse_task("textworld/w3-o5-q4/seed-17")
    assert (s.spec, s.seed, s.challenge, s.settings) == (
        "w3-o5-q4",
        17,
        None,
        {"world_size": 3, "nb_objects": 5, "quest_length": 4},
    )
    s = parse_task("textworld/tw-cooking-r2-t1-go6-open-cut/seed-2")
    assert s.challenge == "tw-cooking" and s.settings["go"] == 6 and s.settings["cut"] and not s.settings["cook"]
    assert parse_task("textworld/tw-simple-sparse-none/seed-0").settings["rewards"] == "sparse"
    assert parse_task("textworld/tw-treasure_hunter-l30/seed-1").settings == {"level": 30}
    bad = [
        "textworld/w2-o3/seed-1",
        "textworld/w2-o3-q4",
        "textworld/w2-o3-q4/seed-x",
        "textworld/zork/seed-1",
        "textworld/tw-cooking-r9-t1/seed-0",
        "textworld/tw-cooking-r1-t2/seed-0",
        "textworld/tw-cooking-r1-t1-cook-open/seed-0",
        "textworld/tw-cooking-r1-t1-go5/seed-0",
        "textworld/tw-simple-dense/seed-0",
        "textworld/tw-coin_collector-l0/seed-0",
        "textworld/tw-treasure_hunter-l31/seed-0",
        "textworld/w0-o1-q1/seed-0",
    ]
    for task in bad:
        with pytest.raises(UserError) as e:
            parse_task(task)
        assert task in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError):
        TextWorldEnv().reset("textworld/w2-o3/seed-1")
    with pytest.raises(UserError):  # validated before any game is generated
        build_games(["textworld/w1-o1-q1/seed-99", "textworld/nope/seed-1"])
    assert not game_path("textworld/w1-o1-q1/seed-99").exists()
    with pytest.raises(UserError):
        make_env("nosuchenv/x/seed-1")


def test_clean_text_strips_prompt_status_line_and_banner():
    raw = "\nYou open the Henderson's box, revealing a cane.\n\n\n>" + " " * 60 + "-= Cellar =-0/3"
    assert clean_text(raw) == "You open the Henderson's box, revealing a cane."
    end = (
        "\nYou pick up the coin.\n\n\n" + " " * 40 + "*** The End ***\n\nYou scored 1 out of a possible 1, in 2 turns."
        "\n\n\nWould you like to RESTART, RESTORE a saved game, QUIT or UNDO the last command?\n>   -= Cellar =-0/1"
    )
    assert (
        clean_text(end) == "You pick up the coin.\n\n*** The End ***\n\nYou scored 1 out of a possible 1, in 2 turns."
    )
    art = "\n\n   ________  __\n  |        \\|  \\\n   \\$$$$$$$$| $$\n\nHey, do this.\n\n-= Shower =-\nA shower.\n\n> -= Shower =-0/1"  # noqa: E501
    assert clean_text(art, banner=True) == "Hey, do this.\n\n-= Shower =-\nA shower."
    assert strip_banner("| not art but text\nmore") == "| not art but text\nmore"  # no $$: untouched


def test_reset_observation(env):
    obs = env.reset(QUICK)
    assert obs.goal == (
        "It's time to explore the amazing world of TextWorld! "
        "Your task for today is to pick up the passkey from the floor of the chamber."
    )
    assert obs.text.startswith(obs.goal) and "-= Chamber =-" in obs.text
    assert obs.text.endswith("There is a passkey on the floor.")
    assert "$$" not in obs.text and ">" not in obs.text and "0/1" not in obs.text
    assert obs.admissible == ["examine passkey", "go north", "inventory", "look", "take passkey"]
    assert obs.info["expert_plan"] == ["take passkey"] and obs.info["walkthrough"] == ["take passkey"]
    assert (obs.info["score"], obs.info["max_score"]) == (0, 1)
    assert obs.anchor.startswith("-= Chamber =-") and obs.anchor.endswith("You are carrying nothing.")


def test_nonsense_passes_feedback_and_anchor_is_a_state_key(env):
    obs = env.reset(CUSTOM)
    tr = env.step("xyzzy")
    assert tr.observation.text == "That's not a verb I recognise."
    assert not tr.valid and tr.reward == 0 and not tr.terminated
    assert tr.observation.anchor == obs.anchor  # nothing changed
    assert env.step("look").observation.anchor == obs.anchor
    assert env.step("inventory").observation.anchor == obs.anchor
    go = next(c for c in obs.admissible if c.startswith("go "))
    back = {"north": "south", "south": "north", "east": "west", "west": "east"}[go.split()[1]]
    moved = env.step(go)
    assert moved.valid and moved.observation.anchor != obs.anchor
    assert env.step(f"go {back}").observation.anchor == obs.anchor  # revisit -> same anchor


def test_rewards_are_per_step_not_cumulative(env):
    obs = env.reset(COOKING)
    assert obs.info["max_score"] == 3
    rewards, scores = [], []
    for cmd in obs.info["walkthrough"]:
        tr = env.step(cmd)
        rewards.append(tr.reward)
        scores.append(tr.observation.info["score"])
    # walkthrough: inventory, examine cookbook, open fridge, take ..., prepare meal, eat meal
    assert rewards == [0, 0, 0, 1, 1, 1]
    assert scores == [0, 0, 0, 1, 2, 3]
    assert tr.terminated and tr.won and "*** The End ***" in tr.observation.text
    assert "RESTART" not in tr.observation.text
    after = env.step("look")  # no command reaches the post-game prompt
    assert after.terminated and after.won and after.reward == 0 and not after.valid


@pytest.mark.parametrize("task", TASKS)
def test_following_the_expert_plan_wins(env, task):
    obs = env.reset(task)
    total, steps, limit = 0.0, 0, 3 * len(obs.info["walkthrough"]) + 3
    while steps < limit:
        plan = obs.info["expert_plan"]
        assert plan and plan[0] in obs.admissible
        tr = env.step(plan[0])
        assert tr.valid
        total += tr.reward
        steps += 1
        obs = tr.observation
        if tr.terminated:
            break
    assert tr.won and total == obs.info["max_score"] and obs.info["expert_plan"] == []


def test_reset_switches_and_reuses_games(env):
    a = env.reset(CUSTOM)
    env.step(a.info["expert_plan"][0])
    b = env.reset(QUICK)
    assert b.goal != a.goal
    again = env.reset(CUSTOM)  # back to the first game, fresh start
    assert (again.text, again.anchor, again.admissible) == (a.text, a.anchor, a.admissible)


def test_meta_commands_refused_and_game_goes_on(env):
    obs = env.reset(QUICK)
    for cmd in ["quit", "restart", "save", "  RESTORE ", "", "   "]:
        tr = env.step(cmd)
        assert tr.observation.text == REFUSED_TEXT
        assert not tr.valid and tr.reward == 0 and not tr.terminated
        assert tr.observation.anchor == obs.anchor and tr.observation.admissible == obs.admissible
    tr = env.step("take passkey")  # the interpreter never saw a yes/no prompt
    assert tr.won and tr.reward == 1


def test_backslashes_and_control_chars_do_not_hang(games):
    """A backslash hangs the Z-machine; run in a subprocess so a hang fails instead of blocking."""
    code = textwrap.dedent(f"""
        from agentrl.envs.textworld import TextWorldEnv
        env = TextWorldEnv()
        env.reset({QUICK!r})
        for a in ["\\\\f", "look\\\\", "\\x00", "\\\\", "take\\\\ passkey\\x1b"]:
            tr = env.step(a)
        print("WON" if tr.won else "NOT-WON")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "WON"  # "take\\ passkey\x1b" was cleaned to "take passkey"


def test_gymnasium_check_env(games):
    import gymnasium
    from gymnasium.utils.env_checker import check_env

    from agentrl.envs.gymnasium_api import register_gymnasium_envs

    register_gymnasium_envs()
    env = gymnasium.make("agentrl/TextWorld-v0", task=QUICK)
    check_env(env.unwrapped)
    text, info = env.reset(seed=0)
    assert info["admissible"] == ["examine passkey", "go north", "inventory", "look", "take passkey"]
    quick_goal = info["goal"]
    text, reward, terminated, truncated, info = env.step("take passkey")
    assert (reward, terminated, truncated, info["won"]) == (1.0, True, False, True)
    text, info = env.reset(options={"task": CUSTOM})
    assert info["goal"] not in ("", quick_goal)
    env.close()


def test_one_action_is_one_command(env):
    """Inform would run "a. b" / "a then b" as two commands; only the first reaches the game."""
    plan = env.reset(COOKING).info["walkthrough"]  # inventory, examine cookbook, open fridge, take X (+1), ...
    joined = env.step(f"{plan[0]}. {plan[1]}").observation.text
    env.reset(COOKING)
    assert joined == env.step(plan[0]).observation.text
    env.step(plan[1])
    tr = env.step(f"{plan[2]} then {plan[3]}")  # only "open fridge" runs: no point scored
    assert tr.reward == 0 and tr.valid
    assert env.step(plan[3]).reward == 1  # the take still scores, so it had not run
