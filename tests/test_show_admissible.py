"""Issue 17: an env with thousands of admissible commands runs in admissible mode.

`rollout.show_admissible: all | none | K` says how many commands a user message lists; constrained
decoding still uses the whole list; a prompt that cannot fit `max_prompt_tokens` ends that episode
(status error, task and step named), never the run."""

import json

import pytest
import yaml
from conftest import run_cli, write_recipe

from agentrl.config import RolloutConfig
from agentrl.engines.base import Generation
from agentrl.envs.base import Observation, TextEnv, Transition
from agentrl.envs.registry import register_env, unregister_env
from agentrl.policy.base import TurnContext
from agentrl.policy.prompt import user_message

N = 2000
COMMANDS = [f"press button {i}" for i in range(N)]
WIN = COMMANDS[-1]  # past any K shown


class ManyButtons(TextEnv):
    """2,000 admissible commands in every state; the last one wins; three steps at most."""

    def reset(self, task, seed=None):
        self.t = 0
        return Observation(
            "A wall of buttons.", list(COMMANDS), "press the right button", "wall", {"expert_plan": [WIN]}
        )

    def step(self, action):
        self.t += 1
        won = action == WIN
        obs = Observation("Click." if not won else "A door opens.", list(COMMANDS), "press the right button", "wall")
        return Transition(obs, float(won), won or self.t >= 3, won=won, valid=action in COMMANDS)


@pytest.fixture
def buttons(suites_dir):
    register_env("buttons", ManyButtons)
    (suites_dir / "buttons.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "buttons",
                "env": "buttons",
                "train": {"pattern": "buttons/wall/seed-{i}", "seeds": [0, 3]},
                "eval": {"pattern": "buttons/wall/seed-{i}", "seeds": [100, 101]},
            }
        )
    )
    yield
    unregister_env("buttons")


def test_user_message_lists_all_none_or_the_first_k():
    cmds = ["a", "b", "c", "d"]
    assert (
        user_message("Obs.", cmds) == user_message("Obs.", cmds, "all") == "Obs.\n\nValid commands:\n- a\n- b\n- c\n- d"
    )
    assert user_message("Obs.", cmds, "none") == "Obs."
    assert user_message("Obs.", cmds, 2) == "Obs.\n\nValid commands:\n- a\n- b\n(2 more not shown)"
    assert user_message("Obs.", cmds, 4) == user_message("Obs.", cmds)  # nothing left out: no note


class _LastCommand:
    """An engine stub: in admissible mode it answers the last admissible command (never shown)."""

    name = "stub"
    weights_version = 0

    def __init__(self):
        self.requests = []

    def generate(self, requests, sampling):
        self.requests += requests
        return [Generation([1, 2], [-0.1, -0.2], command=r.commands[-1] if r.commands else None) for r in requests]

    def end(self, key):
        pass

    def reset(self):
        pass


def test_constrained_decoding_uses_the_whole_list_when_few_are_shown(tiny_model_dir, buttons):
    from agentrl.policy.llm import LLMPolicy
    from agentrl.policy.model import load_tokenizer

    engine = _LastCommand()
    policy = LLMPolicy(engine, load_tokenizer(str(tiny_model_dir)), RolloutConfig(show_admissible=10))
    obs = ManyButtons().reset("buttons/wall/seed-0")
    (act,) = policy.act([TurnContext(0, "buttons/wall/seed-0", 0, obs)])
    assert engine.requests[0].commands == COMMANDS  # the trie gets all 2,000
    text = policy.tok.decode(engine.requests[0].prompt_ids)
    assert "- press button 9\n(1990 more not shown)" in text and "press button 10\n" not in text
    assert act.text == WIN and act.error is None
    assert policy.system_prompt("buttons/wall/seed-0").startswith("You are an agent acting in a text environment.")


def _eval(tmp_path, tiny_model_dir, capsys, show):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        "buttons",
        policy="llm",
        env={"max_steps": 3, "workers": 0},
        model={"path": str(tiny_model_dir)},
        rollout={"engine": "hf", "action_mode": "admissible", "history": 1, "show_admissible": show},
        eval={"episodes": 2},
    )
    db = str(tmp_path / f"{show}.db")
    code, out, err = run_cli(["eval", str(recipe), "--db", db, "--no-progress", "--json"], capsys)
    assert code == 0, err
    code, eps, _ = run_cli(["inspect", "1", "--db", db, "--json"], capsys)
    assert code == 0
    return json.loads(out), json.loads(eps), db


def test_an_env_with_2000_commands_runs_in_admissible_mode(tmp_path, tiny_model_dir, buttons, capsys):
    summary, eps, db = _eval(tmp_path, tiny_model_dir, capsys, 20)
    assert summary["episodes"] == 2 and summary["errors"] == 0
    assert all(e["status"] in ("ok", "truncated") for e in eps)
    code, out, _ = run_cli(["inspect", "--episode", str(eps[0]["id"]), "--db", db, "--json"], capsys)
    steps = json.loads(out)["steps"]
    assert steps and all(s["action"] in COMMANDS and len(s["admissible"]) == N for s in steps)
    assert all(len(s["prompt_ids"]) <= 2048 for s in steps)


def test_a_prompt_that_cannot_fit_ends_that_episode_not_the_run(tmp_path, tiny_model_dir, buttons, capsys):
    summary, eps, db = _eval(tmp_path, tiny_model_dir, capsys, "all")  # 2,000 commands: far past 2,048 tokens
    assert summary["episodes"] == 2 and summary["errors"] == 2
    code, out, _ = run_cli(["runs", "--db", db, "--json"], capsys)
    assert json.loads(out)[0]["status"] == "finished"
    for e in eps:
        assert e["status"] == "error"
        assert e["error"].startswith(f"task {e['task_id']}, step 0: the prompt does not fit max_prompt_tokens=2048")
        assert "2000 valid commands" in e["error"] and "rollout.show_admissible" in e["error"]
