"""`agentrl train` end to end on a tiny random model: it learns a trivial env, checkpoints, resumes."""

import json
import os
import signal
import sqlite3
import subprocess
import time

import yaml
from conftest import AGENTRL, run_cli, write_recipe


def _pick_suite(d):
    (d / "pick.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "pick",
                "env": "toy",
                "description": "one of four doors wins",
                "train": {"pattern": "toy/pick-4/seed-{i}", "seeds": [0, 63]},
                "eval": {"pattern": "toy/pick-4/seed-{i}", "seeds": [1000, 1031]},
            }
        )
    )


def _recipe(tmp_path, model_dir, **over):
    sections = dict(
        env={"max_steps": 2, "workers": 0},
        model={"path": str(model_dir)},
        rollout={
            "group_size": 8,
            "groups_per_iteration": 8,
            "action_mode": "admissible",
            "history": 0,
            "temperature": 1.0,
            "max_new_tokens": 8,
        },
        credit={"method": "grpo"},
        learner={
            "lora_rank": 8,
            "lora_alpha": 16,
            "lr": 5e-3,
            "layout": "per_step",
            "tokens_per_step": 800,
            "target_modules": ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
        },
        train={"iterations": 12, "eval_every": 0, "checkpoint_every": 4, "output_dir": str(tmp_path / "ckpt")},
        eval={"episodes": 32, "greedy": False},  # sampled: chance is 25% whatever the random init prefers
    )
    for k, v in over.items():
        sections[k] = {**sections.get(k, {}), **v}
    return write_recipe(tmp_path / "train.yaml", "pick", policy="llm", **sections)


