"""ALFWorld benchmark: build time per game, reset/step latency through the adapter vs raw
textworld on the same games, and pooled env steps/s.

    python bench/alfworld_env.py [--games 6] [--steps 20] [--pool-seconds 30] [--workers 8]

1. Build: one game of each task type, small and full-size (the eval split's mix of rooms),
   plus five full-size kitchen games (the largest rooms), generated and verified (plan
   played to a win) from scratch in a temporary cache, one process.
2. Latency, same games, same pre-recorded action sequences (the plan's steps, then seeded
   random admissible commands): raw `textworld.start(path, wrappers=[AlfredDemangler])`
   runs in a fresh interpreter (none of the adapter's memos installed) vs `AlfWorldEnv`.
   "load+reset" is a game's first reset in the process, "reset again" a later reset of
   the same game (what a group of G rollouts of one task costs).
3. Pool: random admissible play on the small eval games through `agentrl.envs.pool.EnvPool`
   with `--workers` worker processes and 2 episodes per worker, for `--pool-seconds`
   after a warm-up (workers started, first games loaded); steps/s counts every env
   step, later resets included in the elapsed time. Compared with the same loop in one
   process (workers=0).

The machine is shared: figures are medians over the games, not best-of runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAW = r"""
import json, os, sys, time
spec = json.load(open(sys.argv[1]))
os.environ.setdefault("ALFWORLD_DATA", spec["alfworld_data"])
import textworld
from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
infos = textworld.EnvInfos(admissible_commands=True, won=True, extras=["walkthrough"])
out = []
for game in spec["games"]:
    t0 = time.perf_counter()
    env = textworld.start(game["path"], request_infos=infos, wrappers=[AlfredDemangler])
    env.reset()
    t1 = time.perf_counter()
    env.reset()
    t2 = time.perf_counter()
    steps = []
    for a in game["actions"]:
        s = time.perf_counter(); env.step(a); steps.append(time.perf_counter() - s)
    out.append({"load_reset": t1 - t0, "reset_again": t2 - t1, "steps": steps})
    env.close()
