"""Learner update throughput at fp32 vs bf16 autocast (`Learner(compute_dtype=...)`), side by side.

    python bench/learner_precision.py            # random weights in the default model's shape (~3 min on 2 busy cores)
    python bench/learner_precision.py --small    # a tiny random Llama, seconds

Synthesises prefix-consistent episodes (default 4 episodes x 4 turns: a 200-token initial prompt,
10-token actions, 30-token observations; concat layout), stores on-policy fp32 old log-probs, and
times `Learner.update` on the same samples with the forwards in float32 (no autocast) and under
bf16 autocast, interleaved (a load change on a shared machine hits both alike), median of
--repeats. Also prints how far the bf16 learner's log-probs are from the fp32 ones (the
mismatch a bf16 learner would see against an fp32 engine). The weights stay float32 throughout.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from learner import synth_episodes  # bench/learner.py: the same synthetic steps
from transformers import LlamaConfig, LlamaForCausalLM

from agentrl.config import LearnerConfig
from agentrl.learner import Learner, add_lora, count_tokens, make_micro_batches, sample_logprobs
from agentrl.policy.model import DEFAULT_SHAPE, cpu_supports_bf16

SMALL_SHAPE = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny random Llama (quick check)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=200)
    ap.add_argument("--obs", type=int, default=30)
    ap.add_argument("--action", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2, help="timed updates per variant (median reported)")
    ap.add_argument("--micro-batch-tokens", type=int, default=2048)
    ap.add_argument("--tokens-per-step", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_ep, turns = args.episodes, args.turns
    device = torch.device(args.device)

    shape = dict(SMALL_SHAPE, vocab_size=512) if args.small else DEFAULT_SHAPE
    torch.manual_seed(0)
    t0 = time.perf_counter()
    base = LlamaForCausalLM(LlamaConfig(max_position_embeddings=8192, **shape)).eval().to(device)
    cfg = LearnerConfig(
        micro_batch_tokens=args.micro_batch_tokens, tokens_per_step=args.tokens_per_step, layout="concat"
    )
    base = add_lora(base, cfg)
    load_s = time.perf_counter() - t0
    samples = synth_episodes(n_ep, turns, args.prompt, args.obs, args.action, shape["vocab_size"])
    fp32_lp = sample_logprobs(base, samples, layout="concat", micro_batch_tokens=cfg.micro_batch_tokens)
    bf16_lp = sample_logprobs(
        base, samples, layout="concat", micro_batch_tokens=cfg.micro_batch_tokens, compute_dtype=torch.bfloat16
    )
    for s, lp in zip(samples, fp32_lp):
        s.old_logprobs = lp  # on-policy (ratio ~1, as right after a rollout)
    gap = [abs(a - b) for x, y in zip(fp32_lp, bf16_lp) for a, b in zip(x, y)]
    n = count_tokens(make_micro_batches(samples, "concat", cfg.micro_batch_tokens))

    what = "tiny random Llama" if args.small else "random, the default model's shape (30 layers, hidden 576)"
    cap = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else "?"
    print(
        f"model: {what} on {device} ({torch.get_num_threads()} threads, CPU capability {cap}, "
        f"native bf16 {cpu_supports_bf16()}), built in {load_s:.1f}s; weights float32; LoRA r{cfg.lora_rank}"
    )
    print(
        f"episodes: {n_ep} x {turns} turns, prompt {args.prompt}, obs {args.obs}, action {args.action} tokens: "
        f"{n['tokens']} tokens, {n['loss_tokens']} loss tokens, {n['sequences']} sequences per update; "
        f"repeats {args.repeats}",
        flush=True,
    )

    variants = {"float32 (no autocast)": torch.float32, "bfloat16 autocast": torch.bfloat16}
    learners = {k: Learner(copy.deepcopy(base), cfg, device=device, compute_dtype=v) for k, v in variants.items()}
    for lr in learners.values():  # warm-up (allocator, oneDNN kernels) on one episode
        lr.update(samples[:turns])
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.repeats):
        for k, lr in learners.items():
            times[k].append(lr.update(samples)["time_s"])
            print(f"  run {r + 1}: {k:<24}{times[k][-1]:>8.2f}s {n['tokens'] / times[k][-1]:>8.1f} tok/s", flush=True)

    t = {k: statistics.median(v) for k, v in times.items()}
    t32 = t["float32 (no autocast)"]
    print()
    print(f"{'Learner.update compute dtype':<30}{'tokens':>8}{'s/update':>10}{'tok/s':>9}{'speed vs fp32':>15}")
    for k in variants:
        print(f"{k:<30}{n['tokens']:>8}{t[k]:>10.2f}{n['tokens'] / t[k]:>9.1f}{t32 / t[k]:>14.2f}x")
    print(
        f"|log p(bf16 learner) - log p(fp32 learner)| over {len(gap)} loss tokens: "
        f"max {max(gap):.2e}, mean {statistics.mean(gap):.2e}"
    )


if __name__ == "__main__":
    main()
