"""Suites: bundled YAML files load with the documented splits; malformed files give one-line errors."""

import os
from pathlib import Path

import pytest
import yaml

from agentrl.envs.suites import BUILTIN_SUITES, list_suites, load_suite, suite_dirs
from agentrl.envs.toy import ToyEnv
from agentrl.errors import UserError


@pytest.fixture
def bundled(monkeypatch):
    monkeypatch.delenv("AGENTRL_ENVS_DIR", raising=False)


def test_bundled_suites(bundled):
    import agentrl

    assert suite_dirs()[0] == BUILTIN_SUITES == Path(agentrl.__file__).resolve().parent / "suites"  # package data
    names = {s.name for s in list_suites()}
    assert {"textworld-w2-o3-q4", "tw-coin-l1", "tw-quick", "toy-pick", "toy-chain"} <= names
    s = load_suite("textworld-w2-o3-q4")
    assert s.env == "textworld" and s.description
    assert len(s.train) == 64 and len(s.eval) == 64
    assert (s.train[0], s.train[-1]) == ("textworld/w2-o3-q4/seed-0", "textworld/w2-o3-q4/seed-63")
    assert (s.eval[0], s.eval[-1]) == ("textworld/w2-o3-q4/seed-1000", "textworld/w2-o3-q4/seed-1063")
    pick = load_suite("toy-pick")
    assert pick.train[5] == "toy/pick-4/seed-5" and len(pick.eval) == 32
    assert load_suite("toy-chain").train[0] == "toy/chain-3/seed-0"
    assert load_suite("tw-coin-l1").train[0] == "textworld/tw-coin_collector-l1/seed-0"


def test_bundled_task_ids_are_well_formed(bundled):
    for suite in list_suites():
        if suite.env == "textworld":
            textworld = pytest.importorskip("agentrl.envs.textworld")
            for task in suite.train + suite.eval:
                textworld.parse_task(task)  # raises on an ill-formed id
        elif suite.env == "toy":
            env = ToyEnv()
            for task in suite.train[:3] + suite.eval[:3]:
                assert env.reset(task).admissible


def test_unknown_suite_lists_known(bundled):
    with pytest.raises(UserError) as e:
        load_suite("no-such-suite")
    msg = str(e.value)
    assert "no-such-suite" in msg and "toy-pick" in msg and "tw-quick" in msg and "\n" not in msg


def _write(folder, stem, **data):
    (folder / f"{stem}.yaml").write_text(yaml.safe_dump({"name": stem, "env": "toy", **data}))


def test_split_forms_and_envs_dir_search_path(suites_dir, tmp_path, monkeypatch):
    _write(
        suites_dir,
        "mine",
        description="d",
        train={"pattern": "toy/chain-2/seed-{i}", "seed_list": [4, 9, 2]},
        eval={"tasks": ["toy/pick-2/seed-1", "toy/chain-1/seed-0"]},
    )
    s = load_suite("mine")
    assert s.train == ["toy/chain-2/seed-4", "toy/chain-2/seed-9", "toy/chain-2/seed-2"]
    assert s.eval == ["toy/pick-2/seed-1", "toy/chain-1/seed-0"]
    names = [x.name for x in list_suites()]
    assert "mine" in names and "toy-pick" in names  # AGENTRL_ENVS_DIR adds to the built-in suites
    assert load_suite(str(suites_dir / "mine.yaml")).train == s.train  # a path works too
    # a search path: the first folder that has a name wins, over the built-ins too
    other = tmp_path / "other"
    other.mkdir()
    _write(other, "mine", train={"tasks": ["toy/pick-3/seed-0"]}, eval={"tasks": ["toy/pick-3/seed-1"]})
    _write(other, "toy-pick", train={"tasks": ["toy/pick-2/seed-0"]}, eval={"tasks": ["toy/pick-2/seed-1"]})
    monkeypatch.setenv("AGENTRL_ENVS_DIR", os.pathsep.join([str(suites_dir), str(other)]))
    assert load_suite("mine").train == s.train and load_suite("mine").path == suites_dir / "mine.yaml"
    assert load_suite("toy-pick").train == ["toy/pick-2/seed-0"]  # shadows the built-in
    assert [x.name for x in list_suites()].count("mine") == 1
    with pytest.raises(UserError, match=f"searched {suites_dir}"):
        load_suite("nope")


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"train": {"pattern": "toy/pick-2/seed-{i}", "seeds": [5, 1]}}, "first <= last"),
        ({"train": {"pattern": "toy/pick-2/seed-{i}", "seeds": [0, 1, 2]}}, "inclusive range"),
        ({"train": {"pattern": "toy/pick-2/seed", "seeds": [0, 3]}}, "{i}"),
        ({"train": {"pattern": "toy/pick-2/seed-{i}"}}, "exactly one of"),
        ({"train": {"pattern": "toy/pick-2/seed-{i}", "seeds": [0, 3], "extra": 1}}, "extra"),
        (
            {"train": {"pattern": "toy/pick-2/seed-{i}", "seeds": [0, 3]}, "eval": {"tasks": ["toy/pick-2/seed-2"]}},
            "both train and eval",
        ),
        ({"train": {"pattern": "textworld/w2-o3-q4/seed-{i}", "seeds": [0, 3]}}, "does not belong to env 'toy'"),
        ({"name": "other"}, "name must be 'bad'"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_malformed_suites(suites_dir, data, needle):
    base = {
        "train": {"pattern": "toy/pick-2/seed-{i}", "seeds": [0, 1]},
        "eval": {"pattern": "toy/pick-2/seed-{i}", "seeds": [10, 11]},
    }
    _write(suites_dir, "bad", **{**base, **data})
    with pytest.raises(UserError) as e:
        load_suite("bad")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_unreadable_yaml(suites_dir):
    (suites_dir / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="cannot read suite file"):
        load_suite("broken")
