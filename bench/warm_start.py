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
import re
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentrl.errors import UserError  # noqa: E402
from agentrl.stats import fmt_rate, mean_interval, paired_bootstrap, wilson  # noqa: E402
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
    """Per arm: SFT epochs and RL iterations, their wall minutes, the RL run's start and final eval;
    then per split (arm names with their `-sN` seed suffix removed): the mean over seeds."""
    print("| arm | SFT epochs | RL iterations | SFT min | RL min | total min | RL start | final |")
    print("|---|---|---|---|---|---|---|---|")
    groups: dict[str, list[tuple[float, float, float, float]]] = {}  # split -> (share, final, lo, hi)
    by_task: dict[str, dict[tuple[str, str], float]] = {}  # split -> (seed suffix, task) -> won
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
        total = sft_min + rl_min
        mins = f"{sft_min:.1f} | {rl_min:.1f} | {total:.1f}"
        print(f"| {name} | {epochs} | {iters} | {mins} | {_fmt(start)} | {_fmt(final)} |")
        if final:
            lo, hi = wilson(final[2], final[1])
            share = sft_min / total if total else 0.0
            split, seed = re.sub(r"-s\d+$", "", name), name[len(re.sub(r"-s\d+$", "", name)) :]
            groups.setdefault(split, []).append((share, final[2] / final[1], lo, hi))
            by_task.setdefault(split, {}).update({(seed, t): w for t, w in final[0].items()})
    print()
    base = next(iter(by_task), None)
    print(f"| split | seeds | SFT share of the wall | final success, mean [95% t interval] | vs {base} |")
    print("|---|---|---|---|---|")
    for split, rows in groups.items():
        share = sum(r[0] for r in rows) / len(rows)
        xs = [r[1] for r in rows]
        if len(xs) > 1:
            m, lo, hi = mean_interval(xs)
            cell = f"{100 * m:.1f}% [{100 * max(0.0, lo):.1f}, {100 * min(1.0, hi):.1f}]"
        else:
            cell = f"{100 * xs[0]:.1f}%"
        pairs = sorted(by_task[split].keys() & by_task[base].keys())
        d, dlo, dhi = paired_bootstrap([by_task[split][k] - by_task[base][k] for k in pairs])
        diff = "baseline" if split == base else f"{100 * d:+.1f} [{100 * dlo:+.1f}, {100 * dhi:+.1f}] n={len(pairs)}"
        print(f"| {split} | {len(xs)} | {100 * share:.0f}% | {cell} | {diff} |")
    if png and groups:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for split, rows in groups.items():
            x = [100 * r[0] for r in rows]
            y = [100 * r[1] for r in rows]
            err = [[100 * (r[1] - r[2]) for r in rows], [100 * (r[3] - r[1]) for r in rows]]
            ax.errorbar(x, y, yerr=err, fmt="o", capsize=3, label=split)
        ax.set_xlabel("SFT share of the training wall time (%)")
        ax.set_ylabel("held-out success after RL (%, 95% Wilson)")
        ax.set_ylim(0, 100)
        ax.set_title("SFT:RL budget split (tw-quick, free mode), one point per seed")
        ax.legend()
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
