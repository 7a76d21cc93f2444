"""Issue 11: inputs a user gets wrong end as ONE clear line and exit 2, before any work is done
(no model loaded, no run row written). Cheap fixtures: scripted policies, toy suites, in-process CLI."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import one_line_error as _one_line_error
from conftest import run_cli, write_recipe

NO_MODEL = "/no/such/model/dir"  # train must refuse the input before it would try to load this


def _suite(
    d: Path,
    name="tiny",
    pattern="toy/pick-4/seed-{i}",
    train=(0, 3),
    eval_=(100, 103),
    env="toy",
    train_tasks=None,
    eval_tasks=None,
):
    data = {
        "name": name,
        "env": env,
        "description": "test suite",
        "train": {"tasks": train_tasks} if train_tasks is not None else {"pattern": pattern, "seeds": list(train)},
        "eval": {"tasks": eval_tasks} if eval_tasks is not None else {"pattern": pattern, "seeds": list(eval_)},
    }
    (d / f"{name}.yaml").write_text(yaml.safe_dump(data))


def _runs(db: Path) -> list[dict]:
    if not db.exists():
        return []
    from agentrl.store.db import open_store
    from agentrl.store.queries import list_runs

    store = open_store(db, create=False)
    try:
        return list_runs(store)
    finally:
        store.close()


def _train_recipe(tmp_path, suite="tiny", **sections):
    return write_recipe(
        tmp_path / "t.yaml",
        suite,
        policy="llm",
        model={"path": NO_MODEL},
        train={"iterations": 1, "eval_every": 0, "checkpoint_every": 1, "output_dir": str(tmp_path / "ckpt")},
        **sections,
    )


# ---------------------------------------------------------------- defect 6: run names


@pytest.mark.parametrize(
    "name,needle",
    [
        ("../../escape", "separator"),
        ("a" * 300, "100 characters"),
        ("", "empty"),
        ("two\nlines", "control"),
        ("tab\there", "control"),
        (".", "'.'"),
        ("..", "'..'"),
        ("back\\slash", "separator"),
    ],
)
def test_run_name_is_validated(tmp_path, capsys, suites_dir, name, needle):
    """Defect 6: run names not validated: '../../escape' wrote checkpoints outside output_dir, a
    300-character name failed only at the first checkpoint, empty and multi-line names were accepted."""
    _suite(suites_dir)
    db = tmp_path / "r.db"
    p = write_recipe(tmp_path / "r.yaml", "tiny", name=name)
    code, _, err = run_cli(["eval", str(p), "--db", str(db), "--no-progress"], capsys)
    line = _one_line_error(code, err, needle=needle)
    assert "'name'" in line
    assert _runs(db) == []
    # the same through --set, and for train (refused before the model would be loaded)
    if name and "\n" not in name and "\t" not in name:
        p = _train_recipe(tmp_path)
        code, _, err = run_cli(["train", str(p), "--set", f"name={name}", "--db", str(db), "--no-progress"], capsys)
        _one_line_error(code, err, needle=needle)
        assert _runs(db) == []
        assert not (tmp_path.parent / "escape-1").exists()


def test_run_name_checked_when_a_stored_recipe_is_reloaded(tmp_path, capsys, suites_dir):
    """Defect 6: a stored recipe with a bad name (written before names were checked) is refused on
    `train --resume` and `eval --run` too, before anything runs."""
    from agentrl.store.db import open_store

    _suite(suites_dir)
    db = tmp_path / "r.db"
    recipe = yaml.safe_load(_train_recipe(tmp_path).read_text())
    recipe["name"] = "../../escape"
    store = open_store(db)
    run_id = store.create_run("old", yaml.safe_dump(recipe), kind="train")
    (tmp_path / "cp").mkdir()
    store.add_checkpoint(run_id, 1, str(tmp_path / "cp"), {})
    store.close()
    code, _, err = run_cli(["train", "--resume", str(run_id), "--db", str(db), "--no-progress"], capsys)
    _one_line_error(code, err, needle="bad value for 'name'")
    code, _, err = run_cli(["eval", "--run", str(run_id), "--db", str(db), "--no-progress"], capsys)
    _one_line_error(code, err, needle="bad value for 'name'")
    assert len(_runs(db)) == 1


def test_good_names_still_work(tmp_path, capsys, suites_dir):
    """Defect 6: the check refuses only bad names: spaces, dots inside, unicode and 100 characters pass."""
    from agentrl.config import Recipe

    for ok in ("quick start", "v1.2", "экс-1", "a" * 100, "-x-"):
        assert Recipe.model_validate({"name": ok, "env": {"suite": "s"}}).name == ok


# ---------------------------------------------------------------- defect 7: bad task ids

BAD_IDS = [
    ("toy", "toy/pik-4/seed-{i}"),
    ("toy", "toy/pick-99/seed-{i}"),
    ("textworld", "textworld/w2-oX-q2/seed-{i}"),
    ("gym", "gym:NoSuchEnv-v0/seed-{i}"),
    ("gym", "gym:no_such_module_xyz:Foo-v0/seed-{i}"),
    ("alfworld", "alfworld/pick_and_place_simple/FloorPlan999/seed-{i}"),
    ("alfworld", "alfworld/pick_and_fly/FloorPlan1/seed-{i}"),
]


@pytest.mark.parametrize("env,pattern", BAD_IDS)
def test_bad_task_ids_refused_before_work(tmp_path, capsys, suites_dir, env, pattern):
    """Defect 7: bad task ids in a suite gave a silent 0% from `eval` (exit 0, 'errors 4'), from
    `train` (exit 0, 0.0% -> 0.0%), and `envs build` said '8 games ready'. Now: exit 2 naming the
    first bad id, before any work."""
    if env in ("textworld", "alfworld"):
        pytest.importorskip(env)
    _suite(suites_dir, pattern=pattern, env=env)
    first = pattern.replace("{i}", "0")
    db = tmp_path / "r.db"
    p = write_recipe(tmp_path / "r.yaml", "tiny")
    code, _, err = run_cli(["eval", str(p), "--db", str(db), "--no-progress"], capsys)
    _one_line_error(code, err, needle=first)
    p = _train_recipe(tmp_path)
    code, _, err = run_cli(["train", str(p), "--db", str(db), "--no-progress"], capsys)
    _one_line_error(code, err, needle=first)
    assert _runs(db) == []
    code, out, err = run_cli(["envs", "build", "tiny", "--workers", "1"], capsys)
    _one_line_error(code, err, needle=first)
    assert "ready" not in out


def test_good_task_ids_still_pass_the_check():
    """Defect 7: the per-adapter check accepts every adapter's valid ids (bundled suites included)."""
    from agentrl.envs.registry import check_tasks
    from agentrl.envs.suites import BUILTIN_SUITES, load_suite

    check_tasks(
        [
            "toy/pick-4/seed-0",
            "toy/chain-50/seed-3",
            "toy/echo/seed-1",
            "gym:agentrl/ToyText-v0/seed-2",
            "gym:agentrl/ToyText-v0",
            "gym:agentrl.envs.gymnasium_api:agentrl/Toy-v0/seed-1",
        ]
    )
    pytest.importorskip("textworld")
    for name in ("tw-quick", "textworld-w2-o3-q4", "tw-coin-l1"):
        s = load_suite(str(BUILTIN_SUITES / f"{name}.yaml"))
        check_tasks(s.train + s.eval)
    pytest.importorskip("alfworld")
    s = load_suite(str(BUILTIN_SUITES / "alfworld-small.yaml"))
    check_tasks(s.train + s.eval)


