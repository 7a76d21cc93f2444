"""Rollout engines side by side in one run, on the quickstart's own rollouts.

    python bench/rollout.py                        # hf fp32, hf bf16, vllm (where installed): ~6 min on 2 cores
    python bench/rollout.py --engines hf-fp32 vllm --iterations 1 2
    python bench/rollout.py --engines hf-fp32 vllm-fp32 vllm-bf16   # vllm in a given dtype (vllm = its auto)

The same tasks, env seeds and per-episode sampling streams for every engine: the train episodes of
the quickstart's iteration(s) (`agentrl train quickstart`, tw-quick, 8 groups x 4, up to 8 steps,
admissible mode, the whole history in the prompt), rolled out with the base default model through
the real env pool. Per engine: episodes/s, prefilled and generated tokens/s of engine time, the
engine's achieved FLOP/s as a fraction of this CPU's peak, and the rollout's overhead around the
engine (prompts, tries, env steps, bookkeeping) as a fraction of the engine's own time.

The env pool is started once and warmed up (its workers spawned, one reset each on eval games, not
the measured ones) before any engine runs, as a training run keeps one warm pool for all its
rollouts; `--cold-pool` starts a new pool per engine instead (the first rollout of a run).

Peak: cores x clock x FLOP/cycle/core, with the clock from /proc/cpuinfo (the highest "cpu MHz")
or --ghz, and FLOP/cycle/core = 2 FMA pipes x 16 fp32 lanes x 2 = 64 for fp32 with AVX-512 (Zen 4/5
class cores), 2 x 8 x 2 = 32 with AVX2 only; bf16 twice the fp32 figure where the CPU has native
bf16 dot products (AVX512-BF16 or AMX), the fp32 figure where torch and vLLM emulate it. Work: 2 x the model's matmul
parameters per token (embeddings excluded, the LM head included) for every prefilled and generated
token; attention over the cache is left out, so the fractions are lower bounds.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import time
from contextlib import nullcontext

import torch

from agentrl.config import load_recipe
from agentrl.envs.pool import EnvPool
from agentrl.envs.suites import load_suite
from agentrl.rollout import group_specs, run_episodes


def say(*a) -> None:
    print(*a, flush=True)


def clock_ghz() -> float:
    mhz = [float(line.split(":")[1]) for line in open("/proc/cpuinfo") if line.lower().startswith("cpu mhz")]
    return max(mhz) / 1000 if mhz else 3.0


def matmul_params(model) -> int:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    n = sum(p.numel() for name, p in base.named_parameters() if "embed_tokens" not in name)
    head = base.get_output_embeddings().weight.numel()
    tied = base.get_output_embeddings().weight is base.get_input_embeddings().weight
    return n + (head if tied else 0)


def train_specs(recipe, suite, iteration: int):
    rng = random.Random(recipe.seed * 7919 + iteration)  # as Trainer.train_specs
    k = recipe.rollout.groups_per_iteration
    tasks = rng.sample(suite.train, k) if k <= len(suite.train) else [rng.choice(suite.train) for _ in range(k)]
    return group_specs(tasks, recipe.rollout.group_size, "train", iteration, recipe.seed)


def make(engine: str, recipe, model, tok):
    from agentrl.engines.hf import HFEngine
    from agentrl.policy.llm import LLMPolicy

    if engine.startswith("vllm"):
        from agentrl.engines.factory import make_engine

        dtype = {"": "auto", "fp32": "float32", "bf16": "bfloat16"}[engine.partition("-")[2]]  # vllm = its auto
        eng = make_engine(load_recipe("quickstart", ["rollout.engine=vllm", f"rollout.vllm.dtype={dtype}"]), None, tok)
        say(f"  vllm start-up {eng.start_s:.1f} s ({eng.dtype}, weights: {eng.weights})")
    else:
        dtype = torch.bfloat16 if engine == "hf-bf16" else None
        eng = HFEngine(model, tok, recipe.rollout.batch_size, seed=recipe.seed, compute_dtype=dtype)
    return LLMPolicy(eng, tok, recipe.rollout, greedy=False, seed=recipe.seed)


ENGINES = ("hf-fp32", "hf-bf16", "vllm", "vllm-fp32", "vllm-bf16")


def flops_per_cycle() -> dict[str, int]:
    """Per core and cycle, fp32 and bf16 (see the module docstring)."""
    from agentrl.policy.model import cpu_capability, cpu_supports_bf16

    fp32 = 64 if "AVX512" in cpu_capability().upper() else 32
    return {"fp32": fp32, "bf16": 2 * fp32 if cpu_supports_bf16() else fp32}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--engines",
        nargs="+",
        default=["hf-fp32", "hf-bf16", "vllm"],
        choices=list(ENGINES),
        metavar="ENGINE",
        help=f"of {', '.join(ENGINES)} (vllm = rollout.vllm.dtype auto)",
    )
    ap.add_argument("--iterations", nargs="+", type=int, default=[1], help="whose train episodes to roll out")
    ap.add_argument("--ghz", type=float, default=None, help="the clock for the peak (default: /proc/cpuinfo)")
    ap.add_argument("--cold-pool", action="store_true", help="a new env pool per engine (spawned in the timing)")
    args = ap.parse_args()

    from agentrl.policy.model import cpu_capability, cpu_supports_bf16, load_model

    recipe = load_recipe("quickstart")
    suite = load_suite(recipe.env.suite)
    specs = [s for it in args.iterations for s in train_specs(recipe, suite, it)]
    model, tok = load_model(recipe.model)
    n_params = matmul_params(model)
    cores = len(os.sched_getaffinity(0))
    ghz = args.ghz or clock_ghz()
    peak = {k: cores * ghz * 1e9 * f for k, f in flops_per_cycle().items()}
    load = os.getloadavg()
    say(
        f"{len(specs)} episodes (quickstart iterations {args.iterations}), max {recipe.env.max_steps} steps, "
        f"{n_params / 1e6:.1f} M matmul params; peak {peak['fp32'] / 1e9:.0f} GFLOP/s fp32, "
        f"{peak['bf16'] / 1e9:.0f} bf16 ({cores} cores x {ghz:.2f} GHz, {cpu_capability()}, native bf16: "
        f"{'yes' if cpu_supports_bf16() else 'no'}); load {load[0]:.2f}"
    )
    rows = []
    warm = None if args.cold_pool else EnvPool(recipe.env.workers, recipe.env.step_timeout)
    if warm is not None:
        t0 = time.perf_counter()
        n = recipe.rollout.batch_size
        warm.reset([(i, suite.eval[i % len(suite.eval)], 0) for i in range(n)])
        for i in range(n):
            warm.release(i)
        say(f"env pool: {recipe.env.workers} workers started and warmed up in {time.perf_counter() - t0:.1f} s")
    for name in args.engines:
        say(f"== {name}")
        try:
            policy = make(name, recipe, model, tok)
        except Exception as e:  # e.g. vLLM not installed: say so, go on with the others
            say(f"  skipped: {e}")
            continue
        eng = policy.engine
        with EnvPool(recipe.env.workers, recipe.env.step_timeout) if warm is None else nullcontext(warm) as pool:
            recs = []
            t0 = time.perf_counter()
            st = run_episodes(
                specs,
                policy,
                pool,
                recipe.env.max_steps,
                recs.append,
                concurrency=recipe.rollout.batch_size,
                invalid_penalty=recipe.env.invalid_penalty,
            )
            wall = time.perf_counter() - t0
        s = eng.stats
        work = 2 * n_params * (s.prefilled_tokens + s.generated_tokens)
        bf16 = getattr(eng, "compute_dtype", None) == torch.bfloat16 or getattr(eng, "dtype", "") == "bfloat16"
        kind = "bf16" if bf16 else "fp32"
        rows.append(
            dict(
                name=name,
                wall=wall,
                eps=len(recs) / wall,
                won=sum(r.won for r in recs) / len(recs),
                steps=st.steps,
                engine_s=s.generate_s,
                prefill_tps=s.prefilled_tokens / s.generate_s,
                gen_tps=s.generated_tokens / s.generate_s,
                prefilled=s.prefilled_tokens,
                generated=s.generated_tokens,
                peak=work / s.generate_s / peak[kind],
                kind=kind,
                overhead=(wall - s.generate_s) / s.generate_s,
                env_s=st.env_s,
                policy_s=st.policy_s - s.generate_s,
                write_s=st.write_s,
            )
        )
        r = rows[-1]
        say(f"  {wall:.1f} s, {r['eps']:.3f} episodes/s, engine {r['engine_s']:.1f} s, won {100 * r['won']:.0f}%")
        close = getattr(eng, "close", None)
        if close:
            close()
    if warm is not None:
        warm.close()
    if not rows:
        return
    base = next((r for r in rows if r["name"] == "hf-fp32"), rows[0])
    say("")
    say(
        f"{'engine':<9} {'wall s':>7} {'ep/s':>6} {'x hf32':>6} {'engine s':>8} {'prefill/s':>9} {'gen/s':>6} "
        f"{'prefilled':>9} {'generated':>9} {'of peak':>12} {'overhead':>8} {'won':>5}"
    )
    for r in rows:
        say(
            f"{r['name']:<9} {r['wall']:7.1f} {r['eps']:6.3f} {r['eps'] / base['eps']:6.2f} {r['engine_s']:8.1f} "
            f"{r['prefill_tps']:9.0f} {r['gen_tps']:6.0f} {r['prefilled']:9d} {r['generated']:9d} "
            f"{100 * r['peak']:7.1f}% {r['kind']:>4} {100 * r['overhead']:7.1f}% {100 * r['won']:4.0f}%"
        )
    say("overhead = (rollout wall - engine time) / engine time: prompts, tries, env steps, bookkeeping")
    for r in rows:
        rest = r["wall"] - r["engine_s"] - r["env_s"] - r["policy_s"] - r["write_s"]
        say(
            f"  {r['name']}: env steps {r['env_s']:.1f} s, policy around the engine (prompts, parsing) "
            f"{r['policy_s']:.1f} s, episode hand-off {r['write_s']:.2f} s, rest {rest:.1f} s"
        )
    load2 = os.getloadavg()
    say(
        f"load before {load[0]:.2f}, after {load2[0]:.2f}; "
        + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    )


if __name__ == "__main__":
    main()
