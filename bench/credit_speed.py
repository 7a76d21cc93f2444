"""Time every credit method on a realistic batch.

    python bench/credit_speed.py [--groups 1000] [--group-size 8] [--sim-groups 100]

Builds `groups × group_size` episodes of 1..24 steps (12.5 on average: ~100k steps
for the defaults) whose anchors repeat within a group, with every signal the
methods need, then prints the best-of-3 wall time of `advantages` per method and
of gigpo in similarity mode on a smaller batch (its cost is pairwise string
comparisons). Target: gigpo exact under 1 s for 100k steps.
"""

from __future__ import annotations

import argparse
import random
import time

from agentrl.credit import Episode, Step, get_method


def make_batch(groups: int, group_size: int, seed: int = 0, text: bool = False) -> list[Episode]:
    rng = random.Random(seed)
    episodes = []
    for g in range(groups):
        rooms = [f"room {g}-{k}" for k in range(10)]
        if text:  # observation-like anchors: long, near-duplicates differ by a few words
            rooms = [
                f"-= Kitchen {g} =- You are in a kitchen. There is a {k} table here, a fridge and "
                f"a counter. On the counter you see {k % 3} apples and a knife. Exits: north, east."
                for k in range(10)
            ]
        for _ in range(group_size):
            n = rng.randint(1, 24)
            steps = [
                Step(
                    reward=1.0 if rng.random() < 0.05 else 0.0,
                    anchor=rng.choice(rooms),
                    valid=rng.random() < 0.8,
                    signals={
                        "progress": rng.gauss(0, 0.1),
                        "logratio": rng.gauss(0, 1),
                        "answer_prob": rng.uniform(0.01, 1),
                    },
                )
                for _ in range(n)
            ]
            episodes.append(
                Episode(
                    f"task-{g}",
                    steps,
                    outcome=float(rng.random() < 0.3),
                    signals={"final_answer_prob": rng.uniform(0.01, 1)},
                )
            )
    return episodes


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=1000)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--sim-groups", type=int, default=100)
    args = ap.parse_args()

    batch = make_batch(args.groups, args.group_size)
    n_steps = sum(len(e.steps) for e in batch)
    print(f"batch: {len(batch)} episodes in {args.groups} groups, {n_steps} steps")
    print(f"{'method':<22}{'seconds':>10}{'steps/s':>14}")
    for name in ["grpo", "rloo", "gigpo", "spa", "oprl", "igpo"]:
        m = get_method(name)
        t = best_of(lambda: m.advantages(batch))  # noqa: B023 (called at once)
        print(f"{name:<22}{t:>10.3f}{n_steps / t:>14,.0f}")

    small = make_batch(args.sim_groups, args.group_size, seed=1, text=True)
    n_small = sum(len(e.steps) for e in small)
    for name, params in [("gigpo exact", {}), ("gigpo similarity", {"anchor": "similarity"})]:
        m = get_method("gigpo", **params)
        t = best_of(lambda: m.advantages(small))  # noqa: B023 (called at once)
        print(f"{name:<22}{t:>10.3f}{n_small / t:>14,.0f}   ({n_small} steps, {args.sim_groups} groups, text anchors)")


if __name__ == "__main__":
    main()
