"""`agentrl export --format parquet|sft` (and the selection options of every format), on runs of a
tiny random model on toy envs: parquet equals the jsonl export and loads in pandas and datasets;
SFT records are the policy's own prompts as chat messages (the chat template over a record gives
the text of the stored prompt ids)."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import pytest
import yaml
from conftest import one_line_error, run_cli, write_recipe

from agentrl.config import RolloutConfig
from agentrl.store.export_sft import sft_records, turn_messages
from agentrl.store.records import EpisodeRecord, StepRecord


def _cli(args: list[str]) -> tuple[int, str, str]:
    """`agentrl ARGS` in-process, for module-scoped fixtures (no capsys there)."""
    from agentrl.cli import main

    o, e = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["agentrl", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
            main()
    except SystemExit as x:
        code = x.code if isinstance(x.code, int) else (0 if x.code is None else 1)
    finally:
        sys.argv = old
    return code, o.getvalue(), e.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """One database: run 1 trains 1 iteration (admissible, all history, a prompt budget that drops
    turns; evals before and after), run 2 evaluates in free mode (tag parser, history 2), run 3
    continues run 1's episodes from step 1 with its checkpoint (a forced first turn)."""
    d = tmp_path_factory.mktemp("export")
    envs = d / "envs"
    envs.mkdir()
    (envs / "chain.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "chain",
                "env": "toy",
                "description": "three rooms",
                "train": {"pattern": "toy/chain-3/seed-{i}", "seeds": [0, 15]},
                "eval": {"pattern": "toy/chain-3/seed-{i}", "seeds": [100, 103]},
            }
        )
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("AGENTRL_ENVS_DIR", str(envs))
    db = str(d / "r.db")
    model = {"path": str(tiny_model_dir)}
    train = write_recipe(
        d / "train.yaml",
        "chain",
        policy="llm",
        env={"max_steps": 4, "workers": 0},
        model=model,
        rollout={
            "group_size": 4,
            "groups_per_iteration": 2,
            "action_mode": "admissible",
            "history": -1,
            "max_prompt_tokens": 200,
            "max_new_tokens": 8,
        },
        credit={"method": "grpo"},
        learner={"lora_rank": 4, "lora_alpha": 8, "layout": "per_step", "tokens_per_step": 4000},
        train={"iterations": 1, "eval_every": 0, "checkpoint_every": 1, "output_dir": str(d / "ckpt")},
        eval={"episodes": 4, "greedy": False},
    )
    free = write_recipe(
        d / "free.yaml",
        "chain",
        policy="llm",
        env={"max_steps": 4, "workers": 0},
        model=model,
        rollout={"action_mode": "free", "action_parser": "tag", "history": 2, "max_new_tokens": 12},
        eval={"episodes": 3, "greedy": False},
    )
    try:
        for args in (
            ["train", str(train), "--db", db, "--no-progress"],
            ["eval", str(free), "--db", db, "--no-progress"],
            ["replay", "--failed", "1", "--policy", "1", "--from-step", "1", "--db", db, "--no-progress"],
        ):
            code, _, err = _cli(args)
            assert code == 0, (args, err[-3000:])
    finally:
        mp.undo()
    return db


def _jsonl(db, run, *extra):
    code, out, err = _cli(["export", str(run), "--db", db, *extra])
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    return lines[0], lines[1:]


# ---------------------------------------------------------------------------------- parquet


