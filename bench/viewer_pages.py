"""How fast `agentrl view` answers on a big database: every page type, median of several requests.

    python bench/viewer_pages.py [--db PATH] [--episodes 10000] [--repeat 5]

Builds (once; reused when PATH exists) a realistic database through the Store API: one training
run of `--episodes` episodes (groups of 8, 6-14 steps each, observations of a few hundred
characters from a handful of rooms per task so that anchors recur, prompt token ids of 400-1500
tokens per step like a real run's, generated ids and log-probs) with advantages of two methods
(gigpo, and spa with its `progress` signal) on every train step, plus a small second run to compare
against. Then starts `agentrl view` (uvicorn, a subprocess, as a user runs it) and times each
page over HTTP: the runs list, a run's curves and credit table, a comparison, the first and a deep
page of episodes, filtered pages, a text search for a rare and for a common word, one episode, one
group. Prints a table (ms) and the machine's load.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from agentrl.store import EpisodeRecord, StepRecord, open_store  # noqa: E402
from tests.viewer_db import running_viewer  # noqa: E402

NP = np.random.default_rng(0)

GROUP = 8
ROOMS = ["kitchen", "bedchamber", "pantry", "cellar", "garden", "study", "attic", "hall", "workshop", "chamber"]
THINGS = ["box", "locker", "safe", "chest", "dresser", "table", "shelf", "toolbox", "cabinet", "crate"]
ITEMS = ["key", "passkey", "blanket", "mug", "apple", "coin", "lantern", "book", "rope", "knife"]
FILLER = (
    "You arrive in a {room}. A normal one. You begin looking for stuff. Were you looking for a {thing}? "
    "Because look over there, it's a {thing}. On the {thing} you make out a {item}. There is an unguarded "
    "exit to the {dir}. You don't like doors? Why not try going {dir2}, that entranceway is unblocked."
)
DIRS = ["north", "south", "east", "west"]


def _room_text(rng: random.Random, task: int, k: int) -> str:
    r = random.Random(task * 1000 + k)  # a task's rooms are fixed: anchors recur within a group
    return f"-= {ROOMS[(task + k) % len(ROOMS)].title()} =-\n" + FILLER.format(
        room=ROOMS[(task + k) % len(ROOMS)],
        thing=r.choice(THINGS),
        item=r.choice(ITEMS),
        dir=r.choice(DIRS),
        dir2=r.choice(DIRS),
    )


def _episode(rng: random.Random, task: int, group: str, iteration: int, split: str, sample: int) -> EpisodeRecord:
    n = rng.randint(6, 14)
    won = rng.random() < 0.3
    steps = []
    room = 0
    for t in range(n):
        if rng.random() < 0.4:
            room = rng.randrange(4)
        text = _room_text(rng, task, room)
        action = rng.choice(
            ["go " + rng.choice(DIRS), f"take {rng.choice(ITEMS)}", f"open {rng.choice(THINGS)}", "look"]
        )
        steps.append(
            StepRecord(
                t=t,
                observation=text + ("\n\nYou are carrying: a " + rng.choice(ITEMS) + "." if t % 3 else ""),
                action=action,
                reward=1.0 if won and t == n - 1 else 0.0,
                terminated=won and t == n - 1,
                truncated=not won and t == n - 1,
                anchor=text,
                admissible=sorted(
                    {f"go {d}" for d in DIRS} | {f"take {rng.choice(ITEMS)}" for _ in range(4)} | {"look"}
                ),
                raw=action,
                prompt_ids=NP.integers(0, 49152, rng.randint(400, 1500), dtype=np.int32),  # encoded as is
                action_ids=[rng.randrange(49152) for _ in range(rng.randint(2, 6))],
                logprobs=[-rng.random() for _ in range(4)],
                info={"dropped_turns": 0},
            )
        )
    return EpisodeRecord(
        task_id=f"textworld/w2-o3-q4/seed-{task}",
        group_id=group,
        env="textworld",
        split=split,
        iteration=iteration,
        seed=40000 + task,
        policy="llm:smollm2-135m-instruct",
        status="ok",
        won=won,
        ret=float(won),
        goal="First, open the locker. Then take the blanket from the locker. Then put the blanket in the dresser.",
        final_observation="*** The End ***" if won else "",
        info={"sample": sample, "engine": "vllm", "weights_version": iteration},
        wall_s=rng.uniform(5, 15),
        steps=steps,
    )


def _metrics(rng: random.Random, it: int, recs: list[EpisodeRecord]) -> dict:
    return {
        "success": sum(r.won for r in recs) / len(recs),
        "return": sum(r.ret for r in recs) / len(recs),
        "length": sum(r.length for r in recs) / len(recs),
        "episodes": len(recs),
        "loss": rng.uniform(-0.1, 0.4),
        "pg_loss": rng.uniform(-0.1, 0.4),
        "approx_kl": rng.uniform(0, 0.03),
        "kl": 0.0,
        "clip_frac": rng.uniform(0, 0.03),
        "entropy": rng.uniform(0.03, 0.1),
        "grad_norm": rng.uniform(0.05, 0.4),
        "grad_norm_max": rng.uniform(0.2, 1.2),
        "estimator_loss": 0.2 / it,
        "progress_abs": 0.1,
    }


def build(path: Path, episodes: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    store = open_store(path)
    run = store.create_run(
        "bench-gigpo-spa", "name: bench\nenv: {suite: textworld-w2-o3-q4}\ncredit: {method: gigpo}\n", "train"
    )
    evals = 16
    per_iter = 32 * GROUP
    iters = max(1, (episodes - evals) // per_iter)
    t0 = time.perf_counter()
    eval_recs = [_episode(rng, 1000 + i, f"eval/it0/{i}/seed-{1000 + i}", 0, "eval", 0) for i in range(evals)]
    for r in eval_recs:
        store.write_episode(r, run)
    store.add_iteration(
        run, 0, {"eval_success": sum(r.won for r in eval_recs) / evals, "eval_episodes": evals}, {"eval": 60.0}
    )
    for it in range(1, iters + 1):
        recs = []
        for g in range(per_iter // GROUP):
            task = rng.randrange(64)
            for k in range(GROUP):
                rec = _episode(rng, task, f"it{it}/{g}/textworld/w2-o3-q4/seed-{task}", it, "train", k)
                store.write_episode(rec, run)
                recs.append(rec)
        for method in ("gigpo", "spa"):
            rows = [
                (st.id, rng.gauss(0, 1), {"progress": rng.random()} if method == "spa" else {})
                for r in recs
                for st in r.steps
            ]
            store.write_advantages(method, rows)
        store.add_iteration(
            run, it, _metrics(rng, it, recs), {"rollout": rng.uniform(20, 40), "update": rng.uniform(20, 60)}
        )
        print(
            f"  iteration {it}/{iters}: {it * per_iter + evals} episodes, {time.perf_counter() - t0:.0f} s", flush=True
        )
    store.add_checkpoint(run, iters, str(path.parent / "runs" / f"bench-{run}" / f"iter-{iters:04d}"), {})
    store.set_run_status(run, "finished")
    other = store.create_run(
        "bench-grpo", "name: bench\nenv: {suite: textworld-w2-o3-q4}\ncredit: {method: grpo}\n", "train"
    )
    for it in range(1, 4):
        recs = [_episode(rng, 1, f"it{it}/0/x", it, "train", k) for k in range(GROUP)]
        for r in recs:
            store.write_episode(r, other)
        store.add_iteration(other, it, _metrics(rng, it, recs), {"rollout": 30.0, "update": 30.0})
    store.set_run_status(other, "finished")
    store.close()


def _get(url: str) -> tuple[float, int, int]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        body = r.read()
        status = r.status
    return time.perf_counter() - t, status, len(body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default=str(Path(tempfile.gettempdir()) / "agentrl-viewer-bench" / "runs.db"))
    ap.add_argument("--episodes", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    path = Path(args.db)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"building {path} ({args.episodes} episodes) ...", flush=True)
        t = time.perf_counter()
        build(path, args.episodes)
        print(f"built in {time.perf_counter() - t:.0f} s", flush=True)
    store = open_store(path, create=False, readonly=True)
    with store.session() as s:
        conn = s.connection()
        n_ep = conn.exec_driver_sql("SELECT count(*) FROM episodes").scalar()
        n_st = conn.exec_driver_sql("SELECT count(*) FROM steps").scalar()
        n_adv = conn.exec_driver_sql("SELECT count(*) FROM advantages").scalar()
        mid = conn.exec_driver_sql("SELECT id, group_id FROM episodes WHERE run_id = 1 AND split = 'train' "
                                   "ORDER BY id LIMIT 1 OFFSET 5000").one()  # fmt: skip
    store.close()
    size = path.stat().st_size / 2**20
    print(f"database: {path} ({size:.0f} MiB): {n_ep} episodes, {n_st} steps, {n_adv} advantages")

    from agentrl.viewer.app import group_url

    pages = [
        ("runs", "/"),
        ("run (curves, credit table)", "/run/1"),
        ("compare 2 runs", "/compare?run=1&run=2"),
        ("episodes, page 1", "/run/1/episodes"),
        ("episodes, page 150 (deep)", "/run/1/episodes?page=150"),
        ("episodes, filtered", "/run/1/episodes?split=train&outcome=won&min_len=10"),
        ("episodes, filtered, last page", "/run/1/episodes?split=train&outcome=won&min_len=10&page=9999"),
        ("episodes, task filter", "/run/1/episodes?task=seed-17"),
        ("search, rare word (no match)", "/run/1/episodes?q=zeppelin"),
        ("search, common word", "/run/1/episodes?q=lantern"),
        ("search + filters, deep page", "/run/1/episodes?q=lantern&split=train&page=40"),
        ("episode", f"/episode/{mid[0]}"),
        ("group (8 episodes)", group_url(1, mid[1])),
    ]
    with running_viewer(path) as base:
        load0 = os.getloadavg()
        rows = []
        for name, url in pages:
            first, status, nbytes = _get(base + url)  # the first request (a cold cache), then the timed ones
            times = [_get(base + url)[0] for _ in range(args.repeat)]
            rows.append((name, status, first, statistics.median(times), min(times), max(times), nbytes))
        load1 = os.getloadavg()
    print(f"\n{'page':<34} {'status':>6} {'first ms':>9} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'KiB':>7}")
    for name, status, first, med, lo, hi, nbytes in rows:
        ms = " ".join(f"{v * 1000:>{w}.1f}" for v, w in ((first, 9), (med, 10), (lo, 8), (hi, 8)))
        print(f"{name:<34} {status:>6} {ms} {nbytes / 1024:>7.1f}")
    before, after = (" ".join(f"{x:.2f}" for x in load) for load in (load0, load1))
    print(f"\nfirst: the page's first request; median/min/max of the {args.repeat} after it")
    print(f"load average (1, 5, 15 min) before {before}, after {after}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
