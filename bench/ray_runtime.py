"""The ray runtime vs local, and asynchronous vs synchronous training, side by side in one run.

    python bench/ray_runtime.py                          # both parts on the quickstart (engine: auto)
    python bench/ray_runtime.py --part rollout --set rollout.engine=hf
    python bench/ray_runtime.py --part staleness --staleness 0 1 2

Part `rollout`: the quickstart's train episodes of iteration 1 (the same tasks, seeds and sampling
streams), rolled out with the base model once on `runtime.backend: local` (the env pool's worker
processes, the engine in this process) and once on `ray` (a local Ray instance: as many env actors
as the local pool has workers, one engine actor with this machine's cores as its CPU resource, so
its torch/vLLM threads match the local engine's). Both env pools are started and warmed up first.
Prints episodes/s, the engine's time, and the ray overhead: (ray wall - local wall) / local wall.

Part `staleness`: trains the same recipe and seed for a few iterations once per `train.max_staleness`
value (0 = roll out, then update; 1 or 2 = the rollout of the next iteration(s) runs while the learner
updates) and prints the training wall time (every iteration's total, the evals left out), rollout and
update time, train success, the staleness the episodes had, and the ratio to max_staleness 0. Each run
is a separate `agentrl train` process with its own database and output folder in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def say(msg: str) -> None:
    print(msg, flush=True)


def rollout_part(recipe_name: str, sets: list[str]) -> None:
    import ray

    from agentrl.config import load_recipe
    from agentrl.engines.factory import make_engine
    from agentrl.envs.suites import load_suite
    from agentrl.policy.llm import LLMPolicy
    from agentrl.policy.model import load_model
    from agentrl.rollout import group_specs, run_episodes
    from agentrl.runtime import make_pool

    cores = len(os.sched_getaffinity(0))
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=cores + 2, include_dashboard=False, log_to_driver=False, namespace="agentrl")
    rows = []
    model = tok = None
    for backend in ("local", "ray"):
        workers = max(1, load_recipe(recipe_name, sets).env.workers)  # as many env actors as pool workers
        extra = [f"runtime.backend={backend}", f"runtime.env_workers={workers}"]
        extra.append(f"runtime.engine_resources={{CPU: {cores}}}")
        recipe = load_recipe(recipe_name, [*sets, *extra])
        suite = load_suite(recipe.env.suite)
        rng = random.Random(recipe.seed * 7919 + 1)  # as Trainer.train_specs, iteration 1
        tasks = rng.sample(suite.train, recipe.rollout.groups_per_iteration)
        specs = group_specs(tasks, recipe.rollout.group_size, "train", 1, recipe.seed)
        if model is None:
            model, tok = load_model(recipe.model)
        t0 = time.perf_counter()
        engine = make_engine(recipe, model, tok)
        start = time.perf_counter() - t0
        policy = LLMPolicy(engine, tok, recipe.rollout, seed=recipe.seed)
        with make_pool(recipe) as pool:
            n = recipe.rollout.batch_size
            pool.reset([(i, suite.eval[i % len(suite.eval)], 0) for i in range(n)])  # warm: workers up
            for i in range(n):
                pool.release(i)
            recs = []
            t0 = time.perf_counter()
            run_episodes(specs, policy, pool, recipe.env.max_steps, recs.append, concurrency=n)
            wall = time.perf_counter() - t0
        rows.append(
            dict(
                backend=backend,
                engine=engine.name,
                wall=wall,
                start=start,
                eng=engine.stats.generate_s,
                eps=len(recs) / wall,
                won=sum(r.won for r in recs) / len(recs),
            )
        )
        say(f"  {backend}: {engine.name} engine, {wall:.1f} s ({start:.1f} s to start the engine)")
        close = getattr(engine, "close", None)
        if callable(close):
            close()
    ray.shutdown()
    local = rows[0]
    say(f"{'backend':<8} {'engine':<6} {'wall s':>7} {'ep/s':>6} {'engine s':>8} {'start s':>7} {'won':>5}")
    for r in rows:
        say(
            f"{r['backend']:<8} {r['engine']:<6} {r['wall']:7.1f} {r['eps']:6.3f} {r['eng']:8.1f} {r['start']:7.1f} "
            f"{100 * r['won']:4.0f}%"
        )
    over = (rows[1]["wall"] - local["wall"]) / local["wall"]
    say(f"ray overhead: {100 * over:+.1f}% of the local rollout's wall time")


def run(recipe: str, staleness: int, iterations: int, sets: list[str], root: Path) -> dict:
    d = root / f"s{staleness}"
    d.mkdir()
    db = d / "runs.db"
    cmd = [sys.executable, "-m", "agentrl.cli", "train", recipe, "--db", str(db), "--no-progress"]
    for kv in [
        f"train.max_staleness={staleness}",
        f"train.iterations={iterations}",
        "train.eval_every=0",
        f"train.output_dir={d / 'ckpt'}",
        "eval.episodes=4",
        *sets,
    ]:
        cmd += ["--set", kv]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"max_staleness={staleness} failed:\n{proc.stderr[-3000:]}")
    con = sqlite3.connect(db)
    q = 'SELECT metrics, wall FROM iterations WHERE "index" > 0 ORDER BY "index"'
    its = [(json.loads(m), json.loads(w)) for m, w in con.execute(q)]
    stale = [s for (s,) in con.execute("SELECT json_extract(info, '$.staleness') FROM episodes WHERE split='train'")]
    con.close()
    train_s = sum(w.get("total", 0.0) - w.get("eval", 0.0) for _, w in its)
    return dict(
        s=staleness,
        process_s=wall,
        train_s=train_s,
        per_it=[w.get("total", 0.0) - w.get("eval", 0.0) for _, w in its],
        rollout=sum(w.get("rollout", 0.0) for _, w in its),
        update=sum(w.get("update", 0.0) for _, w in its),
        success=[m.get("success", 0.0) for m, _ in its],
        stale_mean=sum(x or 0 for x in stale) / max(1, len(stale)),
        stale_max=max((x or 0 for x in stale), default=0),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["rollout", "staleness", "both"], default="both")
    ap.add_argument("--recipe", default="quickstart")
    ap.add_argument("--iterations", type=int, default=3, help="staleness: iterations per run")
    ap.add_argument("--staleness", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--set", dest="sets", action="append", default=[], help="recipe overrides (repeatable)")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    say(f"{args.recipe}, overrides {args.sets}; load {load:.2f}")
    if args.part in ("rollout", "both"):
        say("== rollout: local vs ray")
        rollout_part(args.recipe, args.sets)
    if args.part in ("staleness", "both"):
        staleness_part(args)
    say(f"load before {load:.2f}, after {os.getloadavg()[0]:.2f}")


def staleness_part(args) -> None:
    sets = args.sets
    rows = []
    with tempfile.TemporaryDirectory(prefix="agentrl-staleness-") as tmp:
        for s in args.staleness:
            say(f"== max_staleness {s}")
            r = run(args.recipe, s, args.iterations, sets, Path(tmp))
            say(
                f"  training {r['train_s']:.1f} s ({', '.join(f'{x:.0f}' for x in r['per_it'])} s per iteration), "
                f"process {r['process_s']:.0f} s"
            )
            rows.append(r)
    base = rows[0]
    say(f"{'staleness':>9} {'train s':>8} {'x s=0':>6} {'rollout s':>9} {'update s':>8} {'stale':>9} success/iter")
    for r in rows:
        say(
            f"{r['s']:>9} {r['train_s']:8.1f} {base['train_s'] / r['train_s']:6.2f} {r['rollout']:9.1f} "
            f"{r['update']:8.1f} {r['stale_mean']:5.2f}/{r['stale_max']:<3} "
            + " ".join(f"{100 * x:.0f}%" for x in r["success"])
        )
    say("rollout s = the rollouts' own time (with staleness > 0 it overlaps the updates); x s=0 = speed-up")


if __name__ == "__main__":
    main()