def test_parquet_equals_jsonl_and_loads_in_pandas(runs, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    head, eps = _jsonl(runs, 1)
    out = tmp_path / "run1.parquet"
    code, _, err = _cli(["export", "1", "--db", runs, "--format", "parquet", "-o", str(out)])
    assert code == 0, err
    assert "wrote" in err and str(out) in err
    df = pd.read_parquet(out)
    steps = [(e, st) for e in eps for st in e["steps"]]
    assert len(df) == len(steps) > 0
    assert "adv_grpo" in df.columns and "info" in df.columns
    for (ep, st), row in zip(steps, df.to_dict("records")):
        assert row["run_id"] == 1 and row["run_name"] == head["name"]
        assert row["episode_id"] == ep["id"] and row["t"] == st["t"]
        for k in ("iteration", "split", "task_id", "group_id", "env", "seed", "policy", "status", "won", "length"):
            assert row[k] == ep[k], k
        assert row["episode_return"] == ep["return"]
        for k in ("observation", "raw", "action", "reward", "terminated", "truncated", "valid", "anchor"):
            assert row[k] == st[k], k
        assert list(row["admissible"]) == st["admissible"]
        assert list(row["prompt_ids"]) == st["prompt_ids"] and list(row["action_ids"]) == st["action_ids"]
        assert [float(x) for x in row["logprobs"]] == st["logprobs"]  # float32 both ways
        assert json.loads(row["info"]) == st["info"]
        if "grpo" in st["advantages"]:
            assert row["adv_grpo"] == st["advantages"]["grpo"]
        else:
            assert pd.isna(row["adv_grpo"])
    assert df[df.split == "train"].adv_grpo.notna().all() and df[df.split == "eval"].adv_grpo.isna().all()
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = pq.ParquetFile(out)
    assert json.loads(f.schema_arrow.metadata[b"agentrl.run"])["recipe"]["credit"]["method"] == "grpo"
    assert f.schema_arrow.field("prompt_ids").type.value_type == pa.int32()
    assert f.schema_arrow.field("logprobs").type.value_type == pa.float32()


def test_parquet_row_groups_and_datasets(runs, tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    datasets = pytest.importorskip("datasets")
    import pyarrow.parquet as pq

    from agentrl.store.db import open_store
    from agentrl.store.export_parquet import export_parquet
    from agentrl.store.queries import get_run

    store = open_store(runs, create=False, readonly=True)
    out = tmp_path / "small-groups.parquet"
    n_eps, n_rows = export_parquet(store, get_run(store, 1), out, rows_per_group=7, page=3)
    f = pq.ParquetFile(out)
    assert f.metadata.num_rows == n_rows and f.metadata.num_row_groups == -(-n_rows // 7) > 1
    assert not list(tmp_path.glob(".*part"))  # the temporary file is gone
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    ds = datasets.load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    _, eps = _jsonl(runs, 1)
    steps = [st for e in eps for st in e["steps"]]
    assert ds.num_rows == len(steps) == n_rows
    assert ds.features["prompt_ids"].feature.dtype == "int32"
    assert ds[3]["prompt_ids"] == steps[3]["prompt_ids"] and ds[3]["action"] == steps[3]["action"]
    assert ds[3]["adv_grpo"] == steps[3]["advantages"].get("grpo")


def test_selection_applies_to_every_format(runs, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    _, all_eps = _jsonl(runs, 1)
    _, eps = _jsonl(runs, 1, "--split", "eval", "--iteration", "1")
    assert eps and [e["id"] for e in eps] == [e["id"] for e in all_eps if e["split"] == "eval" and e["iteration"] == 1]
    _, won = _jsonl(runs, 1, "--won")
    assert [e["id"] for e in won] == [e["id"] for e in all_eps if e["won"]]
    out = tmp_path / "train.parquet"
    code, _, err = _cli(["export", "1", "--db", runs, "--format", "parquet", "-o", str(out), "--split", "train"])
    assert code == 0, err
    df = pd.read_parquet(out)
    assert set(df.split) == {"train"} and len(df) == sum(e["length"] for e in all_eps if e["split"] == "train")
    code, out, err = _cli(["export", "1", "--db", runs, "--format", "sft", "--won"])
    recs = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and all(r["won"] for r in recs)
    assert {r["episode_id"] for r in recs} == {e["id"] for e in all_eps if e["won"]}


def test_parquet_signal_columns_and_nulls(tmp_path):
    """Every stored method gets an adv_ column and every signal a sig_ column, null where a step
    has none; scripted steps have null token columns and admissible lists."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    from agentrl.store.db import open_store
    from agentrl.store.export_parquet import export_parquet
    from agentrl.store.queries import get_run

    store = open_store(tmp_path / "s.db")
    run = store.create_run("sig", "name: sig\n", kind="train")
    gen = dict(prompt_ids=[3, 4], action_ids=[5], logprobs=[-0.5])
    a = _ep([StepRecord(t, f"Room {t}.", "look", 0.5, admissible=["look"], raw="look", **gen) for t in range(2)])
    b = _ep([StepRecord(0, "Dark.", "wait", 0.0)])
    a.id = b.id = None
    store.write_episode(a, run)
    store.write_episode(b, run)
    sa, sb = [st.id for st in a.steps], b.steps[0].id
    store.write_advantages("spa", [(sa[0], 0.25, {"progress": 0.1}), (sa[1], -0.25, {"progress": 0.2, "bad": [1]})])
    store.write_advantages("grpo", [(sa[0], 1.0, {}), (sb, -1.0, {})])
    out = tmp_path / "s.parquet"
    assert export_parquet(store, get_run(store, run), out) == (2, 3)
    df = pd.read_parquet(out)
    assert [c for c in df.columns if c.startswith(("adv_", "sig_"))] == ["adv_grpo", "adv_spa", "sig_spa_progress"]
    assert df.adv_grpo.tolist()[::2] == [1.0, -1.0] and pd.isna(df.adv_grpo[1])
    assert df.adv_spa.tolist()[:2] == [0.25, -0.25] and pd.isna(df.adv_spa[2])
    assert df.sig_spa_progress.tolist()[:2] == [0.1, 0.2] and pd.isna(df.sig_spa_progress[2])
    last = df.iloc[2]
    assert last.prompt_ids is None and last.action_ids is None and last.logprobs is None and last.admissible is None
    assert list(df.prompt_ids[0]) == [3, 4] and list(df.logprobs[1]) == [-0.5]


def test_parquet_cli_errors(runs, tmp_path, capsys, monkeypatch):
    code, out, err = run_cli(["export", "1", "--db", runs, "--format", "parquet"], capsys)
    one_line_error(code, err, "-o FILE.parquet")
    code, _, err = run_cli(["export", "1", "--db", runs, "--format", "parquet", "-o", "-"], capsys)
    one_line_error(code, err, "stdout")
    missing = tmp_path / "no" / "x.parquet"
    code, _, err = run_cli(["export", "1", "--db", runs, "--format", "parquet", "-o", str(missing)], capsys)
    one_line_error(code, err, str(missing))
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    code, _, err = run_cli(
        ["export", "1", "--db", runs, "--format", "parquet", "-o", str(tmp_path / "x.parquet")], capsys
    )
    one_line_error(code, err, "pip install 'agentrl[parquet]'")
    assert not (tmp_path / "x.parquet").exists()
    code, out, err = run_cli(["export", "1", "--db", runs, "--format", "sft", "--split", "eval"], capsys)
    assert code == 0 and out, err  # sft and jsonl need no pyarrow


# -------------------------------------------------------------------------------------- sft


def _sft(db, run, *extra):
    code, out, err = _cli(["export", str(run), "--db", db, "--format", "sft", *extra])
    assert code == 0, err
    return [json.loads(x) for x in out.splitlines()]


@pytest.mark.parametrize("run", [1, 2, 3], ids=["admissible-train", "free-eval", "forced-replay"])
def test_sft_messages_render_the_stored_prompts(runs, run):
    """The tokenizer's chat template over a record's messages without its last one (with the
    generation prompt) is the text of the prompt ids stored for that step; the last message is
    the decoded generation."""
    from agentrl.policy.model import load_tokenizer

    head, eps = _jsonl(runs, run)
    tok = load_tokenizer(head["recipe"]["model"]["path"])
    steps = {(e["id"], st["t"]): st for e in eps for st in e["steps"]}
    recs = _sft(runs, run)
    played = {k: st for k, st in steps.items() if not st["info"].get("forced")}
    assert [(r["episode_id"], r["t"]) for r in recs] == list(played)
    for r in recs:
        st = steps[(r["episode_id"], r["t"])]
        msgs = r["messages"]
        assert msgs[0]["role"] == "system" and msgs[-1] == {"role": "assistant", "content": st["raw"]}
        assert [m["role"] for m in msgs[1:]] == ["user", "assistant"] * ((len(msgs) - 1) // 2)
        assert not r["truncated_observation"]
        text = tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
        assert text == tok.decode(st["prompt_ids"], skip_special_tokens=False), (run, r["episode_id"], r["t"])
    infos = [st["info"] for st in played.values()]
    if run == 1:  # the budget dropped turns, and the records left the same ones out
        assert any(i.get("dropped_turns", 0) > 0 for i in infos)
        assert {len(r["messages"]) for r in recs} != {3}
    if run == 2:  # free mode: whole generations, some cut at max_new_tokens, some unparseable
        assert any(st["raw"] != st["action"] for st in played.values())
    if run == 3:
        assert any(st["info"].get("forced") for st in steps.values()) and recs


def test_sft_roles_and_valid_json(runs):
    recs = _sft(runs, 1, "--split", "train", "--iteration", "1")
    assert recs and all(r["split"] == "train" and r["iteration"] == 1 for r in recs)
    for r in recs:
        roles = [m["role"] for m in r["messages"]]
        assert roles[0] == "system" and roles[-1] == "assistant"
        assert roles[1:] == ["user", "assistant"] * ((len(roles) - 1) // 2)
        assert all(isinstance(m["content"], str) for m in r["messages"])
        assert set(r) >= {"messages", "episode_id", "task_id", "t"}


def _ep(steps, goal="win", policy="expert"):
    return EpisodeRecord("toy/chain-3/seed-0", "g", "toy", goal=goal, policy=policy, steps=steps, id=7)


def test_sft_pure_rendering_of_scripted_and_forced_turns():
    """No tokenizer: scripted actions are written as the policy must write them; forced turns get
    no record and are shown as text without valid commands, like every turn before the policy's
    first own one; the history window and dropped turns follow the recipe and the step info."""
    adm = ["go north", "look"]
    steps = [StepRecord(t, f"Room {t}.", "go north", 0.0, admissible=adm, raw="go north") for t in range(3)]
    free = RolloutConfig(action_mode="free", action_parser="tag", history=1, system_prompt="Play.")
    recs = list(sft_records(free, [_ep(steps)]))
    assert [r["t"] for r in recs] == [0, 1, 2]
    assert recs[2]["messages"] == [
        {"role": "system", "content": "Play.\n\nGoal: win"},
        {"role": "user", "content": "Room 1.\n\nValid commands:\n- go north\n- look"},
        {"role": "assistant", "content": "<action>go north</action>"},
        {"role": "user", "content": "Room 2.\n\nValid commands:\n- go north\n- look"},
        {"role": "assistant", "content": "<action>go north</action>"},
    ]
    last_line = RolloutConfig(action_mode="free", action_parser="last_line", history=0)
    assert list(sft_records(last_line, [_ep(steps)]))[0]["messages"][-1]["content"] == "go north"
    # an LLM episode whose first turn was forced (replay --from-step 1), turn 2 dropped a turn
    gen = dict(prompt_ids=[1], action_ids=[5, 6], logprobs=[0.0, 0.0])
    llm = [
        StepRecord(0, "Room 0.", "look", 0.0, admissible=adm, raw="look", info={"forced": True}),
        StepRecord(1, "Room 1.", "go north", 0.0, admissible=adm, raw="go north", info={"dropped_turns": 0}, **gen),
        StepRecord(2, "Room 2.", "look", 0.0, admissible=adm, raw="look", info={"dropped_turns": 1}, **gen),
    ]
    cfg = RolloutConfig(history=-1)
    recs = list(sft_records(cfg, [_ep(llm, policy="llm:x")]))
    assert [r["t"] for r in recs] == [1, 2]
    first = recs[0]["messages"]
    assert first[1] == {"role": "user", "content": "Room 0."} and first[2] == {"role": "assistant", "content": "look"}
    assert (
        first[0]["content"].startswith("You are playing a text adventure game")
        and "list of valid" in first[0]["content"]
    )
    assert [m["content"] for m in recs[1]["messages"][1:]] == [
        "Room 1.\n\nValid commands:\n- go north\n- look",
        "go north",
        "Room 2.\n\nValid commands:\n- go north\n- look",
        "look",
    ]
    # a template without a system role: the system text opens the first user message
    no_sys = list(sft_records(cfg, [_ep(llm, policy="llm:x")], system_role=False))[1]["messages"]
    assert no_sys[0]["role"] == "user" and no_sys[0]["content"].startswith(first[0]["content"] + "\n\nRoom 1.")
    assert turn_messages("S", [], "U") == [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]


def test_export_help_names_every_format(capsys):
    code, out, _ = run_cli(["export", "--help"], capsys)
    assert code == 0 and "parquet" in out and "sft" in out and "the only format" not in out
