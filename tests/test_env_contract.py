"""Issue 17: the third-party env contract (docs/env-contract.md) — `agentrl envs check`, adapter
attributes, `env.options`, the `gym:` route's inference, entry-point discovery and errors, the build hook."""

import json
import random
from importlib import metadata

import gymnasium
import pytest
import yaml
from conftest import one_line_error, run_cli, write_recipe

from agentrl.envs import registry
from agentrl.envs.base import (
    META_COMMANDS,
    NEUTRAL_INTRO,
    TEXT_ADVENTURE_INTRO,
    Observation,
    TextAdventureEnv,
    TextEnv,
    Transition,
    clean_action,
)
from agentrl.envs.check import check_env
from agentrl.envs.pool import EnvPool
from agentrl.envs.registry import attributes_for, make_env, register_env, unregister_env
from agentrl.errors import UserError
from agentrl.policy.base import TurnContext
from agentrl.policy.prompt import default_system_prompt, system_prompt_for
from agentrl.policy.scripted import ExpertPolicy, RandomPolicy

# ---------------------------------------------------------------- toy adapters of this file


def _obs(text, board):
    return Observation(text, ["roll", "hold"], "win", f"board {board}", {"expert_plan": ["hold"]})


class GlobalRngEnv(TextEnv):
    """Seeds the process-global `random` at reset and draws from it at every step: alone it replays
    exactly, but two instances in one process (a pool worker) change each other's boards."""

    def check_task(self, task):
        if not task.startswith("globalrng/"):
            raise UserError(f"bad globalrng task id '{task}'")

    def reset(self, task, seed=None):
        random.seed(f"{task}/{seed}")
        self.board = random.randrange(10**12)
        return _obs("A new board.", self.board)

    def step(self, action):
        self.board = random.randrange(10**12)  # the global RNG, shared with every env of the process
        return Transition(_obs(f"You {action}.", self.board), 0.0, False)


class IgnoresSeedEnv(TextEnv):
    """Draws each board from a fresh OS-seeded RNG: reset(task, seed) ignores task and seed."""

    def reset(self, task, seed=None):
        self.rng = random.Random()
        self.board = self.rng.getrandbits(128)
        return _obs("A new board.", self.board)

    def step(self, action):
        self.board = self.rng.getrandbits(128)
        return Transition(_obs(f"You {action}.", self.board), 0.0, False)


class SeedBlindEnv(TextEnv):
    """Deterministic, but every `seed-N` of the task id is the same game."""

    fallback_action = "wait"

    def reset(self, task, seed=None):
        self.n = 0
        return Observation("Room 0.", None, "", "room 0", {})

    def step(self, action):
        self.n += 1
        return Transition(Observation(f"Room {self.n}.", None, "", f"room {self.n}", {}), 0.0, self.n >= 3)


class RecorderEnv(TextEnv):
    """Neutral attributes; records what it received; takes options; has a build hook."""

    received: list = []
    built: list = []
    fallback_action = "hello"

    def __init__(self, bonus: float = 0.0, banner: str = "Hello."):
        self.bonus, self.banner = float(bonus), banner

    def check_task(self, task):
        if not task.startswith("recorder/"):
            raise UserError(f"bad recorder task id '{task}'")

    def reset(self, task, seed=None):
        return Observation(self.banner, None, "say something", "start", {"expert_plan": []})

    def step(self, action):
        RecorderEnv.received.append(action)
        return Transition(Observation(f"got {action}", None, "", "start", {}), self.bonus, True, won=True)

    def build_tasks(self, task_ids, workers=1, progress=None):
        RecorderEnv.built.extend(task_ids)
        if progress:
            progress(len(task_ids))
        return list(task_ids)


class Quiz(TextEnv):
    """Admissible commands and a refused list of its own; a custom system intro."""

    refused_commands = frozenset({"skip"})
    refused_text = "No skipping."
    system_intro = "You are answering a quiz."

    def reset(self, task, seed=None):
        return Observation("2 + 2?", ["3", "4", "skip"], "answer", "q", {"expert_plan": ["4"], "walkthrough": ["4"]})

    def step(self, action):
        won = action == "4"
        return Transition(
            Observation("Right." if won else "Wrong.", [], "answer", "end", {}), float(won), True, won=won
        )


