"""`agentrl compare RUN [RUN ...]`: held-out success per run and per credit method, and each
method's difference to the baseline method, paired by seed and task.

Per training run (its stored recipe gives `credit.method`, `seed`, `env.suite`):
- held-out success after training: the eval episodes of its LAST eval iteration (> 0), won / n
  with a 95% Wilson interval; before training: the eval at iteration 0, if stored;
- wall time: the sum of its iterations' wall `total` (training iterations; the eval before
  training, iteration 0, has no `total` and is left out);
- tokens: generated tokens of its training rollouts (the iterations' `generated_tokens` metric
  where stored, else the stored action ids of its train steps) and update tokens (the learner's
  `tokens` metric: real tokens processed, summed over the PPO epochs);
- train episodes.

Per method: the mean over its runs (one per seed) of held-out success with a 95% t interval over
the seeds (a single run: its Wilson interval, marked n=1); mean wall time and tokens.

Paired difference of a method to the baseline method: for each seed both have, for each eval task
both of that seed's runs played in their last eval, won(method) - won(baseline) (a task's
episodes averaged); `paired_bootstrap` over all those pairs.

The helpers below `compare` are pure (no store): the tests call them on hand-made `RunSummary`s.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import func, select

from agentrl.errors import UserError
from agentrl.stats import mean_interval, paired_bootstrap, wilson
from agentrl.store import queries
from agentrl.store.db import Store
from agentrl.store.models import EpisodeRow, StepRow

DEFAULT_PNG = "compare.png"


@dataclass
class RunSummary:
    """One training run as compared: its method, seed, suite and last held-out eval."""

    id: int
    name: str
    method: str
    seed: int | str
    suite: str
    status: str = "finished"
    eval_iteration: int | None = None
    eval_won: int = 0
    eval_episodes: int = 0
    before_won: int | None = None
    before_episodes: int | None = None
    wall_s: float | None = None
    gen_tokens: int | None = None
    update_tokens: int | None = None
    train_episodes: int = 0
    tasks: dict[str, float] = field(default_factory=dict)  # eval task id -> mean won (last eval)

    @property
    def success(self) -> float:
        return self.eval_won / self.eval_episodes if self.eval_episodes else math.nan

    @property
    def before(self) -> float | None:
        return self.before_won / self.before_episodes if self.before_episodes else None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("tasks")
        lo, hi = wilson(self.eval_won, self.eval_episodes)
        d.update(success=_num(self.success), success_lo=lo, success_hi=hi, before=self.before)
        return d


# -- pure helpers ----------------------------------------------------------------------------
def _num(x: float | None) -> float | None:
    """A number for JSON: NaN / missing -> None."""
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def task_wins(episodes: list[tuple[str, bool]]) -> dict[str, float]:
    """(task id, won) pairs -> task id -> share won (a task's episodes averaged)."""
    acc: dict[str, list[int]] = {}
    for task, won in episodes:
        acc.setdefault(task, []).append(int(bool(won)))
    return {t: sum(v) / len(v) for t, v in acc.items()}


def paired_diffs(runs: list[RunSummary], baseline_runs: list[RunSummary]) -> tuple[list[float], list]:
    """won(method) - won(baseline) per (seed, task) both have; returns (diffs, seeds paired)."""
    base = {r.seed: r for r in baseline_runs}
    diffs: list[float] = []
    seeds = []
    for r in sorted(runs, key=lambda r: str(r.seed)):
        b = base.get(r.seed)
        if b is None:
            continue
        common = sorted(set(r.tasks) & set(b.tasks))
        if common:
            seeds.append(r.seed)
        diffs.extend(r.tasks[t] - b.tasks[t] for t in common)
    return diffs, seeds


def _mean(values: list[float | int | None]) -> float | None:
    xs = [float(v) for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def method_order(runs: list[RunSummary], baseline: str) -> list[str]:
    """The baseline method first, then the others in the order their first run was given."""
    seen = [baseline]
    for r in runs:
        if r.method not in seen:
            seen.append(r.method)
    return seen


def summarise_methods(runs: list[RunSummary], baseline: str) -> list[dict[str, Any]]:
    """Per method: success mean and 95% interval over its runs, the paired difference to the
    baseline method (None for the baseline itself), mean wall time and tokens."""
    by_method: dict[str, list[RunSummary]] = {}
    for r in runs:
        by_method.setdefault(r.method, []).append(r)
    if baseline not in by_method:
        raise UserError(
            f"baseline method '{baseline}' has no runs among the runs compared "
            f"(their methods: {', '.join(sorted(by_method))})"
        )
    out = []
    for m in method_order(runs, baseline):
        rs = by_method[m]
        if len(rs) == 1:
            r = rs[0]
            mean = r.success
            lo, hi = wilson(r.eval_won, r.eval_episodes)
            interval = "wilson"
        else:
            mean, lo, hi = mean_interval([r.success for r in rs])
            lo, hi = max(0.0, lo), min(1.0, hi)  # the t interval of a rate, clipped to [0, 1]
            interval = "t"
        diff = None
        if m != baseline:
            diffs, seeds = paired_diffs(rs, by_method[baseline])
            d, dlo, dhi = paired_bootstrap(diffs)
            diff = {"mean": _num(d), "lo": _num(dlo), "hi": _num(dhi), "pairs": len(diffs), "seeds": seeds}
        out.append(
            {
                "method": m,
                "runs": [r.id for r in rs],
                "seeds": sorted({r.seed for r in rs}, key=str),
                "n": len(rs),
                "success_mean": _num(mean),
                "success_lo": _num(lo),
                "success_hi": _num(hi),
                "interval": interval,
                "before_mean": _mean([r.before for r in rs]),
                "diff": diff,
                "wall_s_mean": _mean([r.wall_s for r in rs]),
                "gen_tokens_mean": _mean([r.gen_tokens for r in rs]),
                "update_tokens_mean": _mean([r.update_tokens for r in rs]),
            }
        )
    return out


def check_comparable(runs: list[RunSummary]) -> None:
    """One suite (the same eval tasks) and one run per (method, seed); else a UserError."""
    suites: dict[str, list[int]] = {}
    for r in runs:
        suites.setdefault(r.suite, []).append(r.id)
    if len(suites) > 1:
        listed = "; ".join(f"{s}: run{'s' if len(v) > 1 else ''} {', '.join(map(str, v))}" for s, v in suites.items())
        raise UserError(f"runs on different suites have different eval tasks and cannot be compared ({listed})")
    seen: dict[tuple[str, Any], RunSummary] = {}
    for r in runs:
        other = seen.get((r.method, r.seed))
        if other is not None:
            if other.id == r.id:
                raise UserError(f"run {r.id} is given twice")
            raise UserError(
                f"runs {other.id} and {r.id} are both method '{r.method}' with seed {r.seed}: "
                f"give one run per method and seed (pairs are by seed)"
            )
        seen[(r.method, r.seed)] = r


# -- formatting ------------------------------------------------------------------------------
def fmt_interval(mean: float | None, lo: float | None, hi: float | None) -> str:
    """'62.5% [40.1, 85.0]' (percent)."""
    if mean is None:
        return "-"
    return f"{100 * mean:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def fmt_diff(diff: dict | None) -> str:
    """'+25.0 [+12.5, +37.5] n=24' (percentage points, n = pairs); 'baseline' for None."""
    if diff is None:
        return "baseline"
    if diff["mean"] is None:
        return f"- (no pairs: no seed and task in common) n={diff['pairs']}"
    return f"{100 * diff['mean']:+.1f} [{100 * diff['lo']:+.1f}, {100 * diff['hi']:+.1f}] n={diff['pairs']}"


def _minutes(s: float | None) -> str:
    return "-" if s is None else f"{s / 60:.1f}"


def _tokens(n: float | None) -> str:
    if n is None:
        return "-"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e4:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"


def runs_table(runs: list[RunSummary]) -> Table:
    t = Table(title=f"runs on {escape(runs[0].suite)}" if runs else "runs")
    cols = ("run", "name", "method", "seed", "status", "before", "after [95% CI]", "eval", "train eps")
    for col in (*cols, "wall min", "gen tok", "update tok"):
        t.add_column(col)
    for r in runs:
        before = "-" if r.before is None else f"{100 * r.before:.1f}%"
        lo, hi = wilson(r.eval_won, r.eval_episodes)
        t.add_row(
            str(r.id),
            escape(r.name),
            escape(r.method),
            escape(str(r.seed)),
            escape(r.status),
            before,
            fmt_interval(r.success, lo, hi) + f" {r.eval_won}/{r.eval_episodes}",
            f"iter {r.eval_iteration}",
            str(r.train_episodes),
            _minutes(r.wall_s),
            _tokens(r.gen_tokens),
            _tokens(r.update_tokens),
        )
    return t


def methods_table(methods: list[dict[str, Any]], baseline: str) -> Table:
    t = Table(
        title=f"methods (baseline {escape(baseline)})",
        caption="success: mean over seeds, 95% t interval (n=1: the run's 95% Wilson interval over episodes); "
        "diff: percentage points vs the baseline, paired by seed and task, 95% bootstrap interval, n = pairs",
    )
    cols = ("method", "runs", "seeds", "success [95% CI]", "diff vs baseline [95% CI]")
    for col in (*cols, "wall min", "gen tok", "update tok"):
        t.add_column(col)
    for m in methods:
        success = fmt_interval(m["success_mean"], m["success_lo"], m["success_hi"])
        if m["interval"] == "wilson":
            success += " (n=1, Wilson)"
        t.add_row(
            escape(m["method"]),
            str(m["n"]),
            escape(", ".join(str(s) for s in m["seeds"])),
            success,
            fmt_diff(m["diff"]),
            _minutes(m["wall_s_mean"]),
            _tokens(m["gen_tokens_mean"]),
            _tokens(m["update_tokens_mean"]),
        )
    return t


# -- the PNG ---------------------------------------------------------------------------------
def draw(runs: list[RunSummary], methods: list[dict[str, Any]], baseline: str):
    """A bar per method (mean held-out success) with its 95% interval as error bar and one point
    per run (seed) on it; the x labels carry the paired difference to the baseline."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from agentrl.plot import literal

    fig = Figure(figsize=(max(4.5, 1.6 * len(methods) + 2), 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    xs = list(range(len(methods)))
    means = [100 * (m["success_mean"] or 0.0) for m in methods]
    err = [
        [100 * ((m["success_mean"] or 0.0) - (m["success_lo"] or 0.0)) for m in methods],
        [100 * ((m["success_hi"] or 0.0) - (m["success_mean"] or 0.0)) for m in methods],
    ]
    ax.bar(xs, means, yerr=err, capsize=6, color=[f"C{i % 10}" for i in xs], alpha=0.55, edgecolor="black")
    by_id = {r.id: r for r in runs}
    for x, m in zip(xs, methods):
        pts = [by_id[i] for i in m["runs"]]
        offsets = [0.0] if len(pts) == 1 else [-0.2 + 0.4 * k / (len(pts) - 1) for k in range(len(pts))]
        for dx, r in zip(offsets, pts):
            ax.plot(x + dx, 100 * r.success, "o", color="black", markersize=5, zorder=3)
            label = literal(f"s{r.seed}")
            ax.annotate(label, (x + dx, 100 * r.success), xytext=(4, 2), textcoords="offset points", fontsize=7)
    labels = []
    for m in methods:
        d = m["diff"]
        extra = "baseline" if d is None else ("no pairs" if d["mean"] is None else f"{100 * d['mean']:+.1f} pp vs base")
        labels.append(literal(f"{m['method']} (n={m['n']})\n{extra}"))
    ax.set_xticks(xs, labels)
    ax.set_ylim(0, 105)
    ax.set_ylabel("held-out success after training (%)")
    ax.grid(True, axis="y", alpha=0.3)
    suite = runs[0].suite if runs else ""
    ax.set_title(literal(f"{suite}: mean over seeds, 95% interval (baseline {baseline})"), fontsize=10)
    return fig


# -- reading the store -----------------------------------------------------------------------
def _recipe_fields(run) -> tuple[str, int | str, str]:
    """(credit.method, seed, env.suite) of a run's stored recipe (the recipe's defaults where absent)."""
    try:
        data = yaml.safe_load(run.recipe or "") or {}
    except yaml.YAMLError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    credit = data.get("credit") if isinstance(data.get("credit"), dict) else {}
    env = data.get("env") if isinstance(data.get("env"), dict) else {}
    seed = data.get("seed", 0)
    return str(credit.get("method", "grpo")), seed if isinstance(seed, int) else str(seed), str(env.get("suite", "?"))


def _sum_metric(rows: list[dict], key: str, where: str = "metrics") -> float | None:
    vals = [
        float(v)
        for row in rows
        if isinstance(v := (row.get(where) or {}).get(key), (int, float)) and not isinstance(v, bool)
    ]
    return sum(vals) if vals else None


def load_run(store: Store, ref: str) -> RunSummary:
    """A training run as compared; UserError for an unknown ref, an eval run, or no eval after training."""
    run = queries.get_run(store, ref, kind="train")
    if run.kind != "train":
        raise UserError(f"run {run.id} ({run.name}) is an {run.kind} run, not a training run")
    method, seed, suite = _recipe_fields(run)
    evals: dict[int, list[tuple[str, bool]]] = {}
    for e in queries.episodes(store, run.id, split="eval"):
        evals.setdefault(e.iteration, []).append((e.task_id, e.won))
    last = max((i for i in evals if i > 0), default=None)
    status = queries.display_status(run)
    if last is None:
        raise UserError(f"run {run.id} ({run.name}, {status}) has no held-out eval after training yet")
    rows = queries.iterations(store, run.id)
    gen = _sum_metric(rows, "generated_tokens")
    with store.session() as s:
        if gen is None:  # not a stored metric: count the stored action ids of the train steps (int32 each)
            nbytes = s.scalar(
                select(func.sum(func.length(StepRow.action_ids)))
                .join(EpisodeRow, EpisodeRow.id == StepRow.episode_id)
                .where(EpisodeRow.run_id == run.id, EpisodeRow.split == "train")
            )
            gen = nbytes // 4 if nbytes else None
        train_eps = s.scalar(
            select(func.count(EpisodeRow.id)).where(EpisodeRow.run_id == run.id, EpisodeRow.split == "train")
        )
    upd = _sum_metric(rows, "tokens")
    before = evals.get(0)
    final = evals[last]
    return RunSummary(
        id=run.id,
        name=run.name,
        method=method,
        seed=seed,
        suite=suite,
        status=status,
        eval_iteration=last,
        eval_won=sum(w for _, w in final),
        eval_episodes=len(final),
        before_won=sum(w for _, w in before) if before else None,
        before_episodes=len(before) if before else None,
        wall_s=_sum_metric(rows, "total", where="wall"),
        gen_tokens=None if gen is None else int(gen),
        update_tokens=None if upd is None else int(upd),
        train_episodes=int(train_eps or 0),
        tasks=task_wins(final),
    )


def compare(
    store: Store,
    run_refs: list[str],
    baseline: str | None,
    output: str | None,
    as_json: bool,
    console: Console,
) -> Path | None:
    """`agentrl compare`: the per-run and per-method tables (or JSON) and the PNG. With --json the
    PNG is written only when -o is given. Returns the PNG's path (None when none was written)."""
    if not run_refs:
        raise UserError("give the RUNs to compare (see `agentrl runs`)")
    runs = [load_run(store, ref) for ref in run_refs]
    check_comparable(runs)
    if baseline is None:
        base_method = runs[0].method
    else:
        b = queries.get_run(store, baseline, kind="train")
        if b.kind != "train":
            raise UserError(f"baseline run {b.id} ({b.name}) is an {b.kind} run, not a training run")
        base_method = _recipe_fields(b)[0]
        if base_method not in {r.method for r in runs}:
            raise UserError(
                f"baseline run {b.id} is method '{base_method}', which none of the runs compared has "
                f"(their methods: {', '.join(sorted({r.method for r in runs}))})"
            )
    methods = summarise_methods(runs, base_method)
    path = None
    if output is not None or not as_json:
        from agentrl.plot import resolve_out

        path = resolve_out(output, DEFAULT_PNG)
        try:
            draw(runs, methods, base_method).savefig(path, dpi=100)
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    if as_json:
        data = {
            "suite": runs[0].suite,
            "baseline": base_method,
            "runs": [r.as_dict() for r in runs],
            "methods": methods,
            "wall": "sum of the iterations' wall `total` (s)",
            "tokens": {
                "gen_tokens": "train rollouts' generated tokens: metric `generated_tokens`, else stored action ids",
                "update_tokens": "learner metric `tokens` (processed, all epochs)",
            },
            "png": None if path is None else str(path),
        }
        click.echo(json.dumps(data, indent=2, default=str))
        return path
    console.print(runs_table(runs))
    console.print(methods_table(methods, base_method))
    console.print(f"wrote {path}", markup=False, highlight=False)
    return path
