"""Crash safety and concurrent readers: SIGKILL mid-run, inspect while a run writes, replay."""

import os
import signal
import sqlite3
import subprocess
import time

import yaml
from conftest import AGENTRL, run_cli, write_recipe


def _long_toy_suite(d, n=50000):
    (d / "long.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "long",
                "env": "toy",
                "description": "many chain episodes",
                "train": {"pattern": "toy/chain-8/seed-{i}", "seeds": [50000, 50009]},
                "eval": {"pattern": "toy/chain-8/seed-{i}", "seeds": [0, n - 1]},
            }
        )
    )


def _count(db, sql):
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def _start_eval(tmp_path, suites_dir):
    _long_toy_suite(suites_dir)
    recipe = write_recipe(tmp_path / "long.yaml", "long", env={"max_steps": 12, "workers": 1})
    db = str(tmp_path / "runs.db")
    env = {**os.environ, "AGENTRL_ENVS_DIR": str(suites_dir)}
    proc = subprocess.Popen(
        [*AGENTRL, "eval", str(recipe), "--db", db, "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    return proc, db, env


def _wait_for_episodes(db, proc, n, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"eval ended early: {proc.stderr.read().decode()}")
        if os.path.exists(db):
            try:
                if _count(db, "SELECT count(*) FROM episodes") >= n:
                    return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    raise AssertionError("no episodes written in time")


def test_sigkill_mid_eval_keeps_finished_episodes(tmp_path, suites_dir, capsys):
    proc, db, _ = _start_eval(tmp_path, suites_dir)
    try:
        _wait_for_episodes(db, proc, 20)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n_eps = con.execute("SELECT count(*) FROM episodes").fetchone()[0]
    assert 20 <= n_eps < 50000
    # every stored episode is whole: its step rows match its length
    bad = con.execute("""SELECT e.id FROM episodes e LEFT JOIN steps s ON s.episode_id = e.id
                         GROUP BY e.id HAVING count(s.id) != e.length""").fetchall()
    assert bad == []
    con.close()
    code, out, err = run_cli(["runs", "--db", db, "--json"], capsys)
    assert code == 0, err
    runs = yaml.safe_load(out)
    assert runs[0]["status"] == "unfinished" and runs[0]["episodes"] == n_eps


def test_inspect_while_eval_writes(tmp_path, suites_dir):
    proc, db, env = _start_eval(tmp_path, suites_dir)
    try:
        _wait_for_episodes(db, proc, 5)
        for _ in range(3):
            r = subprocess.run(
                [*AGENTRL, "inspect", "1", "--db", db, "--json"], capture_output=True, text=True, env=env, timeout=60
            )
            assert "locked" not in r.stderr, r.stderr
            assert r.returncode == 0, r.stderr
            r = subprocess.run([*AGENTRL, "runs", "--db", db], capture_output=True, text=True, env=env, timeout=60)
            assert r.returncode == 0 and "locked" not in r.stderr, r.stderr
        assert proc.poll() is None, "the writer should still be running while we read"
    finally:
        proc.send_signal(signal.SIGTERM)  # the CLI process only: it shuts its env workers down itself
        proc.wait(timeout=90)
    # SIGTERM is a clean interrupt: the run is marked interrupted
    assert _count(db, "SELECT status FROM runs WHERE id = 1") == "interrupted"


def test_replay_matches_and_detects_tampering(tmp_path, suites_dir, capsys):
    (suites_dir / "chain.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "chain",
                "env": "toy",
                "description": "",
                "train": {"pattern": "toy/chain-3/seed-{i}", "seeds": [0, 3]},
                "eval": {"pattern": "toy/chain-3/seed-{i}", "seeds": [10, 13]},
            }
        )
    )
    db = str(tmp_path / "r.db")
    recipe = write_recipe(tmp_path / "r.yaml", "chain", env={"max_steps": 6})
    code, _, err = run_cli(["eval", str(recipe), "--db", db, "--no-progress"], capsys)
    assert code == 0, err
    ids = [r[0] for r in sqlite3.connect(db).execute("SELECT id FROM episodes WHERE length >= 3 ORDER BY id")]
    assert len(ids) >= 2
    code, _, err = run_cli(["eval", str(recipe), "--set", "policy=expert", "--db", db, "--no-progress"], capsys)
    assert code == 0, err
    # the stored return is the sum of the stored rewards (the expert run wins every episode: return 1)
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*), sum(\"return\") FROM episodes WHERE policy = 'expert'").fetchone() == (4, 4.0)
    for eid, ret, total in con.execute(
        'SELECT e.id, e."return", sum(s.reward) FROM episodes e JOIN steps s ON s.episode_id = e.id GROUP BY e.id'
    ):
        assert abs(ret - total) < 1e-9, (eid, ret, total)
    assert (
        con.execute("SELECT sum(won) FROM episodes").fetchone()[0]
        == con.execute('SELECT count(*) FROM episodes WHERE "return" > 0').fetchone()[0]
    )
    con.close()
    for eid in ids:
        code, out, err = run_cli(["replay", str(eid), "--db", db], capsys)
        assert code == 0 and "full match" in out, out + err
    # tamper with one stored observation and one stored reward
    con = sqlite3.connect(db)
    con.execute("UPDATE steps SET observation = 'You are somewhere else.' WHERE episode_id = ? AND t = 2", (ids[0],))
    con.execute("UPDATE steps SET reward = 5.0 WHERE episode_id = ? AND t = 0", (ids[1],))
    con.commit()
    con.close()
    code, out, err = run_cli(["replay", str(ids[0]), "--db", db, "--json"], capsys)
    rep = yaml.safe_load(out)
    assert code == 1 and rep["match"] is False and rep["first_divergence"]["t"] == 1  # obs before step 2 = after step 1
    code, out, err = run_cli(["replay", str(ids[1]), "--db", db, "--json"], capsys)
    rep = yaml.safe_load(out)
    assert code == 1 and rep["first_divergence"]["t"] == 0 and not rep["first_divergence"]["reward_match"]
