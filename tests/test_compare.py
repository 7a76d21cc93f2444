"""`agentrl compare`: per-run and per-method held-out success, paired differences to a baseline.

Fake training runs written with the store API (no model): 8 eval tasks, one episode each, at
iteration 0 (before: 2 of 8 won) and at iteration 2 (the last eval), where the wins are chosen:
- grpo, seed s: wins tasks 0 .. 3+s      (4/8, 5/8, 6/8: mean 62.5%)
- gigpo, seed s: wins every task         (diff to grpo: 4 + 3 + 2 = 9 of 24 pairs +1, the rest 0)
- rloo, seed s: wins the last 4+s tasks  (same rate as grpo, the other tasks: diffs +1 / -1 balanced)
"""

import json

import pytest

from agentrl.compare import RunSummary, fmt_diff, paired_diffs, summarise_methods, task_wins
from agentrl.config import recipe_from_dict, recipe_to_yaml
from agentrl.stats import mean_interval, wilson
from agentrl.store import EpisodeRecord, StepRecord, open_store
from tests.conftest import one_line_error, run_cli

TASKS = [f"toy/pick-4/seed-{1000 + i}" for i in range(8)]
WINS = {
    "grpo": lambda s: set(range(4 + s)),
    "gigpo": lambda s: set(range(8)),
    "rloo": lambda s: set(range(4 - s, 8)),
}


def _episode(task, won, split="eval", iteration=0, steps=0):
    return EpisodeRecord(
        task_id=task,
        group_id=f"g/{task}",
        env="toy",
        split=split,
        iteration=iteration,
        seed=0,
        won=won,
        ret=float(won),
        steps=[StepRecord(t, "o", "a", 0.0, action_ids=[1, 2, 3, 4, 5]) for t in range(steps)],
    )


def _train_run(store, method, seed, suite="toy-pick", name=None) -> int:
    recipe = recipe_from_dict({"name": "r", "seed": seed, "env": {"suite": suite}, "credit": {"method": method}})
    run = store.create_run(name or f"{method}-s{seed}", recipe_to_yaml(recipe), kind="train")
    for i, task in enumerate(TASKS):
        store.write_episode(_episode(task, i < 2, iteration=0), run)
        store.write_episode(_episode(task, i in WINS[method](seed), iteration=2), run)
    store.add_iteration(run, 0, {"eval_success": 0.25}, {"eval": 1.0})
    for it in (1, 2):
        store.write_episode(_episode(TASKS[0], True, split="train", iteration=it, steps=2), run)
        store.add_iteration(run, it, {"success": 1.0, "tokens": 1000.0}, {"rollout": 10.0, "total": 30.0 * it})
    store.set_run_status(run, "finished")
    return run


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("compare") / "runs.db"
    store = open_store(path)
    ids = {(m, s): _train_run(store, m, s) for m in ("grpo", "gigpo", "rloo") for s in range(3)}
    ids["chain"] = _train_run(store, "grpo", 0, suite="toy-chain", name="chain")
    ids["eval"] = store.create_run("evalrun", "name: evalrun\n", kind="eval")
    store.write_episode(_episode(TASKS[0], True), ids["eval"])
    bare = recipe_to_yaml(recipe_from_dict({"env": {"suite": "toy-pick"}}))
    ids["noeval"] = store.create_run("noeval", bare, "train")  # no eval episodes at all
    store.close()
    return path, ids


def _refs(ids, *methods, seeds=range(3)):
    return [str(ids[(m, s)]) for m in methods for s in seeds]


