"""Resume is exact (issue 11, defects 4 and 5)."""

import json
import os
import sqlite3
import subprocess

from conftest import AGENTRL, run_cli
from test_train import _pick_suite, _recipe, kill_during_rollout

COLS = (
    "e.iteration, e.split, e.group_id, json_extract(e.info, '$.sample'), e.won, s.t, s.action, s.action_ids, s.logprobs"
)


def _episodes(db):
    con = sqlite3.connect(db)
    rows = con.execute(
        f"SELECT {COLS} FROM episodes e JOIN steps s ON s.episode_id = e.id "
        "ORDER BY e.iteration, e.split, e.group_id, 4, s.t"
    ).fetchall()
    its = [json.loads(m) for (m,) in con.execute('SELECT metrics FROM iterations ORDER BY "index"')]
    con.close()
    return rows, its


def test_killed_and_resumed_run_equals_the_uninterrupted_one(tmp_path, suites_dir, tiny_model_dir, capsys):
    """Defect 5: the same seed uninterrupted and killed (SIGKILL mid-rollout of iteration 2, before
    any checkpoint: checkpoint_every is 2) then `--resume`d gave different runs, because the
    policy's sampling generator was re-seeded from recipe.seed. Now every episode's sampling
    depends only on (seed, iteration, group, sample), so the two runs store identical episodes."""
    _pick_suite(suites_dir)
    recipe = _recipe(
        tmp_path,
        tiny_model_dir,
        train={"iterations": 3, "checkpoint_every": 2},
        rollout={"group_size": 4, "groups_per_iteration": 16},
        eval={"episodes": 8},
    )
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    code, _, err = run_cli(["train", str(recipe), "--db", a, "--no-progress"], capsys)
    assert code == 0, err[-2000:]
    env = {**os.environ, "AGENTRL_ENVS_DIR": str(suites_dir)}
    proc = subprocess.Popen(
        [*AGENTRL, "train", str(recipe), "--db", b, "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    kill_during_rollout(proc, b, 2, 5)
    partial = sqlite3.connect(b).execute("SELECT count(*) FROM episodes WHERE iteration=2 AND split='train'")
    assert 5 <= partial.fetchone()[0] < 64
    code, _, err = run_cli(["train", "--resume", "1", "--db", b, "--no-progress"], capsys)
    assert code == 0, err[-2000:]
    rows_a, its_a = _episodes(a)
    rows_b, its_b = _episodes(b)
    assert len(rows_a) == len(rows_b) > 0
    for ra, rb in zip(rows_a, rows_b):
        assert ra[:8] == rb[:8]  # same episodes, actions and generated token ids
        la, lb = [list(memoryview(x).cast("f")) if x else [] for x in (ra[8], rb[8])]
        assert all(abs(x - y) <= 1e-5 for x, y in zip(la, lb)) and len(la) == len(lb)
    for ma, mb in zip(its_a, its_b):
        for k in ("success", "loss", "eval_success"):
            if k in ma:
                assert abs(ma[k] - mb[k]) <= 1e-5, (k, ma, mb)


def test_resume_of_a_finished_run_is_an_input_error(tmp_path, suites_dir, tiny_model_dir, capsys):
    """Defect 4: `train --resume` of a finished run died with UnboundLocalError and marked the run
    failed. Now: exit 2 naming the iterations, status untouched; a RECIPE given with --resume is
    an error, not silently ignored."""
    _pick_suite(suites_dir)
    recipe = _recipe(
        tmp_path,
        tiny_model_dir,
        train={"iterations": 1, "checkpoint_every": 1},
        rollout={"group_size": 2, "groups_per_iteration": 2},
        eval={"episodes": 2},
    )
    db = str(tmp_path / "r.db")
    code, _, err = run_cli(["train", str(recipe), "--db", db, "--no-progress"], capsys)
    assert code == 0, err[-2000:]
    code, _, err = run_cli(["train", "--resume", "1", "--db", db, "--no-progress"], capsys)
    assert code == 2 and "already finished its 1 iterations" in err and "Traceback" not in err, err
    assert sqlite3.connect(db).execute("SELECT status FROM runs WHERE id=1").fetchone()[0] == "finished"
    code, _, err = run_cli(["train", str(recipe), "--resume", "1", "--db", db, "--no-progress"], capsys)
    assert code == 2 and "--resume" in err, err
    # raising the iteration count continues it
    code, _, err = run_cli(
        ["train", "--resume", "1", "--set", "train.iterations=2", "--db", db, "--no-progress"], capsys
    )
    assert code == 0, err[-2000:]
    n = sqlite3.connect(db).execute("SELECT count(*) FROM episodes WHERE iteration=2 AND split='train'")
    assert n.fetchone()[0] == 4