# ---------------------------------------------------------------- defect 8: empty splits


def test_empty_splits_refused(tmp_path, capsys, suites_dir):
    """Defect 8: an empty eval split made `eval` exit 1 (ZeroDivisionError: integer modulo by zero)
    and `train` exit 0 reporting 0.0% -> 0.0% from zero episodes. Now exit 2 'suite X has no eval
    tasks' (and 'no train tasks' for an empty train split in train)."""
    db = tmp_path / "r.db"
    _suite(suites_dir, name="noeval", eval_tasks=[])
    p = write_recipe(tmp_path / "r.yaml", "noeval")
    code, _, err = run_cli(["eval", str(p), "--db", str(db), "--no-progress"], capsys)
    _one_line_error(code, err, needle="suite noeval has no eval tasks")
    code, _, err = run_cli(["eval", str(p), "--episodes", "3", "--db", str(db), "--no-progress"], capsys)
    _one_line_error(code, err, needle="suite noeval has no eval tasks")
    code, _, err = run_cli(["train", str(_train_recipe(tmp_path, "noeval")), "--db", str(db)], capsys)
    _one_line_error(code, err, needle="suite noeval has no eval tasks")
    _suite(suites_dir, name="notrain", train_tasks=[])
    code, _, err = run_cli(["train", str(_train_recipe(tmp_path, "notrain")), "--db", str(db)], capsys)
    _one_line_error(code, err, needle="suite notrain has no train tasks")
    assert _runs(db) == []
    # an eval-only suite is still fine for eval
    code, _, err = run_cli(
        ["eval", str(write_recipe(tmp_path / "e.yaml", "notrain")), "--db", str(db), "--no-progress"], capsys
    )
    assert code == 0, err