@pytest.fixture
def adapters():
    names = {"globalrng": GlobalRngEnv, "noseed": IgnoresSeedEnv, "seedblind": SeedBlindEnv}
    names |= {"recorder": RecorderEnv, "quiz": Quiz}
    for name, cls in names.items():
        register_env(name, cls)
    RecorderEnv.received, RecorderEnv.built = [], []
    yield
    for name in names:
        unregister_env(name)


def _suite(d, name, env, train, evals, **extra):
    (d / f"{name}.yaml").write_text(
        yaml.safe_dump({"name": name, "env": env, "train": {"tasks": train}, "eval": {"tasks": evals}, **extra})
    )


# ---------------------------------------------------------------- agentrl envs check


def test_check_passes_a_deterministic_env_and_reports_sizes(capsys):
    report = check_env("toy/chain-3/seed-4", steps=8)
    assert report.ok and report.difference is None
    assert [len(r.snapshots) for r in report.runs] == [len(report.runs[0].snapshots)] * 4
    assert report.admissible_max == 6 and report.prompt_chars_max > 0 and report.prompt_tokens_max > 0
    assert "expert plan: wins in 3 steps" in report.notes and not report.warnings
    code, out, err = run_cli(["envs", "check", "toy/chain-3/seed-4", "--steps", "8"], capsys)
    assert code == 0, err
    assert "contract kept" in out and "up to 6 commands" in out and "interleaved B" in out


def test_check_catches_an_env_that_uses_the_global_rng(adapters, capsys):
    report = check_env("globalrng/board/seed-0", steps=5)
    assert not report.ok
    assert report.difference.startswith("interleaved")  # alone it replays: only sharing a process shows it
    # A's second step draws what B's reset left in the global RNG
    assert report.difference.startswith("interleaved A differs from alone, new instance at step 1")
    assert "anchor 'board" in report.difference
    code, out, err = run_cli(["envs", "check", "globalrng/board/seed-0", "--steps", "5"], capsys)
    assert code == 1
    assert "contract broken: interleaved A differs" in err and "DIFFERS" in out and "Traceback" not in err


def test_check_catches_an_env_whose_reset_ignores_its_seed(adapters, capsys):
    report = check_env("noseed/board/seed-0", steps=3)
    assert not report.ok and report.difference.startswith("alone, same instance again")
    assert "the reset" in report.difference
    assert any("no check_task" in w for w in report.warnings)
    code, _, err = run_cli(["envs", "check", "noseed/board/seed-0", "--json"], capsys)
    assert code == 1 and "Traceback" not in err


def test_check_warns_when_the_task_seed_changes_nothing(adapters, capsys):
    report = check_env("seedblind/x/seed-3", steps=5)
    assert report.ok  # deterministic, so the contract holds
    assert any("seedblind/x/seed-4 start identically" in w for w in report.warnings)
    assert any("no info['expert_plan']" in w for w in report.warnings)
    assert report.admissible_max is None and len(report.runs[0].snapshots) == 4  # the fallback played 3 steps


def test_check_refuses_a_bad_task_id_or_option_in_one_line(adapters, capsys):
    code, _, err = run_cli(["envs", "check", "toy/nonsense"], capsys)
    one_line_error(code, err, "bad toy task id")
    code, _, err = run_cli(["envs", "check", "zork/1"], capsys)
    one_line_error(code, err, "unknown env 'zork'")
    code, _, err = run_cli(["envs", "check", "recorder/a", "--options", "{colour: red}"], capsys)
    one_line_error(code, err, "env 'recorder' has no option colour")


def test_check_counts_exact_tokens_with_a_tokenizer(tiny_model_dir):
    from agentrl.policy.model import load_tokenizer

    est = check_env("toy/pick-4/seed-0", steps=1)
    exact = check_env("toy/pick-4/seed-0", steps=1, tokenizer=load_tokenizer(str(tiny_model_dir)))
    assert exact.tokens_exact and not est.tokens_exact and exact.prompt_tokens_max > 20


# ---------------------------------------------------------------- adapter attributes