def _json(db, capsys, *args):
    path, _ = db
    code, out, err = run_cli(["compare", *args, "--db", str(path), "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


def _by_method(data):
    return {m["method"]: m for m in data["methods"]}


def test_task_wins_and_pairs():
    assert task_wins([("a", True), ("a", False), ("b", True)]) == {"a": 0.5, "b": 1.0}
    base = [RunSummary(1, "b", "grpo", 0, "s", tasks={"a": 0.0, "b": 1.0}), RunSummary(2, "b", "grpo", 1, "s")]
    other = [RunSummary(3, "o", "x", 0, "s", tasks={"a": 1.0, "b": 1.0, "c": 1.0}), RunSummary(4, "o", "x", 7, "s")]
    assert paired_diffs(other, base) == ([1.0, 0.0], [0])  # seed 7 has no baseline, task c no pair
    assert fmt_diff(None) == "baseline"


def test_single_run_method_uses_wilson():
    r = RunSummary(1, "a", "grpo", 0, "s", eval_iteration=2, eval_won=3, eval_episodes=8)
    (m,) = summarise_methods([r], "grpo")
    assert (m["interval"], m["n"], m["success_mean"]) == ("wilson", 1, 3 / 8)
    assert (m["success_lo"], m["success_hi"]) == pytest.approx(wilson(3, 8))


def test_methods_means_and_paired_differences(db, capsys):
    data = _json(db, capsys, *_refs(db[1], "grpo", "gigpo", "rloo"))
    assert data["baseline"] == "grpo" and data["suite"] == "toy-pick" and data["png"] is None
    assert [r["success"] for r in data["runs"][:3]] == [0.5, 0.625, 0.75]
    assert all(r["before"] == 0.25 and r["eval_iteration"] == 2 for r in data["runs"])
    m = _by_method(data)
    mean, lo, hi = mean_interval([0.5, 0.625, 0.75])
    g = m["grpo"]
    assert (g["success_mean"], g["success_lo"], g["success_hi"]) == pytest.approx((mean, lo, hi))
    assert m["grpo"]["interval"] == "t" and m["grpo"]["diff"] is None and m["grpo"]["seeds"] == [0, 1, 2]
    assert m["gigpo"]["success_mean"] == 1.0
    # gigpo wins every task grpo loses: 9 of 24 pairs +1, none -1 -> the interval excludes 0
    d = m["gigpo"]["diff"]
    assert d["pairs"] == 24 and d["seeds"] == [0, 1, 2] and d["mean"] == pytest.approx(9 / 24)
    assert 0 < d["lo"] < d["mean"] < d["hi"]
    # rloo: the same rates, other tasks -> mean 0, the interval includes 0
    d = m["rloo"]["diff"]
    assert d["pairs"] == 24 and d["mean"] == pytest.approx(0.0) and d["lo"] < 0 < d["hi"]
    assert m["rloo"]["success_mean"] == pytest.approx(0.625)
    # wall = sum of the iterations' wall `total` (30 + 60 s); tokens: update `tokens`, action ids of train steps
    assert m["grpo"]["wall_s_mean"] == 90.0
    assert m["grpo"]["update_tokens_mean"] == 2000.0 and m["grpo"]["gen_tokens_mean"] == 20.0
    assert data["runs"][0]["train_episodes"] == 2


def test_baseline_option(db, capsys):
    ids = db[1]
    data = _json(db, capsys, *_refs(ids, "grpo", "gigpo"), "--baseline", str(ids[("gigpo", 1)]))
    m = _by_method(data)
    assert data["baseline"] == "gigpo" and [x["method"] for x in data["methods"]] == ["gigpo", "grpo"]
    assert m["grpo"]["diff"]["mean"] == pytest.approx(-9 / 24) and m["grpo"]["diff"]["hi"] < 0


def test_table_and_png(db, capsys, tmp_path, monkeypatch):
    path, ids = db
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["compare", *_refs(ids, "grpo", "gigpo"), "--db", str(path)], capsys)
    assert code == 0, err
    print(out)  # shown with -s
    assert "runs on toy-pick" in out and "methods (baseline grpo)" in out
    assert "62.5% [31.4, 93.6]" in out  # grpo: mean over seeds, t interval
    assert "+37.5 [" in out and "n=24" in out  # gigpo vs grpo
    assert out.strip().splitlines()[-1] == "wrote compare.png"
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_with_output_writes_png(db, capsys, tmp_path):
    ids = db[1]
    png = tmp_path / "c.png"
    data = _json(db, capsys, str(ids[("grpo", 0)]), str(ids[("rloo", 0)]), "-o", str(png))
    assert data["png"] == str(png) and png.stat().st_size > 0
    m = _by_method(data)
    assert m["grpo"]["interval"] == "wilson" and m["rloo"]["diff"]["pairs"] == 8


@pytest.mark.parametrize(
    "refs, needle",
    [
        (["nosuchrun"], "no run 'nosuchrun'"),
        (["evalrun"], "not a train run"),
        (["EVAL_ID"], "not a training run"),
        (["GRPO0", "chain"], "different suites"),
        (["GRPO0", "GRPO0"], "given twice"),
        (["noeval"], "no held-out eval after training"),
        (["GRPO0", "--baseline", "GIGPO0"], "none of the runs compared"),
        (["GRPO0", "-o", "x.txt"], ".png"),
    ],
)
def test_errors(db, capsys, refs, needle):
    path, ids = db
    subst = {"EVAL_ID": str(ids["eval"]), "GRPO0": str(ids[("grpo", 0)]), "GIGPO0": str(ids[("gigpo", 0)])}
    code, _, err = run_cli(["compare", *[subst.get(r, r) for r in refs], "--db", str(path)], capsys)
    one_line_error(code, err, needle)
