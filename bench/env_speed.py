"""Env speed: steps/s through the TextWorld adapter vs raw `textworld.start` (same games,
same EnvInfos, same pre-recorded random admissible action sequences).

    python bench/env_speed.py [--games 4] [--episodes 6] [--max-steps 20] [--repeats 3]

Target: adapter overhead <= 10%. Timing is the best of `--repeats` interleaved passes
(raw, adapter, raw, adapter, ...) so load from other processes affects both sides alike.
Games are generated into the agentrl cache on first use.
"""

from __future__ import annotations

import argparse
import random
import time
import warnings

TASKS = [
    "textworld/w2-o3-q4/seed-0",
    "textworld/tw-cooking-r1-t1-open/seed-0",
    "textworld/tw-coin_collector-l5/seed-0",
    "textworld/w2-o2-q2/seed-0",
    "textworld/tw-treasure_hunter-l5/seed-0",
    "textworld/tw-simple-dense-detailed/seed-0",
]


def record(path: str, episodes: int, max_steps: int, seed: int) -> list[list[str]]:
    """Random admissible action sequences, recorded once on the raw env."""
    import textworld

    from agentrl.envs.textworld import REQUEST_INFOS

    rng = random.Random(seed)
    env = textworld.start(path, request_infos=REQUEST_INFOS)
    out = []
    for _ in range(episodes):
        state, actions = env.reset(), []
        for _ in range(max_steps):
            actions.append(rng.choice(sorted(state["admissible_commands"])))
            state, _, done = env.step(actions[-1])
            if done:
                break
        out.append(actions)
    env.close()
    return out


def _clock() -> tuple[float, float]:
    """(cpu, wall) now."""
    return time.process_time(), time.perf_counter()


def _since(t0: tuple[float, float]) -> tuple[float, float]:
    return time.process_time() - t0[0], time.perf_counter() - t0[1]


def run_raw(envs: dict, plans: dict) -> tuple[int, tuple[float, float]]:
    steps, t0 = 0, _clock()
    for task, episodes in plans.items():
        env = envs[task]
        for actions in episodes:
            env.reset()
            for a in actions:
                env.step(a)
            steps += len(actions)
    return steps, _since(t0)


def run_adapter(env, plans: dict) -> tuple[int, tuple[float, float]]:
    steps, t0 = 0, _clock()
    for task, episodes in plans.items():
        for actions in episodes:
            env.reset(task)
            for a in actions:
                env.step(a)
            steps += len(actions)
    return steps, _since(t0)


def adapter_vs_raw(n_games: int, episodes: int, max_steps: int, repeats: int) -> dict:
    """Part (a): per-step cost of the adapter over the bare TextWorld env."""
    import textworld

    from agentrl.envs.textworld import REQUEST_INFOS, TextWorldEnv, build_games

    tasks = TASKS[:n_games]
    t0 = time.perf_counter()
    paths = dict(zip(tasks, map(str, build_games(tasks, workers=2))))
    print(f"games ready in {time.perf_counter() - t0:.1f}s: {', '.join(tasks)}")
    plans = {t: record(paths[t], episodes, max_steps, seed=i) for i, t in enumerate(tasks)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = {t: textworld.start(paths[t], request_infos=REQUEST_INFOS) for t in tasks}
    adapter = TextWorldEnv()
    for t in tasks:  # warm up: first loads and resets are slow on both sides
        raw[t].reset()
        adapter.reset(t)
    inf = (float("inf"), float("inf"))
    best_raw, best_adapter, steps = inf, inf, 0
    for _ in range(repeats):
        steps, dt = run_raw(raw, plans)
        best_raw = tuple(map(min, best_raw, dt))
        _, dt = run_adapter(adapter, plans)
        best_adapter = tuple(map(min, best_adapter, dt))
    for env in raw.values():
        env.close()
    adapter.close()
    # (cpu, wall) seconds per pass; the interpreter runs in-process (jericho via ctypes), so
    # process CPU time counts all of a step's work and is not inflated by other processes.
    return {"steps": steps, "raw": best_raw, "adapter": best_adapter}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--games", type=int, default=4)
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    r = adapter_vs_raw(args.games, args.episodes, args.max_steps, args.repeats)
    n = r["steps"]
    print(f"\n(a) TextWorld steps/s, {n} steps per pass, best of {args.repeats} passes")
    print(f"{'clock':>6} {'raw textworld.start':>20} {'agentrl adapter':>16} {'adapter/raw':>12} {'overhead':>9}")
    for i, clock in enumerate(("cpu", "wall")):
        raw_sps, ad_sps = n / r["raw"][i], n / r["adapter"][i]
        overhead = r["adapter"][i] / r["raw"][i] - 1
        print(
            f"{clock:>6} {raw_sps:>20.1f} {ad_sps:>16.1f} {ad_sps / raw_sps:>12.3f} {overhead:>+9.1%}"
            f"   (target <= +10%: {'ok' if overhead <= 0.10 else 'MISSED'})"
        )


if __name__ == "__main__":
    main()