def wait_for_episodes(proc, db, iteration, at_least, timeout=120):
    """Wait until `at_least` train episodes of `iteration` are stored (the process must stay alive)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        try:
            con = sqlite3.connect(db, timeout=30)
            n = con.execute(
                "SELECT count(*) FROM episodes WHERE split='train' AND iteration=?", (iteration,)
            ).fetchone()[0]
            con.close()
            if n >= at_least:
                return n
        except sqlite3.OperationalError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"iteration {iteration} did not store {at_least} episodes in {timeout}s")


def kill_during_rollout(proc, db, iteration, at_least):
    """SIGKILL the training process group once `at_least` train episodes of `iteration` are stored."""
    wait_for_episodes(proc, db, iteration, at_least)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_learns_trivial_env_from_chance(tmp_path, suites_dir, tiny_model_dir, capsys):
    _pick_suite(suites_dir)
    recipe = _recipe(tmp_path, tiny_model_dir)
    db = str(tmp_path / "r.db")
    code, out, err = run_cli(["train", str(recipe), "--db", db, "--no-progress"], capsys)
    assert code == 0, err[-2000:]
    con = sqlite3.connect(db)
    rows = dict(con.execute('SELECT "index", metrics FROM iterations'))
    import json

    before = json.loads(rows[0])["eval_success"]
    after = json.loads(rows[12])["eval_success"]
    assert before <= 0.5, before  # chance is 25%
    assert after >= 0.9, (before, after)
    # issue 14: the summary gives before and after with 95% Wilson intervals, and the change with a
    # paired bootstrap interval over the 32 eval tasks played both times
    from agentrl.stats import fmt_rate

    summary = out[out.index("training run 1: held-out success") :]
    assert fmt_rate(round(32 * before), 32) in summary and fmt_rate(round(32 * after), 32) in summary, summary
    assert f"{100 * (after - before):+.1f} pts [" in summary and "paired bootstrap over 32 tasks" in summary, summary
    assert f"held-out success before training: {fmt_rate(round(32 * before), 32)} (32 episodes)" in err
    # ~20 s on an idle 2-core machine (the issue's budget is 90 s); not asserted: timings are benchmarks' job
    # every train step was stored with its tokens and its advantage
    n_steps = con.execute(
        "SELECT count(*) FROM steps s JOIN episodes e ON e.id = s.episode_id WHERE e.split = 'train'"
    ).fetchone()[0]
    n_adv = con.execute("SELECT count(*) FROM advantages WHERE method = 'grpo'").fetchone()[0]
    assert n_steps == 12 * 64 and n_adv == n_steps
    assert con.execute("SELECT count(*) FROM checkpoints").fetchone()[0] == 3


def test_sigkill_mid_training_then_resume(tmp_path, suites_dir, tiny_model_dir, capsys):
    _pick_suite(suites_dir)
    recipe = _recipe(
        tmp_path,
        tiny_model_dir,
        train={"iterations": 4, "checkpoint_every": 1},
        rollout={"group_size": 4, "groups_per_iteration": 16},
        eval={"episodes": 8},
    )
    db = str(tmp_path / "r.db")
    env = {**os.environ, "AGENTRL_ENVS_DIR": str(suites_dir)}
    proc = subprocess.Popen(
        [*AGENTRL, "train", str(recipe), "--db", db, "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    # kill during iteration 2's rollout: after checkpoint 1 and some iteration-2 episodes are stored
    kill_during_rollout(proc, db, 2, 5)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    before = con.execute("SELECT count(*) FROM episodes WHERE split='train' AND iteration=2").fetchone()[0]
    assert 5 <= before < 64
    con.close()
    code, out, err = run_cli(["train", "--resume", "1", "--db", db, "--no-progress"], capsys)
    assert code == 0, err[-2000:]
    con = sqlite3.connect(db)
    per_iter = dict(con.execute("SELECT iteration, count(*) FROM episodes WHERE split='train' GROUP BY iteration"))
    assert per_iter == {1: 64, 2: 64, 3: 64, 4: 64}
    # no group got more than its 4 episodes
    assert (
        con.execute(
            "SELECT max(c) FROM (SELECT count(*) c FROM episodes WHERE split='train' GROUP BY group_id)"
        ).fetchone()[0]
        == 4
    )
    assert con.execute("SELECT status FROM runs WHERE id=1").fetchone()[0] == "finished"
    cps = [r[0] for r in con.execute("SELECT iteration FROM checkpoints ORDER BY iteration")]
    assert cps[-1] == 4
    # the final adapter loads for evaluation
    code, out, err = run_cli(["eval", "--run", "1", "--db", db, "--episodes", "4", "--no-progress", "--json"], capsys)
    assert code == 0, err[-2000:]
    # a checkpoint continues stored episodes: every failed episode of the eval before training (the final
    # eval may have none), and one from a later step
    code, out, err = run_cli(
        ["replay", "--failed", "1", "--iteration", "0", "--policy", "1:4", "--db", db, "--json", "--no-progress"],
        capsys,
    )
    assert code == 0, err[-2000:]
    rep = json.loads(out)
    failed = con.execute(
        "SELECT count(*) FROM episodes WHERE run_id=1 AND split='eval' AND iteration=0 AND won=0"
    ).fetchone()[0]
    assert rep["episodes"] == failed > 0 and 0 <= rep["now_won"] <= failed
    new = rep["continuations"][0]["new_episode_id"]
    assert con.execute("SELECT policy FROM episodes WHERE id=?", (new,)).fetchone()[0].startswith("llm:")
    code, out, err = run_cli(["replay", "--policy", "1:9", str(new), "--db", db], capsys)
    assert code == 2 and "no checkpoint 9" in err


def test_train_samples_drop_zero_advantage_episodes():
    from agentrl.learner.samples import episode_samples
    from agentrl.store.records import EpisodeRecord, StepRecord

    def ep(i, n):
        return EpisodeRecord(
            task_id="t",
            group_id="g",
            env="toy",
            id=i,
            steps=[
                StepRecord(
                    t=t, observation="o", action="a", reward=0.0, prompt_ids=[1, 2], action_ids=[3], logprobs=[-0.5]
                )
                for t in range(n)
            ],
        )

    recs = [ep(1, 2), ep(2, 3), ep(3, 1)]
    advs = [[0.0, 0.0], [0.0, -0.7, 0.0], [0.0]]  # episode 2 has one non-zero step: it stays whole
    kept = episode_samples(recs, advs, tokenizer=None, action_mode="free", drop_zero=True)
    # episode = the episode's index in recs, t = the step's index
    assert [(s.episode, s.t, s.advantage) for s in kept] == [(1, 0, 0.0), (1, 1, -0.7), (1, 2, 0.0)]
    every = episode_samples(recs, advs, tokenizer=None, action_mode="free")
    assert len(every) == 6
    assert [s.advantage for s in episode_samples(recs, None, tokenizer=None, action_mode="free")] == [0.0] * 6
