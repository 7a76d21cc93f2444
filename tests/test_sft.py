"""`agentrl sft` (issue 16): demonstrations rendered as the policy is prompted, token for token; SFT on
expert play lifts a tiny model; checkpoints, SIGKILL + resume, one-line errors; `train.init_from`."""

import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest
from conftest import AGENTRL, one_line_error, run_cli, write_recipe

LEARNER = {
    "lora_rank": 8,
    "lora_alpha": 16,
    "lr": 5e-3,
    "layout": "concat",
    "tokens_per_step": 800,
    "target_modules": ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
}


def _llm_recipe(tmp_path, model_dir, name="warm", sft=None, **over):
    sections = dict(
        env={"max_steps": 6, "workers": 0},
        model={"path": str(model_dir)},
        rollout={"action_mode": "admissible", "history": 2, "max_new_tokens": 8, "engine": "hf"},
        learner=LEARNER,
        train={"output_dir": str(tmp_path / "ckpt"), "iterations": 1, "eval_every": 0},
        eval={"episodes": 32, "greedy": True},
    )
    for k, v in over.items():
        sections[k] = {**sections.get(k, {}), **v}
    if sft is not None:
        sections["sft"] = sft
    return write_recipe(tmp_path / f"{name}.yaml", "toy-chain", policy="llm", name=name, **sections)


def _expert_run(tmp_path, db, capsys):
    """The expert's play of toy-chain's 64 train games, stored as eval run 1 (split train)."""
    recipe = write_recipe(tmp_path / "demo.yaml", "toy-chain", policy="expert", name="demo")
    code, _, err = run_cli(["eval", str(recipe), "--split", "train", "--db", db, "--no-progress"], capsys)
    assert code == 0, err
    return recipe


def _metrics(db, run_id):
    con = sqlite3.connect(db)
    q = 'SELECT "index", metrics FROM iterations WHERE run_id=?'
    rows = {i: json.loads(m) for i, m in con.execute(q, (run_id,))}
    con.close()
    return rows


# -- the prompts: the same as the policy's, token for token ---------------------------------------
@pytest.mark.parametrize(
    "over",
    [
        {"history": -1, "max_prompt_tokens": 220},  # every turn shown, older ones dropped to fit
        {"history": 1},
        {"action_mode": "free", "history": 2},
        {"action_mode": "free", "action_parser": "last_line", "history": -1},
    ],
)
def test_demonstration_prompts_are_the_policys_prompts(tmp_path, tiny_model_dir, capsys, over):
    from agentrl.config import load_recipe
    from agentrl.policy.model import load_tokenizer
    from agentrl.policy.teacher import demonstrations
    from agentrl.store import queries as q
    from agentrl.store.db import open_store

    db = str(tmp_path / "r.db")
    recipe = _llm_recipe(tmp_path, tiny_model_dir, rollout=over, eval={"greedy": False, "episodes": 12})
    code, _, err = run_cli(["eval", str(recipe), "--db", db, "--no-progress"], capsys)
    assert code == 0, err
    cfg = load_recipe(str(recipe)).rollout
    tok = load_tokenizer(str(tiny_model_dir))
    eps = q.episodes(open_store(db), 1, with_steps=True)
    dropped = sum(int(s.info.get("dropped_turns", 0)) for e in eps for s in e.steps)
    if "max_prompt_tokens" in over:
        assert dropped > 0  # the window really was cut for length
    n = 0
    for ep in eps:
        for st in ep.steps:  # every turn a demonstration (the tiny model's own are mostly invalid)
            st.valid, st.action = True, st.action or "x"
        demos = list(demonstrations([ep], tok, cfg))
        assert [d.t for d in demos] == list(range(len(ep.steps)))
        for d in demos:
            st = ep.steps[d.t]
            assert d.prompt_ids == st.prompt_ids, (ep.id, d.t)
            assert d.action_ids == st.action_ids, (ep.id, d.t)
            n += 1
        if cfg.action_mode == "admissible":
            # the same turns without their generated ids (as a scripted policy's are stored): the
            # command written as the trie spells it gives the same prompts and action ids
            for st in ep.steps:
                st.action_ids = st.prompt_ids = st.logprobs = None
            again = list(demonstrations([ep], tok, cfg))
            assert [(d.prompt_ids, d.action_ids) for d in again] == [(x.prompt_ids, x.action_ids) for x in demos]
    assert n >= 24


