"""Compare credit methods on one suite with the same budget and seeds.

    python bench/credit_compare.py [--recipe quickstart] [--seeds 0 1 2]
        [--methods grpo rloo gigpo spa oprl igpo] [--iterations N] [--out DIR] [--set KEY=VALUE ...]
        [--jobs N]
    python bench/credit_compare.py --tiny          # toy chain suite + a tiny random model: a smoke run

Runs `agentrl train RECIPE --set credit.method=M --set seed=S` for every method and seed into
one database (`DIR/compare.db`), then reads the `iterations` table and prints, per method
(mean over seeds): held-out success before and after training, training return and episode
length (mean over iterations), and the wall time of a training iteration (rollout, signals,
credit, update, signals update; eval and checkpoints excluded) relative to grpo,
with the learned parts' own cost (signals + signals_update) beside it. Writes the table as
JSON and a comparison plot (`agentrl.plot.plot_runs`) into DIR.

The seed changes the model's LoRA init, the task sample and the sampling; the same seed
gives every method the same tasks in every iteration.

`--jobs N` trains N runs at a time, each with cores/N torch threads (AGENTRL_THREADS); every run
then shares the machine the same way, so the per-iteration times stay comparable with each other
(not with a run that had the machine to itself).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

METHODS = ["grpo", "rloo", "gigpo", "spa", "oprl", "igpo"]


def iteration_s(w: dict) -> float:
    """A training iteration's wall time without its eval and checkpoint (rollout, signals, credit,
    update, signals update), whether or not the stored "credit" time includes "signals"."""
    return w.get("total", 0.0) - w.get("eval", 0.0) - w.get("checkpoint", 0.0)


def tiny_setup(out: Path) -> Path:
    """A tiny random Llama saved under `out` (reused) and a recipe on the toy chain suite; returns the recipe."""
    import torch

    from agentrl.policy.model import tiny_model

    model_dir = out / "tiny-model"
    if not (model_dir / "config.json").is_file():
        model, tok = tiny_model(hidden=64, layers=2, heads=4, seed=1)
        with torch.no_grad():  # as tests/conftest.py: large enough embeddings for a learnable preference
            model.get_input_embeddings().weight.mul_(4.0)
        model.save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
    recipe = {
        "name": "tiny-compare",
        "seed": 0,
        "policy": "llm",
        "env": {"suite": "toy-chain", "max_steps": 10, "workers": 0},
        "model": {"path": str(model_dir)},
        "rollout": {
            "group_size": 4,
            "groups_per_iteration": 4,
            "action_mode": "admissible",
            "history": -1,
            "temperature": 1.0,
            "max_new_tokens": 8,
        },
        "credit": {"method": "grpo"},
        "learner": {
            "lora_rank": 8,
            "lora_alpha": 16,
            "lr": 5e-3,
            "layout": "concat",
            "tokens_per_step": 2048,
            "target_modules": ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
        },
        "train": {"iterations": 3, "eval_every": 0, "checkpoint_every": 100},
        "eval": {"episodes": 8, "greedy": False},
    }
    path = out / "tiny-compare.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def train_one(
    recipe: Path,
    db: Path,
    name: str,
    method: str,
    seed: int,
    iterations: int | None,
    out: Path,
    extra: list[str],
    env: dict,
) -> tuple[bool, str]:
    sets = [
        f"credit.method={method}",
        f"seed={seed}",
        f"name={name}",
        f"train.output_dir={out / 'checkpoints'}",
        *extra,
    ]
    if iterations is not None:
        sets.append(f"train.iterations={iterations}")
    cmd = [sys.executable, "-m", "agentrl.cli", "train", str(recipe), "--db", str(db), "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    tail = (proc.stderr or proc.stdout).strip().splitlines()
    return proc.returncode == 0, tail[-1] if tail else ""


def run_summary(iters: list[dict]) -> dict:
    """One run's iterations table -> the figures of the comparison."""
    first = next((r["metrics"] for r in iters if r["index"] == 0), {})
    train = [r for r in iters if r["index"] > 0]
    last = train[-1]["metrics"] if train else {}
    wall = [r["wall"] or {} for r in train]
    return {
        "before": first.get("eval_success"),
        "after": last.get("eval_success"),
        "return": mean(r["metrics"].get("return", 0.0) for r in train) if train else None,
        "length": mean(r["metrics"].get("length", 0.0) for r in train) if train else None,
        "iter_s": mean(iteration_s(w) for w in wall) if wall else None,
        "signals_s": mean(w.get("signals", 0.0) + w.get("signals_update", 0.0) for w in wall) if wall else None,
        "rollout_s": mean(w.get("rollout", 0.0) for w in wall) if wall else None,
        "update_s": mean(w.get("update", 0.0) for w in wall) if wall else None,
    }


