"""Training on a real three-node Ray cluster (`.ci/ray-cluster`: head + two workers, each in its own
network namespace): actors on every node, the local backend's result, a killed node, a killed driver.

Skipped unless AGENTRL_RAY_ADDRESS is set; run as a driver on the head node:

    .ci/ray-cluster up
    .ci/ray-cluster exec .venv/bin/python -m pytest -q -m ray_cluster tests/test_ray_cluster_train.py
    .ci/ray-cluster down
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

from conftest import AGENTRL, run_cli
from test_ray_cluster import pytestmark  # noqa: F401  (skipped unless the cluster is up)
from test_train import _pick_suite, _recipe, wait_for_episodes

NODE_IPS = {"198.18.0.2", "198.18.0.3", "198.18.0.4"}
CLUSTER = str(Path(__file__).resolve().parent.parent / ".ci" / "ray-cluster")
RUNTIME = {"backend": "ray", "env_workers": 3, "engines": 3, "engine_resources": {"CPU": 0.5}}
GROUPS, SIZE = 4, 4


def _train_recipe(d, model_dir, backend="ray", iterations=2):
    return _recipe(
        d,
        model_dir,
        train={"iterations": iterations, "eval_every": 0, "checkpoint_every": 1, "output_dir": str(d / "ckpt")},
        rollout={"groups_per_iteration": GROUPS, "group_size": SIZE},
        eval={"episodes": 8},
        runtime={**RUNTIME, "backend": backend},
    )


def _steps(db):
    import numpy as np

    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT e.split, e.iteration, e.group_id, json_extract(e.info, '$.sample'), s.t, s.action, s.reward, "
        "s.action_ids, s.logprobs FROM episodes e JOIN steps s ON s.episode_id = e.id "
        "ORDER BY e.split, e.iteration, e.group_id, json_extract(e.info, '$.sample'), s.t"
    ).fetchall()
    con.close()
    return [(r[:8], np.frombuffer(r[8], "<f4")) for r in rows]


def _nodes(db, kind):
    con = sqlite3.connect(db)
    got = {json.loads(n)[kind] for (n,) in con.execute("SELECT json_extract(info, '$.nodes') FROM episodes") if n}
    con.close()
    return got


def test_actors_on_every_node_and_the_local_result(tmp_path, suites_dir, tiny_model_dir, capsys):
    _pick_suite(suites_dir)
    dbs = {}
    for backend in ("local", "ray"):
        d = tmp_path / backend
        d.mkdir()
        code, _, err = run_cli(
            ["train", str(_train_recipe(d, tiny_model_dir, backend)), "--db", str(d / "r.db"), "--no-progress"], capsys
        )
        assert code == 0, err[-3000:]
        dbs[backend] = d / "r.db"
    assert _nodes(dbs["ray"], "env") == NODE_IPS  # env actors on all three nodes
    assert _nodes(dbs["ray"], "engine") == NODE_IPS  # engines too
    local, remote = _steps(dbs["local"]), _steps(dbs["ray"])
    assert len(local) == len(remote) > 0
    for (a, la), (b, lb) in zip(local, remote):
        assert a == b  # same episodes, actions, rewards, token ids
        assert abs(la - lb).max() < 1e-4  # log-probs up to float rounding (other processes, other threads)


def _start(recipe, db, suites_dir):
    env = {**os.environ, "AGENTRL_ENVS_DIR": str(suites_dir)}
    return subprocess.Popen(
        [*AGENTRL, "train", str(recipe), "--db", str(db), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )


def _check_complete(db, iterations):
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    per_iter = dict(con.execute("SELECT iteration, count(*) FROM episodes WHERE split='train' GROUP BY iteration"))
    assert per_iter == {i: GROUPS * SIZE for i in range(1, iterations + 1)}  # nothing lost
    dup = con.execute(
        "SELECT max(c) FROM (SELECT count(*) c FROM episodes "
        "GROUP BY split, iteration, group_id, json_extract(info, '$.sample'))"
    ).fetchone()[0]
    assert dup == 1  # nothing duplicated
    assert con.execute("SELECT status FROM runs WHERE id=1").fetchone()[0] == "finished"
    errors = con.execute("SELECT count(*), group_concat(DISTINCT error) FROM episodes WHERE status='error'").fetchone()
    con.close()
    return errors


def test_a_killed_worker_node_ends_only_its_episodes(tmp_path, suites_dir, tiny_model_dir):
    """SIGKILL node w2 (its raylet and workers) mid-rollout: env episodes in flight there end as `error`
    (with the reason), its engine's batch is retried on a new engine, the run finishes its iterations."""
    _pick_suite(suites_dir)
    db = tmp_path / "r.db"
    proc = _start(_train_recipe(tmp_path, tiny_model_dir, iterations=3), db, suites_dir)
    try:
        wait_for_episodes(proc, db, 2, 3, timeout=300)
        subprocess.run([CLUSTER, "kill-node", "w2", "--wait"], check=True, capture_output=True, timeout=120)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-3000:]
        n_err, why = _check_complete(db, 3)
        assert n_err == 0 or "actor" in why or "died" in why, why
        con = sqlite3.connect(db)
        served = {
            it: {v for (n,) in rows for v in json.loads(n).values()}
            for it in (1, 3)
            for rows in [
                con.execute(
                    "SELECT json_extract(info, '$.nodes') FROM episodes WHERE split='train' AND iteration=?", (it,)
                ).fetchall()
            ]
        }
        con.close()
        assert "198.18.0.4" in served[1]  # w2 served episodes before it was killed
        assert "198.18.0.4" not in served[3] and served[3]  # and none after: the run went on without it
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run([CLUSTER, "start-node", "w2"], check=True, capture_output=True, timeout=120)


def test_sigkilled_driver_resumes(tmp_path, suites_dir, tiny_model_dir, capsys):
    """SIGKILL the driver mid-rollout (its actors go with it); `train --resume` finishes the run with
    every episode stored once."""
    _pick_suite(suites_dir)
    db = tmp_path / "r.db"
    proc = _start(_train_recipe(tmp_path, tiny_model_dir, iterations=3), db, suites_dir)
    try:
        wait_for_episodes(proc, db, 2, 5, timeout=300)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    code, _, err = run_cli(["train", "--resume", "1", "--db", str(db), "--no-progress"], capsys)
    assert code == 0, err[-3000:]
    n_err, why = _check_complete(db, 3)
    assert n_err == 0, why


def test_scripted_eval_on_the_cluster_is_identical(tmp_path, capsys):
    """Scripted policies: the ray backend (env actors on all three nodes) stores exactly the local
    backend's episodes."""
    from conftest import write_recipe

    recipe = write_recipe(tmp_path / "toy.yaml", "toy-chain", policy="random", runtime={"env_workers": 3})
    runs = {}
    for backend in ("local", "ray"):
        db = tmp_path / f"{backend}.db"
        code, _, err = run_cli(
            ["eval", str(recipe), "--db", str(db), "--no-progress", "--set", f"runtime.backend={backend}"], capsys
        )
        assert code == 0, err[-3000:]
        con = sqlite3.connect(db)
        runs[backend] = con.execute(
            "SELECT e.task_id, e.won, e.status, s.t, s.observation, s.action, s.reward, s.valid, s.anchor "
            "FROM episodes e JOIN steps s ON s.episode_id = e.id ORDER BY e.id, s.t"
        ).fetchall()
        con.close()
    assert runs["local"] == runs["ray"] and len(runs["local"]) > 0
    assert _nodes(tmp_path / "ray.db", "env") == NODE_IPS