def test_builtin_adapters_keep_the_text_adventure_defaults():
    from agentrl.envs.alfworld import AlfWorldEnv
    from agentrl.envs.gym import GymTextEnv
    from agentrl.envs.textworld import TextWorldEnv
    from agentrl.envs.toy import ToyEnv

    for cls in (TextWorldEnv, AlfWorldEnv, ToyEnv):
        assert issubclass(cls, TextAdventureEnv)
        assert registry._BUILTIN_ATTRIBUTES[cls.name] is TextAdventureEnv
        for attr in ("refused_commands", "action_first_line", "action_max_chars", "system_intro", "fallback_action"):
            assert getattr(cls, attr) == getattr(TextAdventureEnv, attr), (cls, attr)
        assert cls.refused_commands == META_COMMANDS and cls.fallback_action == "look"
        assert cls.system_intro == TEXT_ADVENTURE_INTRO
    env = ToyEnv()
    for action in ["  go\\ north\x00 \n and more", "quit", "Save now", "", "x" * 300]:
        assert env.clean_action(action) == clean_action(action)  # today's hygiene exactly
    assert not issubclass(GymTextEnv, TextAdventureEnv) and GymTextEnv.system_intro == NEUTRAL_INTRO
    assert default_system_prompt("admissible").startswith("You are playing a text adventure game. Each turn")


def test_neutral_hygiene_for_third_party_adapters(adapters):
    """A third-party adapter gets what the model wrote, control characters aside: no meta commands
    refused, all lines, backslashes and length kept; its own refused list is applied."""
    with EnvPool(workers=0) as pool:
        pool.reset([(0, "recorder/a", 0)])
        long = "line one\\\nline two " + "y" * 300
        for action in ["quit", long, "bell\x07"]:
            pool.reset([(0, "recorder/a", 0)])
            (tr,) = pool.step([(0, action)])
            assert tr.valid
        assert RecorderEnv.received == ["quit", long, "bell"]
        (tr,) = pool.step([(0, "   ")])
        assert not tr.valid and tr.observation.text == "That command is not allowed."
        pool.reset([(1, "quiz/1", 0)])
        (tr,) = pool.step([(1, "SKIP it")])
        assert not tr.valid and tr.observation.text == "No skipping." and tr.observation.anchor == "q"


def test_system_prompt_and_fallback_come_from_the_adapter(adapters):
    from agentrl.config import RolloutConfig

    cfg = RolloutConfig()
    assert system_prompt_for(cfg, "quiz").startswith("You are answering a quiz. Each turn you read")
    assert system_prompt_for(cfg, "recorder").startswith(NEUTRAL_INTRO)
    assert system_prompt_for(cfg, "toy") == system_prompt_for(cfg) == default_system_prompt("admissible")
    assert system_prompt_for(RolloutConfig(system_prompt="Mine."), "quiz") == "Mine."
    blind = Observation("Room 0.", None, "", "", {})
    ctx = [TurnContext(0, "seedblind/x/seed-0", 0, blind), TurnContext(1, "quiz/1", 0, blind)]
    assert [a.text for a in RandomPolicy(0).act(ctx)] == ["wait", ""]
    acts = ExpertPolicy().act(ctx)
    assert acts[0].text == "wait" and not acts[1].parsed  # no fallback: nothing to play (an invalid step)
    toy = [TurnContext(0, "toy/echo/seed-0", 0, Observation("Say something.", None))]
    assert RandomPolicy(0).act(toy)[0].text == "look" == ExpertPolicy().act(toy)[0].text


# ---------------------------------------------------------------- env.options