def _avg(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return mean(vals) if vals else None


def aggregate(per_run: dict[str, list[dict]]) -> dict[str, dict]:
    out = {m: {k: _avg(rows, k) for k in rows[0]} | {"runs": len(rows)} for m, rows in per_run.items() if rows}
    base = out.get("grpo", {}).get("iter_s")
    for m in out.values():
        m["overhead"] = m["iter_s"] / base - 1 if base and m.get("iter_s") is not None else None
        m["signals_frac"] = m["signals_s"] / base if base and m.get("signals_s") is not None else None
    return out


def print_table(summary: dict[str, dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    num = lambda x, f=".2f": "-" if x is None else format(x, f)  # noqa: E731
    t = Table(title="credit methods: same suite, budget and seeds (mean over seeds)")
    for c in (
        "method",
        "runs",
        "eval before",
        "eval after",
        "change",
        "return",
        "length",
        "s/iter",
        "rollout s",
        "update s",
        "signals s",
        "vs grpo",
        "signals/grpo",
    ):
        t.add_column(c, justify="right")
    for m, r in summary.items():
        change = None if r["before"] is None or r["after"] is None else r["after"] - r["before"]
        t.add_row(
            m,
            str(r["runs"]),
            pct(r["before"]),
            pct(r["after"]),
            "-" if change is None else f"{100 * change:+.1f} pts",
            num(r["return"], ".3f"),
            num(r["length"], ".2f"),
            num(r["iter_s"]),
            num(r["rollout_s"]),
            num(r["update_s"]),
            num(r["signals_s"]),
            "-" if r["overhead"] is None else f"{100 * r['overhead']:+.0f}%",
            pct(r["signals_frac"]),
        )
    Console(width=200).print(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="quickstart", help="a recipe file or a packaged recipe's name")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--iterations", type=int, default=None, help="override train.iterations")
    ap.add_argument("--out", default=None, help="output folder (default runs/credit-compare[-tiny])")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra recipe override for every run (repeatable)",
    )
    ap.add_argument("--tiny", action="store_true", help="toy chain suite + tiny random model (smoke run)")
    ap.add_argument("--jobs", type=int, default=1, help="training runs at a time (each gets cores/jobs threads)")
    args = ap.parse_args()

    from agentrl.plot import plot_runs
    from agentrl.recipe_files import resolve_recipe
    from agentrl.store import queries as q
    from agentrl.store.db import open_store

    out = Path(args.out or ROOT / "runs" / ("credit-compare-tiny" if args.tiny else "credit-compare")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    recipe = tiny_setup(out) if args.tiny else resolve_recipe(args.recipe).resolve()
    base = yaml.safe_load(recipe.read_text()).get("name", "run")
    db = out / "compare.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if args.tiny:  # tiny matrices: one thread is faster, and leaves the other cores alone
        env.update(OMP_NUM_THREADS="1", AGENTRL_THREADS="1")

    if args.jobs > 1:
        threads = str(max(1, (os.cpu_count() or 1) // args.jobs))
        env.update(OMP_NUM_THREADS=threads, AGENTRL_THREADS=threads)

    plan = [(seed, m, f"{base}-{m}-s{seed}") for seed in args.seeds for m in args.methods]

    def launch(item: tuple[int, str, str]) -> tuple[bool, str]:
        seed, m, name = item
        t0 = time.perf_counter()
        ok, last = train_one(recipe, db, name, m, seed, args.iterations, out, args.overrides, env)
        print(
            f"{name}: {'ok' if ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s" + ("" if ok else f" ({last})"),
            flush=True,
        )
        return ok, last

    store = open_store(str(db))  # creates the schema once, before parallel runs race to do it
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(launch, plan))

    per_run: dict[str, list[dict]] = {m: [] for m in args.methods}
    runs: dict[str, dict] = {}  # "method-sSEED" -> that run's figures
    run_ids: list[int] = []
    for (seed, m, name), (ok, _) in zip(plan, results):
        if not ok:
            continue
        run = q.get_run(store, name)
        run_ids.append(run.id)
        runs[f"{m}-s{seed}"] = run_summary(q.iterations(store, run.id))
        per_run[m].append(runs[f"{m}-s{seed}"])
    summary = aggregate(per_run)
    if not summary:
        sys.exit("no run finished")
    print(
        "per run (eval before -> after): "
        + ", ".join(f"{k} {100 * (r['before'] or 0):.1f}->{100 * (r['after'] or 0):.1f}%" for k, r in runs.items())
    )
    print_table(summary)
    (out / "credit_compare.json").write_text(
        json.dumps({"recipe": str(recipe), "seeds": args.seeds, "summary": summary, "runs": runs}, indent=1)
    )
    png = plot_runs(store, run_ids, out / "credit_compare.png")
    print(f"database {db}\nplot {png}\ntable {out / 'credit_compare.json'}")


if __name__ == "__main__":
    main()