print(json.dumps(out))
"""


def _median_ms(xs: list[float]) -> float:
    return 1000 * statistics.median(xs)


def build_section(games_per_size: int) -> dict[str, list[str]]:
    from agentrl.envs.alfworld import TASK_TYPES, ensure_game, game_path, plan_tasks

    print("== build time per game (generate + plan + verify, one process, fresh cache)")
    ids: dict[str, list[str]] = {}
    kitchens = [f"FloorPlan{i}" for i in range(1, 7)]
    kitchen_types = [t for t in TASK_TYPES if t != "look_at_obj_in_light"]
    sets = {
        "small": plan_tasks("eval", max(games_per_size, 6), seed=0, small=True)[:games_per_size],
        "full": plan_tasks("eval", max(games_per_size, 6), seed=0)[:games_per_size],  # the eval mix of rooms
        "kitch": plan_tasks("eval", 5, seed=0, task_types=kitchen_types, floorplans=kitchens),  # biggest rooms
    }
    for label, tasks in sets.items():
        times = []
        for t in tasks:
            t0 = time.perf_counter()
            ensure_game(t)
            times.append(time.perf_counter() - t0)
        ids[label] = tasks
        metas = [json.loads(game_path(t).read_text())["agentrl"] for t in tasks]
        print(
            f"  {label:5s}: {len(tasks)} games, median {statistics.median(times):.2f} s, "
            f"mean {statistics.mean(times):.2f} s, max {max(times):.2f} s (first includes imports); "
            f"receptacles {min(m['receptacles'] for m in metas)}-{max(m['receptacles'] for m in metas)}, "
            f"objects {min(m['objects'] for m in metas)}-{max(m['objects'] for m in metas)}"
        )
    return ids


def record_actions(env, task: str, steps: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    obs = env.reset(task)
    plan = list(obs.info["walkthrough"])
    actions = []
    for i in range(steps):
        a = plan[i] if i < len(plan) - 1 else rng.choice(obs.admissible)  # stop one short of winning
        actions.append(a)
        tr = env.step(a)
        if tr.terminated:  # a lucky random win: stop, so both sides step a live game only
            break
        obs = tr.observation
    return actions


def latency_section(ids: dict[str, list[str]], steps: int) -> None:
    from agentrl.envs.alfworld import AlfWorldEnv, game_path
    from agentrl.envs.alfworld.generate import cache_root

    print("== latency: raw textworld (fresh process) vs adapter, same games and actions")
    recorder = AlfWorldEnv()
    for label, tasks in ids.items():
        actions = {t: record_actions(recorder, t, steps, seed=i) for i, t in enumerate(tasks)}
        spec = {
            "alfworld_data": str(cache_root() / "alfworld-data"),
            "games": [{"path": str(game_path(t)), "actions": actions[t]} for t in tasks],
        }
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(spec, f)
        raw = json.loads(
            subprocess.run([sys.executable, "-c", RAW, f.name], capture_output=True, text=True, check=True).stdout
        )
        os.unlink(f.name)
        # Adapter in a fresh process too, so both sides start cold.
        ad = json.loads(
            subprocess.run(
                [sys.executable, __file__, "--_adapter", json.dumps({"tasks": tasks, "actions": actions})],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for name, rows in (("raw textworld", raw), ("adapter", ad)):
            lr = statistics.median(r["load_reset"] for r in rows)
            ra = statistics.median(r["reset_again"] for r in rows)
            st = _median_ms([s for r in rows for s in r["steps"]])
            print(f"  {label:5s} {name:14s}: load+reset {lr:6.2f} s   reset again {ra:6.3f} s   step {st:7.1f} ms")
        r_step = _median_ms([s for r in raw for s in r["steps"]]) / _median_ms([s for r in ad for s in r["steps"]])
        r_load = statistics.median(r["load_reset"] for r in raw) / statistics.median(r["load_reset"] for r in ad)
        r_again = statistics.median(r["reset_again"] for r in raw) / statistics.median(r["reset_again"] for r in ad)
        print(
            f"  {label:5s} raw/adapter ratios: load+reset x{r_load:.1f}, reset again x{r_again:.1f}, step x{r_step:.1f}"
        )


def _adapter_timings(payload: str) -> None:
    from agentrl.envs.alfworld import AlfWorldEnv

    spec = json.loads(payload)
    env = AlfWorldEnv(build_missing=False)
    out = []
    for t in spec["tasks"]:
        t0 = time.perf_counter()
        env.reset(t)
        t1 = time.perf_counter()
        env.reset(t)
        t2 = time.perf_counter()
        steps = []
        for a in spec["actions"][t]:
            s = time.perf_counter()
            env.step(a)
            steps.append(time.perf_counter() - s)
        out.append({"load_reset": t1 - t0, "reset_again": t2 - t1, "steps": steps})
    print(json.dumps(out))


def pool_section(seconds: float, workers: int, max_steps: int = 30) -> None:
    from agentrl.envs.alfworld import build_alfworld
    from agentrl.envs.pool import EnvFailure, EnvPool

    tasks = build_alfworld("eval", n=12, seed=0, small=True, workers=2)
    print(
        f"== pooled env steps/s: random admissible play on {len(tasks)} small eval games, "
        f"episodes of at most {max_steps} steps"
    )
    for w in (0, workers):
        slots = max(1, w) * 2
        rng = random.Random(0)
        with EnvPool(workers=w, step_timeout=120) as pool:
            nxt = 0
            obs = {}
            length = {}

            def start(s):
                nonlocal nxt
                task = tasks[nxt % len(tasks)]
                nxt += 1
                o = pool.reset([(s, task, None)])[0]
                if isinstance(o, EnvFailure):
                    raise RuntimeError(f"reset of {task} failed: {o.error}")
                obs[s], length[s] = o, 0  # noqa: B023

            t0 = time.perf_counter()
            for s in range(slots):  # warm-up (worker start, imports, first games): not counted
                start(s)
            warm = time.perf_counter() - t0
            t0 = time.perf_counter()
            n_steps = episodes = failures = 0
            while time.perf_counter() - t0 < seconds:
                reqs = [(s, rng.choice(obs[s].admissible)) for s in range(slots)]
                for (s, _), tr in zip(reqs, pool.step(reqs)):
                    n_steps += 1
                    length[s] += 1
                    if isinstance(tr, EnvFailure):
                        failures += 1
                        start(s)
                        continue
                    obs[s] = tr.observation
                    if tr.terminated or length[s] >= max_steps:
                        episodes += 1
                        start(s)
            elapsed = time.perf_counter() - t0
        print(
            f"  workers={w} ({slots} episodes in flight): {n_steps / elapsed:6.1f} steps/s "
            f"({n_steps} steps, {episodes} episodes, {failures} failures in {elapsed:.0f} s; warm-up {warm:.1f} s)"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--games", type=int, default=6, help="games per size (one per task type at 6)")
    ap.add_argument("--steps", type=int, default=20, help="steps per game in the latency test")
    ap.add_argument("--pool-seconds", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--sections", default="build,latency,pool", help="comma-separated: build,latency,pool")
    ap.add_argument("--_adapter", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._adapter:
        _adapter_timings(args._adapter)
        return
    tmp = tempfile.mkdtemp(prefix="agentrl-bench-alfworld-")
    os.environ["AGENTRL_CACHE"] = tmp  # fresh cache: build times are real; workers inherit it
    print(f"cache: {tmp}  cpus: {os.cpu_count()}")
    sections = set(args.sections.split(","))
    if sections & {"build", "latency"}:
        ids = build_section(args.games)
        if "latency" in sections:
            latency_section(ids, args.steps)
    if "pool" in sections:
        pool_section(args.pool_seconds, args.workers)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
