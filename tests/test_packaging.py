"""Defect 1 (issue 11): a non-editable `pip install agentrl` shipped no suites and no recipes.

Suites were read from `<agentrl package>/../envs` (the checkout's top-level folder, which a wheel
does not contain), so in a plain install `agentrl envs list` printed an empty table and
`agentrl eval <repo>/recipes/tw-quick-random.yaml` exited 2 with "unknown suite 'tw-quick'
(known: none; folder .../site-packages/envs)". Now the suites and recipes are package data
(`agentrl/suites/`, `agentrl/recipes/`) and a recipe is also given by name (`agentrl train quickstart`).
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT, run_cli

SUITES = ("alfworld", "alfworld-small", "textworld-w2-o3-q4", "toy-chain", "toy-pick", "tw-coin-l1", "tw-quick")
RECIPES = (
    "alfworld-gpu",
    "alfworld-small-llm",
    "credit-study",
    "quickstart",
    "tw-quick-expert",
    "tw-quick-llm",
    "tw-quick-random",
    "warm-start",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel` builds from the project's files (copied out first, so setuptools' build/
    folder neither lands in the working tree nor leaks stale files into the wheel)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT / "agentrl", src / "agentrl", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = (tmp / "dist").glob("agentrl-*.whl")
    return whl


def test_wheel_contains_every_suite_and_recipe(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"agentrl/suites/{n}.yaml" for n in SUITES} | {f"agentrl/recipes/{n}.yaml" for n in RECIPES}
    # and whatever else the source folders hold
    expected |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "agentrl").glob("suites/*.yaml")}
    expected |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "agentrl").glob("recipes/*.yaml")}
    assert not expected - names, sorted(expected - names)


def test_unpacked_wheel_finds_its_suites_and_recipes(wheel, tmp_path):
    """The wheel's files alone, outside the checkout (what a non-editable install sees)."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTRL_ENVS_DIR", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)  # ahead of the editable install's finder
    code = (
        "import agentrl, agentrl.envs.suites as s, agentrl.recipe_files as r; "
        "print(agentrl.__file__); print(sorted(x.name for x in s.list_suites())); print(r.recipe_names())"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    where, suites, recipes = proc.stdout.strip().splitlines()
    assert Path(where).is_relative_to(site), where
    assert suites == str(sorted(SUITES)), suites
    assert recipes == str(sorted(RECIPES)), recipes


def test_eval_resolves_a_packaged_recipe_by_name(tmp_path, monkeypatch):
    monkeypatch.delenv("AGENTRL_ENVS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no file named tw-quick-random here: the name must resolve to the package
    from agentrl.cli import cli

    result = CliRunner().invoke(
        cli,
        [
            "eval",
            "tw-quick-random",
            "--set",
            "env.suite=toy-chain",
            "--set",
            "env.workers=0",
            "--episodes",
            "2",
            "--no-progress",
            "--db",
            str(tmp_path / "r.db"),
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert "tw-quick-random on toy-chain" in result.output


def test_a_file_argument_wins_over_the_packaged_name(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("AGENTRL_ENVS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    from agentrl.config import load_recipe

    Path("quickstart").write_text("name: mine\nenv: {suite: toy-pick}\npolicy: random\n")
    assert load_recipe("quickstart").name == "mine"
    assert load_recipe("tw-quick-expert").policy == "expert"


def test_unknown_recipe_name_lists_the_known_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["train", "quickstrat", "--db", str(tmp_path / "r.db")], capsys)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "quickstrat" in lines[0] and all(n in lines[0] for n in RECIPES), lines[0]


def test_recipes_list_show_copy(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    from agentrl.recipe_files import recipe_path

    code, out, err = run_cli(["recipes", "list"], capsys)
    assert code == 0, err
    for name in RECIPES:
        assert name in out
    assert "the floor any agent must beat" in out  # tw-quick-random's description line

    code, out, err = run_cli(["recipes", "show", "quickstart"], capsys)
    assert code == 0, err
    assert out == recipe_path("quickstart").read_text(encoding="utf-8")

    code, out, err = run_cli(["recipes", "copy", "quickstart"], capsys)
    assert code == 0, err
    assert (tmp_path / "quickstart.yaml").read_bytes() == recipe_path("quickstart").read_bytes()
    code, _, err = run_cli(["recipes", "copy", "quickstart"], capsys)  # no silent overwrite
    assert code == 2 and "exists" in err, err
    (tmp_path / "mine").mkdir()
    code, _, err = run_cli(["recipes", "copy", "tw-quick-random", "mine"], capsys)
    assert code == 0 and (tmp_path / "mine" / "tw-quick-random.yaml").is_file(), err
    code, _, err = run_cli(["recipes", "copy", "tw-quick-random", "edited.yaml"], capsys)
    assert code == 0 and (tmp_path / "edited.yaml").is_file(), err

    code, _, err = run_cli(["recipes", "show", "nope"], capsys)
    assert code == 2 and "quickstart" in err, err


def test_every_recipe_opens_with_its_by_name_command_and_a_description():
    from agentrl.recipe_files import describe, recipe_names, recipe_path

    for name in recipe_names():
        command, description = describe(recipe_path(name))
        assert command.split()[:3] in ([["agentrl", c, name] for c in ("train", "eval", "sft")]), command
        assert description, name