def test_invalid_steps_are_context_not_demonstrations(tiny_model_dir):
    from agentrl.config import RolloutConfig
    from agentrl.policy.model import load_tokenizer
    from agentrl.policy.teacher import demonstrations
    from agentrl.store.records import EpisodeRecord, StepRecord

    tok = load_tokenizer(str(tiny_model_dir))
    cmds = ["go north", "go east"]
    steps = [
        StepRecord(0, "room 0", "dance", 0.0, valid=False, admissible=cmds),
        StepRecord(1, "room 0", "go north", 0.0, admissible=cmds),
        StepRecord(2, "room 1", "jump", 0.0, admissible=cmds),  # valid, but not a listed command
        StepRecord(3, "room 1", "go east", 1.0, terminated=True, admissible=cmds),
    ]
    ep = EpisodeRecord("toy/chain-2/seed-0", "g", "toy", goal="out", won=True, steps=steps)
    cfg = RolloutConfig(history=-1)
    demos = list(demonstrations([ep], tok, cfg))
    assert [d.t for d in demos] == [1, 3]
    # the refused step is in the later prompt: it grows with every turn, the first one included
    assert tok.decode(demos[0].prompt_ids).count("room 0") == 2
    assert len(demos[1].prompt_ids) > len(demos[0].prompt_ids) + len(demos[0].action_ids)
    assert demos[1].allowed is not None and all(a in al for a, al in zip(demos[1].action_ids, demos[1].allowed))