# ---------------------------------------------------------------- defect 17: "unexpected" -> exit 2


@pytest.mark.parametrize(
    "item,needle",
    [
        ("env.step_timeout=.inf", "env.step_timeout"),
        ("learner.lr=.nan", "learner.lr"),
        ("env.invalid_penalty=-.inf", "env.invalid_penalty"),
        ("credit.alpha=.inf", "credit"),
    ],
)
def test_non_finite_floats_rejected(tmp_path, capsys, suites_dir, item, needle):
    """Defect 17: `--set env.step_timeout=.inf` passed validation and ended as an 'unexpected' exit 1;
    non-finite floats are now rejected by the recipe validation (exit 2)."""
    _suite(suites_dir)
    db = tmp_path / "r.db"
    p = write_recipe(tmp_path / "r.yaml", "tiny")
    code, _, err = run_cli(["eval", str(p), "--set", item, "--db", str(db), "--no-progress"], capsys)
    line = _one_line_error(code, err, needle=needle)
    assert "finite" in line
    assert _runs(db) == []


def test_binary_recipe_file(tmp_path, capsys):
    """Defect 17: a binary recipe file raised UnicodeDecodeError (exit 1 'unexpected'); now one line, exit 2."""
    p = tmp_path / "model.yaml"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\xfd" * 20)
    code, _, err = run_cli(["eval", str(p), "--db", str(tmp_path / "r.db")], capsys)
    _one_line_error(code, err, needle=str(p))
    assert "utf-8" in err.lower()


