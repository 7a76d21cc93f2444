"""Issue 17: the third-party example adapter of docs/env-contract.md (docs/examples/agentrl-lights),
installed for real with pip (its `agentrl.envs` and `agentrl.suites` entry points), then driven
through the CLI in subprocesses as a user would: envs list, check, build, eval, train (tiny model,
one iteration), replay, and its gymnasium id."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import AGENTRL, ROOT

EXAMPLE = ROOT / "docs" / "examples" / "agentrl-lights"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The example installed with pip into its own folder (`--target`: a site directory of its own)."""
    tmp = tmp_path_factory.mktemp("lights")
    src = tmp / "src"  # a copy: setuptools' build/ and egg-info must not land in the repository
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["--target", str(tmp / "site"), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list((tmp / "site").glob("agentrl_lights-*.dist-info/entry_points.txt"))
    return tmp / "site"


@pytest.fixture
def agentrl(site, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "AGENTRL_ENVS_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])  # the installed example, this checkout's agentrl

    def run(*args, check=True):
        proc = subprocess.run([*AGENTRL, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        if check:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    run.env = env
    return run


def _recipe(path, **sections):
    data = {"name": path.stem, "seed": 0, "env": {"suite": "lights-row5", "max_steps": 4, "workers": 1}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_installed_adapter_is_found_and_keeps_the_contract(agentrl):
    listing = json.loads(agentrl("envs", "list", "--json").stdout)
    assert "lights" in listing["adapters"]
    (suite,) = [s for s in listing["suites"] if s["name"] == "lights-row5"]
    assert suite["env"] == "lights" and (suite["train"], suite["eval"]) == (32, 16)
    assert "agentrl_lights" in suite["file"]  # shipped by the package (agentrl.suites entry point)
    check = agentrl("envs", "check", "lights/row-5/seed-3", "--steps", "6")
    assert "contract kept" in check.stdout and "expert plan: wins" in check.stdout
    assert "warning" not in check.stderr, check.stderr
    assert "48 games ready for lights-row5" in agentrl("envs", "build", "lights-row5").stdout
    bad = agentrl("envs", "check", "lights/row-2/seed-0", check=False)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: bad lights task id 'lights/row-2/seed-0' (expected lights/row-N/seed-K with N = 3-9)"
    )
    code = (
        "import gymnasium, agentrl.envs; "
        "env = gymnasium.make('agentrl/lights-v0', task='lights/row-5/seed-3', env_options={'step_reward': -0.5}); "
        "text, info = env.reset(); print(env.step(info['expert_plan'][0])[1:3])"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=agentrl.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "(0.5, True)", proc.stdout + proc.stderr


def test_installed_adapter_through_eval_train_and_replay(agentrl, tmp_path, tiny_model_dir):
    db = str(tmp_path / "runs.db")
    expert = _recipe(tmp_path / "expert.yaml", policy="expert", env={"options": {"step_reward": -0.25}})
    out = json.loads(agentrl("eval", expert, "--db", db, "--json", "--no-progress").stdout)
    assert (out["won"], out["episodes"], out["errors"]) == (16, 16, 0)
    assert out["mean_return"] < 1.0  # the option reached the adapter in the worker process
    train = _recipe(
        tmp_path / "train.yaml",
        policy="llm",
        model={"path": str(tiny_model_dir)},
        rollout={"engine": "hf", "group_size": 2, "groups_per_iteration": 2, "history": 1, "max_new_tokens": 4},
        learner={"lora_rank": 4, "layout": "per_step", "tokens_per_step": 400},
        train={"iterations": 1, "eval_every": 0, "checkpoint_every": 1, "output_dir": str(tmp_path / "ckpt")},
        eval={"episodes": 2},
        env={"options": {"step_reward": -0.1}},
    )
    proc = agentrl("train", train, "--db", db, "--no-progress")
    assert "Traceback" not in proc.stderr
    runs = json.loads(agentrl("runs", "--db", db, "--json").stdout)
    (run,) = [r for r in runs if r["kind"] == "train"]
    assert run["status"] == "finished"
    eps = json.loads(agentrl("inspect", str(run["id"]), "--split", "train", "--db", db, "--json").stdout)
    assert len(eps) == 4 and all(e["status"] != "error" for e in eps)
    episode = json.loads(agentrl("inspect", "--episode", str(eps[0]["id"]), "--db", db, "--json").stdout)
    assert episode["info"]["env_options"] == {"step_reward": -0.1}
    assert episode["steps"][0]["prompt_ids"]  # the LLM played it
    replay = json.loads(agentrl("replay", str(eps[0]["id"]), "--db", db, "--json").stdout)
    assert replay["match"] and len(replay["steps"]) == len(episode["steps"]) + 1