# -- SFT on expert play ---------------------------------------------------------------------------
def test_sft_on_expert_play_lifts_the_tiny_model(tmp_path, tiny_model_dir, capsys):
    db = str(tmp_path / "r.db")
    _expert_run(tmp_path, db, capsys)
    recipe = _llm_recipe(
        tmp_path, tiny_model_dir, sft={"from": {"runs": ["demo"], "split": "train", "policy": "expert"}, "epochs": 5}
    )
    code, out, err = run_cli(["sft", str(recipe), "--db", db, "--no-progress"], capsys)
    assert code == 0, err[-3000:]
    m = _metrics(db, 2)
    before, after = m[0]["eval_success"], m[5]["eval_success"]
    assert before <= 0.5 and after >= 0.9, (before, after)
    assert "sft: 192 demonstrated turns from 64 episodes" in err
    assert "sft run 2: held-out success" in out
    assert m[5]["loss"] < m[1]["loss"]
    con = sqlite3.connect(db)
    assert con.execute("SELECT kind FROM runs WHERE id=2").fetchone()[0] == "sft"
    assert [r[0] for r in con.execute("SELECT iteration FROM checkpoints WHERE run_id=2")] == [1, 2, 3, 4, 5]
    con.close()

    # its checkpoint is a policy like a training run's: eval --run, replay --policy, runs, plot
    code, out, err = run_cli(["eval", "--run", "warm", "--db", db, "--no-progress", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["success"] == after
    code, out, err = run_cli(
        ["replay", "--failed", "2", "--iteration", "0", "--policy", "2", "--db", db, "--no-progress", "--json"], capsys
    )
    assert code in (0, 1), err  # the episodes the untrained model lost, retried by the sft policy
    retried = json.loads(out)
    assert retried["episodes"] == round(32 * (1 - before)) and retried["now_won"] >= 0.8 * retried["episodes"], retried
    code, out, err = run_cli(["runs", "--db", db, "--json"], capsys)
    row = next(r for r in json.loads(out) if r["id"] == 2)
    assert row["kind"] == "sft" and row["eval_success"] == after and row["eval_before"] == before
    code, _, err = run_cli(["plot", "2", "--db", db, "-o", str(tmp_path / "sft.png")], capsys)
    assert code == 0 and (tmp_path / "sft.png").stat().st_size > 0, err

    # RL from it: train.init_from, a fresh optimiser; its iteration-0 (greedy) eval is the sft policy's
    rl = _llm_recipe(tmp_path, tiny_model_dir, name="rl", train={"init_from": "warm"})
    code, out, err = run_cli(["train", str(rl), "--db", db, "--no-progress"], capsys)
    assert code == 0, err[-3000:]
    assert "starting from the adapter of run 2 checkpoint 5 (train.init_from)" in err
    rl_id = max(r["id"] for r in json.loads(run_cli(["runs", "--db", db, "--json"], capsys)[1]))
    assert _metrics(db, rl_id)[0]["eval_success"] == after

    # an sft run is resumed by sft, not train
    code, _, err = run_cli(["train", "--resume", "2", "--db", db], capsys)
    one_line_error(code, err, "agentrl sft --resume 2")


def test_sft_errors_are_one_line(tmp_path, tiny_model_dir, capsys):
    db = str(tmp_path / "r.db")
    _expert_run(tmp_path, db, capsys)
    cases = [
        ({"from": {"runs": ["nope"]}}, "no run 'nope'"),
        ({"from": {"runs": ["demo"], "policy": "random"}}, "sft.from selects no episodes"),
        ({"from": {"runs": ["demo"], "split": "eval"}}, "sft.from selects no episodes"),
        ({"from": {"runs": ["demo"], "db": str(tmp_path / "missing.db")}}, "missing.db"),
        ({"from": {"runs": []}}, "sft.from.runs"),
    ]
    for sft, needle in cases:
        recipe = _llm_recipe(tmp_path, tiny_model_dir, sft=sft)
        code, _, err = run_cli(["sft", str(recipe), "--db", db, "--no-progress"], capsys)
        one_line_error(code, err, needle)
    recipe = _llm_recipe(tmp_path, tiny_model_dir)
    code, _, err = run_cli(["sft", str(recipe), "--db", db], capsys)
    one_line_error(code, err, "no `sft:` section")
    rl = _llm_recipe(tmp_path, tiny_model_dir, name="rl", train={"init_from": "demo"})
    code, _, err = run_cli(["train", str(rl), "--db", db], capsys)
    one_line_error(code, err, "not a train or sft run")
    rl = _llm_recipe(tmp_path, tiny_model_dir, name="rl", train={"init_from": "demo:x"})
    code, _, err = run_cli(["train", str(rl), "--db", db], capsys)
    one_line_error(code, err, "train.init_from expects RUN or RUN:N")
    con = sqlite3.connect(db)  # nothing was written for any of them
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    con.close()


def test_sigkill_then_resume_is_exact(tmp_path, tiny_model_dir, capsys):
    db = str(tmp_path / "r.db")
    _expert_run(tmp_path, db, capsys)
    sft = {"from": {"runs": ["demo"], "max_episodes": 24}, "epochs": 4}
    over = {"eval": {"episodes": 4}, "learner": {**LEARNER, "tokens_per_step": 200}}
    uninterrupted = _llm_recipe(tmp_path, tiny_model_dir, name="once", sft=sft, **over)
    code, _, err = run_cli(["sft", str(uninterrupted), "--db", db, "--no-progress"], capsys)
    assert code == 0, err[-3000:]

    killed = _llm_recipe(tmp_path, tiny_model_dir, name="killed", sft=sft, **over)
    proc = subprocess.Popen(
        [*AGENTRL, "sft", str(killed), "--db", db, "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )
    t0 = time.time()
    while time.time() - t0 < 180:  # SIGKILL once checkpoint 2 is recorded
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        con = sqlite3.connect(db, timeout=30)
        n = con.execute("SELECT count(*) FROM checkpoints WHERE run_id=3").fetchone()[0]
        con.close()
        if n >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    done = con.execute("SELECT count(*) FROM checkpoints WHERE run_id=3").fetchone()[0]
    con.close()
    assert 2 <= done < 4
    code, _, err = run_cli(["sft", "--resume", "3", "--db", db, "--no-progress"], capsys)
    assert code == 0, err[-3000:]
    assert f"resuming run 3 after epoch {done}" in err
    a, b = _metrics(db, 2), _metrics(db, 3)
    assert sorted(a) == sorted(b) == [0, 1, 2, 3, 4]
    for k in range(1, 5):  # every epoch's loss is the uninterrupted run's, exactly
        assert a[k]["loss"] == b[k]["loss"], (k, a[k]["loss"], b[k]["loss"])
    assert a[4]["eval_success"] == b[4]["eval_success"]
    code, _, err = run_cli(["sft", "--resume", "3", "--db", db], capsys)
    one_line_error(code, err, "already finished its 4 epochs")