def test_binary_suite_file(tmp_path, capsys, suites_dir):
    """Defect 17: a binary suite file is a one-line input error too (exit 2), not UnicodeDecodeError."""
    (suites_dir / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage\x80\x81")
    p = write_recipe(tmp_path / "r.yaml", "bin")
    code, _, err = run_cli(["eval", str(p), "--db", str(tmp_path / "r.db")], capsys)
    _one_line_error(code, err, needle="bin.yaml")


def test_export_to_missing_directory(tmp_path, capsys, suites_dir):
    """Defect 17: `export 1 -o /nonexistent/dir/x.jsonl` ended as an unexpected exit 1; now exit 2 naming the path."""
    _suite(suites_dir)
    db = str(tmp_path / "r.db")
    code, _, err = run_cli(
        ["eval", str(write_recipe(tmp_path / "r.yaml", "tiny")), "--db", db, "--no-progress"], capsys
    )
    assert code == 0, err
    target = tmp_path / "nonexistent" / "dir" / "x.jsonl"
    code, _, err = run_cli(["export", "1", "-o", str(target), "--db", db], capsys)
    _one_line_error(code, err, needle=str(target))
    code, _, err = run_cli(["export", "1", "-o", str(tmp_path / "ok.jsonl"), "--db", db], capsys)
    assert code == 0, err
    assert len((tmp_path / "ok.jsonl").read_text().splitlines()) >= 4  # (a header line, then 4 episodes)


def test_cuda_device_without_cuda(tmp_path, capsys, suites_dir, monkeypatch):
    """Defect 17: `--set model.device=cuda` on a CPU-only torch failed while moving the model (exit 1
    'unexpected'); now exit 2 'CUDA is not available', checked before a model is loaded."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine with a GPU
    import agentrl.policy.model as model_mod

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the device was checked")

    _suite(suites_dir)
    db = tmp_path / "r.db"
    p = write_recipe(tmp_path / "r.yaml", "tiny", policy="llm", model={"path": NO_MODEL})
    monkeypatch.setattr(model_mod, "load_model", no_load)
    for dev in ("cuda", "cuda:1"):
        code, _, err = run_cli(
            ["eval", str(p), "--set", f"model.device={dev}", "--db", str(db), "--no-progress"], capsys
        )
        _one_line_error(code, err, needle="CUDA is not available")
        code, _, err = run_cli(
            ["train", str(p), "--set", f"model.device={dev}", "--db", str(db), "--no-progress"], capsys
        )
        _one_line_error(code, err, needle="CUDA is not available")
    # a scripted policy loads no model: the device setting does not matter there
    code, _, err = run_cli(
        ["eval", str(p), "--set", "policy=random", "--set", "model.device=cuda", "--db", str(db), "--no-progress"],
        capsys,
    )
    assert code == 0, err
    assert len(_runs(db)) == 1


# ---------------------------------------------------------------- defect 18: --set typing and attribution


def test_booleans_are_not_integers(tmp_path, capsys, suites_dir):
    """Defect 18: `--set seed=true` was stored as `seed: 1`; booleans are now refused for numbers,
    and the error names the override (`--set seed=true: ...`), not the recipe file."""
    _suite(suites_dir)
    db = tmp_path / "r.db"
    p = write_recipe(tmp_path / "r.yaml", "tiny")
    for item, key in [
        ("seed=true", "seed"),
        ("rollout.group_size=yes", "rollout.group_size"),
        ("env.step_timeout=false", "env.step_timeout"),
        ("learner.layers=[true]", "learner.layers"),
    ]:
        code, _, err = run_cli(["eval", str(p), "--set", item, "--db", str(db), "--no-progress"], capsys)
        line = _one_line_error(code, err, needle=key)
        assert line.startswith(f"error: --set {item}: "), line
        assert str(p) not in line
    # in the file itself the file is named
    p2 = write_recipe(tmp_path / "b.yaml", "tiny", seed=True)
    code, _, err = run_cli(["eval", str(p2), "--db", str(db), "--no-progress"], capsys)
    line = _one_line_error(code, err, needle="'seed'")
    assert line.startswith(f"error: {p2}: "), line
    assert _runs(db) == []


def test_override_errors_name_the_override(tmp_path, capsys, suites_dir):
    """Defect 18: `--set` errors were attributed to the recipe file instead of the override."""
    _suite(suites_dir)
    p = write_recipe(tmp_path / "r.yaml", "tiny")
    db = str(tmp_path / "r.db")
    for item in ("rollout.group_size=0", "rollout.gruop_size=4", "env.max_steps=many", "policy=telepathy"):
        code, _, err = run_cli(["eval", str(p), "--set", item, "--db", db], capsys)
        line = _one_line_error(code, err)
        assert line.startswith(f"error: --set {item}: "), line
    # a file error stays the file's even with (good) overrides
    bad = write_recipe(tmp_path / "bad.yaml", "tiny", rollout={"gruop_size": 4})
    code, _, err = run_cli(["eval", str(bad), "--set", "seed=3", "--db", db], capsys)
    line = _one_line_error(code, err, needle="rollout.gruop_size")
    assert line.startswith(f"error: {bad}: "), line


def test_numbers_accepted_for_string_keys(tmp_path, capsys, suites_dir):
    """Defect 18: `--set name=123` was refused (YAML read it as an int); string keys take it as text."""
    from agentrl.config import Recipe, load_recipe

    _suite(suites_dir)
    db = tmp_path / "r.db"
    p = write_recipe(tmp_path / "r.yaml", "tiny")
    code, _, err = run_cli(["eval", str(p), "--set", "name=123", "--db", str(db), "--no-progress"], capsys)
    assert code == 0, err
    assert [r["name"] for r in _runs(db)] == ["123"]
    assert load_recipe(p, ["name=007"]).name == "007"  # the text as typed, not int 7
    assert load_recipe(p, ["name=true"]).name == "true"
    assert load_recipe(p, ["rollout.system_prompt=null"]).rollout.system_prompt is None
    assert load_recipe(p, ["seed=3"]).seed == 3
    assert Recipe.model_validate({"name": 42, "env": {"suite": "s"}}).name == "42"  # `name: 42` in a file


# ---------------------------------------------------------------- defect 19: envs list with a broken suite


def test_envs_list_with_a_broken_suite(tmp_path, capsys, suites_dir):
    """Defect 19: `envs list` with one invalid suite file in the folder exited 2 and listed nothing;
    now it lists the valid suites, flags the broken file with the reason, and exits 0."""
    _suite(suites_dir, name="good")
    (suites_dir / "broken.yaml").write_text("name: [unclosed\n")
    (suites_dir / "wrong.yaml").write_text(yaml.safe_dump({"name": "other", "env": "toy"}))
    code, out, err = run_cli(["envs", "list"], capsys)
    assert code == 0, err
    assert "good" in out
    assert "broken.yaml" in err and "wrong.yaml" in err and "name must be 'wrong'" in err
    assert len([line for line in err.splitlines() if line.strip()]) == 2  # one warning line per broken file
    code, out, err = run_cli(["envs", "list", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    names = [s["name"] for s in data["suites"]]
    assert "good" in names and "tw-quick" in names  # AGENTRL_ENVS_DIR adds to the built-in suites
    assert sorted(Path(x["file"]).name for x in data["invalid"]) == ["broken.yaml", "wrong.yaml"]
    assert all(x["error"] for x in data["invalid"])