def test_env_options_reach_the_factory_are_stored_and_replayed(adapters, tmp_path, suites_dir, capsys):
    _suite(suites_dir, "rec", "recorder", ["recorder/t1"], ["recorder/e1", "recorder/e2"], options={"bonus": 0.25})
    db = str(tmp_path / "r.db")
    recipe = write_recipe(tmp_path / "r.yaml", "rec", policy="random", env={"options": {"banner": "Hi there."}})
    code, out, err = run_cli(["eval", str(recipe), "--db", db, "--no-progress", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["mean_return"] == 0.25  # the suite's option
    code, out, _ = run_cli(["inspect", "--episode", "1", "--db", db, "--json"], capsys)
    ep = json.loads(out)
    assert ep["info"]["env_options"] == {"bonus": 0.25, "banner": "Hi there."}  # the recipe's over the suite's
    assert ep["steps"][0]["observation"] == "Hi there."
    from agentrl.replay import replay_record
    from agentrl.store.db import open_store
    from agentrl.store.queries import get_episode

    stored = get_episode(open_store(db, create=False, readonly=True), 1)
    assert replay_record(stored, workers=0).ok  # this file's adapters exist in this process only
    stored.info["env_options"] = {}
    assert not replay_record(stored, workers=0).ok  # so the stored options are what made it match
    # an option the adapter does not take: one line, before any work
    bad = write_recipe(tmp_path / "b.yaml", "rec", env={"options": {"colour": "red"}})
    code, _, err = run_cli(["eval", str(bad), "--db", db], capsys)
    one_line_error(code, err, "env 'recorder' has no option colour (env.options; its options: banner, bonus)")
    _suite(suites_dir, "tiny", "toy", ["toy/pick-2/seed-0"], ["toy/pick-2/seed-1"])
    bad = write_recipe(tmp_path / "b.yaml", "tiny", env={"options": {"fast": True}})
    code, _, err = run_cli(["eval", str(bad), "--db", db, "--set", "env.options.fast=true"], capsys)
    one_line_error(code, err, "env 'toy' has no option fast (env.options; it takes none)")


def test_build_hook_of_a_third_party_adapter(adapters, suites_dir, capsys):
    _suite(suites_dir, "rec", "recorder", ["recorder/t1", "recorder/t2"], ["recorder/e1"])
    code, out, err = run_cli(["envs", "build", "rec", "--workers", "1"], capsys)
    assert code == 0, err
    assert RecorderEnv.built == ["recorder/t1", "recorder/t2", "recorder/e1"] and "3 games ready" in out


# ---------------------------------------------------------------- the gym: route


class _PartialCredit(gymnasium.Env):
    """Ends after one step with reward 0.5 and no `won`: a loss with partial credit."""

    observation_space = gymnasium.spaces.Text(100, min_length=0)
    action_space = gymnasium.spaces.Text(100, min_length=0)

    def __init__(self, valid_list=False, solved_key=False):
        self.valid_list, self.solved_key = valid_list, solved_key

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return "start", self._info()

    def _info(self):
        info = {"valid": ["a", "b"]} if self.valid_list else {"admissible": ["a", "b"]}
        if self.solved_key:
            info["solved"] = False
        return info

    def step(self, action):
        return "end", 0.5, True, False, self._info()


gymnasium.register(id="agentrl_test/PartialCredit-v0", entry_point=_PartialCredit)


def test_gym_won_is_inferred_with_one_warning_per_run(tmp_path, suites_dir, capsys):
    _suite(
        suites_dir,
        "pc",
        "gym",
        ["gym:agentrl_test/PartialCredit-v0/seed-0"],
        ["gym:agentrl_test/PartialCredit-v0/seed-1"],
    )
    db = str(tmp_path / "r.db")
    recipe = write_recipe(tmp_path / "r.yaml", "pc", eval={"episodes": 4})
    for _ in range(2):
        code, out, err = run_cli(["eval", str(recipe), "--db", db, "--no-progress", "--json"], capsys)
        assert code == 0, err
        assert json.loads(out)["won"] == 4  # inferred: terminated with reward > 0
        lines = [line for line in err.splitlines() if "won is inferred" in line]
        assert len(lines) == 1 and lines[0].startswith("warning: gym: gymnasium env 'agentrl_test/PartialCredit-v0'")
    # mapping a key the env has turns the inference (and the warning) off
    recipe = write_recipe(
        tmp_path / "r.yaml",
        "pc",
        eval={"episodes": 2},
        env={"options": {"make_kwargs": {"solved_key": True}, "info_keys": {"won": "solved"}}},
    )
    code, out, err = run_cli(["eval", str(recipe), "--db", db, "--no-progress", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["won"] == 0 and "inferred" not in err


def test_gym_valid_must_be_a_bool_and_info_keys_map_it(tmp_path):
    env = make_env("gym:x", {"make_kwargs": {"valid_list": True}})
    env.reset("gym:agentrl_test/PartialCredit-v0/seed-0")
    with pytest.raises(UserError, match=r"info\['valid'\] \(valid\) must be a bool, got list.*info_keys"):
        env.step("a")
    with EnvPool(workers=0, env_options={"make_kwargs": {"valid_list": True}}) as pool:
        pool.reset([(0, "gym:agentrl_test/PartialCredit-v0/seed-0", 0)])
        (res,) = pool.step([(0, "a")])
        assert "must be a bool" in res.error  # the episode ends with the reason, not the run
    env = make_env("gym:x", {"make_kwargs": {"valid_list": True}, "info_keys": {"admissible": "valid"}})
    obs = env.reset("gym:agentrl_test/PartialCredit-v0/seed-0")
    assert obs.admissible == ["a", "b"] and "valid" not in obs.info
    tr = env.step("c")
    assert not tr.valid and tr.reward == 0.5  # not admissible: valid inferred from the mapped list
    with pytest.raises(UserError, match="unknown field colour"):
        make_env("gym:x", {"info_keys": {"colour": "x"}})


# ---------------------------------------------------------------- entry points


def _fake_entry_points(monkeypatch, *eps):
    monkeypatch.setattr(
        registry.metadata, "entry_points", lambda group=None: [e for e in eps if group in (None, e.group)]
    )
    registry._entry_points.cache_clear()
    registry.adapter_attributes.cache_clear()


@pytest.fixture
def clean_entry_points():
    from agentrl.envs.suites import package_suite_dirs

    yield
    registry._entry_points.cache_clear()
    registry.adapter_attributes.cache_clear()
    package_suite_dirs.cache_clear()


def test_entry_point_errors_and_name_clash(monkeypatch, clean_entry_points, tmp_path, suites_dir, capsys):
    from agentrl.errors import reset_warnings

    reset_warnings()
    group = "agentrl.envs"
    _fake_entry_points(
        monkeypatch,
        metadata.EntryPoint("broken", "agentrl_no_such_module.adapter:Env", group),
        metadata.EntryPoint("toy", "agentrl.envs.gym:GymTextEnv", group),
        metadata.EntryPoint("quiz2", "test_env_contract:Quiz", group),
    )
    assert registry.third_party_envs() == ["broken", "quiz2"]
    err = capsys.readouterr().err
    assert "warning: ignoring entry point 'toy = agentrl.envs.gym:GymTextEnv'" in err and "built-in" in err
    assert type(make_env("toy/pick-2/seed-0")).__name__ == "ToyEnv"  # the built-in wins
    _suite(suites_dir, "br", "broken", ["broken/1"], ["broken/2"])
    code, _, err = run_cli(
        ["eval", str(write_recipe(tmp_path / "r.yaml", "br")), "--db", str(tmp_path / "r.db")], capsys
    )
    one_line_error(
        code,
        err,
        "env adapter 'broken' cannot be loaded from entry point 'broken = agentrl_no_such_module.adapter:Env' "
        "(group agentrl.envs): ModuleNotFoundError",
    )
    # third-party adapters are gymnasium envs too, as the built-ins are
    from agentrl.envs.gymnasium_api import register_gymnasium_envs

    register_gymnasium_envs()
    assert "agentrl/quiz2-v0" in gymnasium.registry and "agentrl/broken-v0" in gymnasium.registry
    env = gymnasium.make("agentrl/quiz2-v0", task="quiz2/1", disable_env_checker=True)
    text, info = env.reset()
    assert text == "2 + 2?" and info["admissible"] == ["3", "4", "skip"]
    assert env.step("4")[1:3] == (1.0, True)
    env.close()
    assert attributes_for("quiz2").system_intro == "You are answering a quiz."  # read from the loaded class


class _CheckRaises(TextEnv):
    def check_task(self, task):
        raise ValueError("no parser yet")


def test_check_reports_an_adapter_whose_check_task_raises(capsys):
    register_env("raises", _CheckRaises)
    try:
        code, out, err = run_cli(["envs", "check", "raises/1"], capsys)
    finally:
        unregister_env("raises")
    assert code == 1 and "Traceback" not in err
    assert err.strip() == "contract broken: checking the task id raised ValueError: no parser yet"


def test_check_reuses_the_instance_of_an_adapter_without_a_name(adapters):
    """`alone, same instance again` is the same object even when the class leaves `name` at its
    default; the interleaved runs are two other objects."""
    resets = []

    class Counting(SeedBlindEnv):
        def reset(self, task, seed=None):
            resets.append(self)
            return super().reset(task, seed)

    register_env("counting", Counting)
    try:
        assert check_env("counting/x/seed-0", steps=2).ok
    finally:
        unregister_env("counting")
    assert Counting.name == "base"
    alone, again, a, b = resets[:4]
    assert alone is again and len({id(alone), id(a), id(b)}) == 3
