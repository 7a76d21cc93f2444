"""Warm start (issue 16): untrained -> after SFT -> after SFT + RL, read from stored runs, and the
SFT:RL budget split.

Runs it reads (names as the README's commands give them; missing ones are left out):
  stages: for each seed S, the sft run `<prefix>-sS` (its eval at iteration 0 = untrained, its last
          eval = after SFT) and the train run `<prefix>-rl-sS` (`train.init_from: <prefix>-sS`; its
          last eval = after SFT + RL).
  split:  `--arms NAME ...`: training runs, each with its sft run if it started from one
          (`train.init_from`); per arm its wall time of SFT and RL and its final held-out success.

For every eval: held-out success with its 95% Wilson interval, and the parse-failure rate (the
share of the eval's turns whose generation held no parseable action: stored action ''). Changes
are paired by task (bootstrap 95% interval).

    python bench/warm_start.py --db ws.db --prefix ws --seeds 0 1 2
    python bench/warm_start.py --db ws.db --arms split-0-s0 split-25-s0 ... --png split.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentrl.errors import UserError  # noqa: E402
from agentrl.stats import fmt_rate, mean_interval, paired_bootstrap  # noqa: E402
from agentrl.store import queries as q  # noqa: E402
from agentrl.store.db import open_store  # noqa: E402


def eval_of(store, run_id: int, iteration: int | None = None):
    """(won by task, n, won, parse-failure rate) of a run's eval at `iteration` (None = its last)."""
    its = q.episode_iterations(store, run_id, split="eval")
    if not its:
        return None
    it = its[-1] if iteration is None else iteration
    eps = q.episodes(store, run_id, iteration=it, split="eval", with_steps=True)
    steps = [s for e in eps for s in e.steps]
    unparsed = sum(1 for s in steps if not s.action.strip())
    by_task = {e.task_id: float(e.won) for e in eps}
    return by_task, len(eps), sum(e.won for e in eps), unparsed / len(steps) if steps else 0.0


def _run(store, name):
    try:
        return q.get_run(store, name, kind=q.TRAINED_KINDS)
    except UserError:
        return None


def _fmt(ev) -> str:
    return f"{fmt_rate(ev[2], ev[1])}, unparsed {100 * ev[3]:.1f}%" if ev else "-"


def _change(a, b) -> str:
    if not a or not b:
        return "-"
    tasks = sorted(a[0].keys() & b[0].keys())
    m, lo, hi = paired_bootstrap([b[0][t] - a[0][t] for t in tasks])
    return f"{100 * m:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _minutes(store, run) -> float:
    return sum(r["wall"].get("total", 0.0) for r in q.iterations(store, run.id) if r["index"] > 0) / 60


def stages(store, prefix: str, seeds: list[int]) -> None:
    # RL change: paired within the RL run, from its iteration-0 eval (the SFT adapter, measured again)
    print("| seed | untrained | after SFT | after SFT + RL | SFT change | RL change | SFT / RL min |")
    print("|---|---|---|---|---|---|---|")
    finals = {"untrained": [], "sft": [], "rl": []}
    for s in seeds:
        sft, rl = _run(store, f"{prefix}-s{s}"), _run(store, f"{prefix}-rl-s{s}")
        e0 = eval_of(store, sft.id, 0) if sft else None
        e1 = eval_of(store, sft.id) if sft else None
        e2 = eval_of(store, rl.id) if rl else None
        r0 = eval_of(store, rl.id, 0) if rl else None  # the RL run's own eval of the SFT adapter
        for key, ev in (("untrained", e0), ("sft", e1), ("rl", e2)):
            if ev:
                finals[key].append(ev[2] / ev[1])
        wall = f"{_minutes(store, sft):.1f} / {_minutes(store, rl):.1f}" if sft and rl else "-"
        print(f"| {s} | {_fmt(e0)} | {_fmt(e1)} | {_fmt(e2)} | {_change(e0, e1)} | {_change(r0, e2)} | {wall} |")
    for key, xs in finals.items():
        if len(xs) > 1:
            m, lo, hi = mean_interval(xs)
            lo, hi = max(0.0, lo), min(1.0, hi)  # a success rate's interval, clipped to [0, 100]
            print(f"mean over {len(xs)} seeds, {key}: {100 * m:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]")


def arms(store, names: list[str], png: str | None) -> None:
    print("| arm | SFT epochs | RL iterations | SFT min | RL min | after SFT | final |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for name in names:
        run = _run(store, name)
        if run is None:
            continue
        recipe = yaml.safe_load(run.recipe)
        ref = (recipe.get("train") or {}).get("init_from")
        sft = _run(store, ref.split(":")[0]) if ref else None
        sft_min = _minutes(store, sft) if sft else 0.0
        epochs = len([r for r in q.iterations(store, sft.id) if r["index"] > 0]) if sft else 0
        rl_min = _minutes(store, run)
        start, final = eval_of(store, run.id, 0), eval_of(store, run.id)
        iters = len([r for r in q.iterations(store, run.id) if r["index"] > 0])
        print(f"| {name} | {epochs} | {iters} | {sft_min:.1f} | {rl_min:.1f} | {_fmt(start)} | {_fmt(final)} |")
        share = sft_min / (sft_min + rl_min) if sft_min + rl_min else 0.0
        rows.append((share, final[2] / final[1] if final else 0.0, name))
    if png and rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.scatter([100 * r[0] for r in rows], [100 * r[1] for r in rows])
        ax.set_xlabel("SFT share of the training wall time (%)")
        ax.set_ylabel("held-out success after RL (%)")
        ax.set_title("SFT:RL budget split (tw-quick, free mode)")
        fig.savefig(png, dpi=120, bbox_inches="tight")
        print(f"wrote {png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--prefix", default="ws")
    ap.add_argument("--seeds", type=int, nargs="*", default=[])
    ap.add_argument("--arms", nargs="*", default=[])
    ap.add_argument("--png", default=None)
    a = ap.parse_args()
    store = open_store(a.db, create=False, readonly=True)
    if a.seeds:
        stages(store, a.prefix, a.seeds)
    if a.arms:
        arms(store, a.arms, a.png)


if __name__ == "__main__":
    main()
