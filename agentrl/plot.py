"""`agentrl plot`: per-iteration training curves of one run, or of several runs side by side.

Reads only the `iterations` table (one row per iteration, metrics JSON). A train run
stores iteration 0 = the held-out eval before training, then one row per training
iteration with `success`, `return`, `loss`, `kl`, ... and `eval_success` /
`eval_return` on iterations that had an eval; `episodes` / `eval_episodes`, the episodes
those success rates are of, give each point its 95% Wilson band. An eval run stores one
row (index 0) whose metrics are `{"eval": {"success", "mean_return", ...}}`: `run_curves`
reads it as a single eval point, and `plot_run` / `plot_runs` refuse it (one point on an
iteration axis means nothing; `agentrl runs` / `inspect` show its result).

Drawing uses matplotlib's object API on an Agg canvas (no pyplot, no global
backend state, no display needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from agentrl.errors import UserError
from agentrl.stats import wilson
from agentrl.store import queries
from agentrl.store.db import Store

# (panel title, y label, train metric key, eval metric key or None)
PANELS: list[tuple[str, str, str, str | None]] = [
    ("Success rate (shaded: 95% interval)", "success", "success", "eval_success"),
    ("Return", "mean return", "return", "eval_return"),
    ("Loss", "loss", "loss", None),
    ("Policy change (approx. KL to rollout policy)", "approx KL", "approx_kl", None),
]
# success metric key -> the metric key of the number of episodes it is a rate of (for its 95% band)
EPISODE_COUNTS = {"success": "episodes", "eval_success": "eval_episodes"}


@dataclass
class Curves:
    """One run's series: metric key -> (iterations, values), only where the value is a number;
    `episodes`: success metric key -> {iteration: episodes}, where the episode count is stored."""

    run_id: int
    label: str
    kind: str = "train"
    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    episodes: dict[str, dict[int, int]] = field(default_factory=dict)


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


_flatten = queries.flat_metrics


def run_curves(store: Store, run_ref: str | int) -> Curves:
    """Load a run's iterations as plottable series; UserError if the run has none."""
    run = queries.get_run(store, run_ref, kind=queries.TRAINED_KINDS)
    rows = queries.iterations(store, run.id)
    if not rows:
        raise UserError(f"run {run.id} ({run.name}) has no iterations to plot yet")
    curves = Curves(run.id, f"{run.name} #{run.id}", run.kind)
    keys = {k for _, _, train, ev in PANELS for k in (train, ev) if k}
    for row in rows:
        metrics = _flatten(row["metrics"])
        for k in keys:
            v = _number(metrics.get(k))
            if v is not None:
                xs, ys = curves.series.setdefault(k, ([], []))
                xs.append(int(row["index"]))
                ys.append(v)
        for k, count_key in EPISODE_COUNTS.items():
            n = _number(metrics.get(count_key))
            if n and _number(metrics.get(k)) is not None:
                curves.episodes.setdefault(k, {})[int(row["index"])] = int(n)
    return curves


def wilson_band(c: Curves, key: str) -> tuple[list[int], list[float], list[float]]:
    """(iterations, lo, hi) of the 95% Wilson interval of each point of series `key`; NaN where
    the point's episode count is not known (a gap in the band)."""
    xs, ys = c.series[key]
    counts = c.episodes.get(key, {})
    lo, hi = [], []
    for x, y in zip(xs, ys):
        n = counts.get(x)
        a, b = wilson(round(y * n), n) if n else (math.nan, math.nan)
        lo.append(a)
        hi.append(b)
    return xs, lo, hi


def _plottable(c: Curves) -> Curves:
    """Only training (and sft) runs have curves: an eval run is one evaluation, not a series."""
    if c.kind not in queries.TRAINED_KINDS:
        raise UserError(
            f"run {c.run_id} is an {c.kind} run: one evaluation, no curves per iteration to plot "
            f"(see `agentrl runs` or `agentrl inspect {c.run_id}`)"
        )
    return c


def literal(text: str) -> str:
    """`text` (a run name, a method: from the user or the store) as matplotlib draws it literally:
    a '$' would otherwise start mathtext, and an unbalanced formula fails the whole figure."""
    return text.replace("$", r"\$")


def resolve_out(out_path: str | Path | None, default_name: str) -> Path:
    """The PNG path to write: `out_path` (a directory gets `default_name` inside it) or `default_name`
    here; a missing directory or a name not ending in .png is a UserError."""
    out = Path(out_path) if out_path is not None else Path(default_name)
    if out.is_dir():
        out = out / default_name
    if not out.parent.exists():
        raise UserError(f"cannot write {out}: directory {out.parent} does not exist")
    if out.suffix.lower() != ".png":
        raise UserError(f"cannot write {out}: the output must be a .png file")
    return out


def draw(curves: list[Curves], title: str) -> Figure:
    """A 2x2 figure, one panel per PANELS entry; each run one colour, train solid, eval dashed;
    success rates with a shaded 95% Wilson band."""
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2).flat
    colours = [f"C{i % 10}" for i in range(len(curves))]
    several = len(curves) > 1
    for ax, (name, ylabel, train_key, eval_key) in zip(axes, PANELS):
        drawn = False
        for c, colour in zip(curves, colours):
            for key, style, what in ((train_key, "-", "train"), (eval_key, "--", "eval")):
                if key is None or key not in c.series:
                    continue
                xs, ys = c.series[key]
                label = literal(f"{c.label} {what}") if several else what
                ax.plot(xs, ys, style, color=colour, marker="o" if len(xs) < 30 else None, markersize=4, label=label)
                if key in c.episodes:  # a success rate: its 95% Wilson band where the episode count is known
                    ax.fill_between(*wilson_band(c, key), color=colour, alpha=0.15, linewidth=0)
                drawn = True
        ax.set_title(name)
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if train_key == "success":
            ax.set_ylim(-0.05, 1.05)
        if drawn:
            ax.legend(fontsize="small")
            ax.xaxis.get_major_locator().set_params(integer=True)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.suptitle(literal(title))
    return fig


def plot_run(store: Store, run_ref: str | int, out_path: str | Path | None = None) -> Path:
    """Plot one run's per-iteration curves to a PNG and return its path.

    Default output: `<run name>-<run id>.png` in the current directory (a directory
    given as `out_path` gets that name inside it)."""
    c = _plottable(run_curves(store, run_ref))
    name = c.label.rsplit(" #", 1)[0]
    out = resolve_out(out_path, f"{_safe(name)}-{c.run_id}.png")
    draw([c], f"run {c.run_id}: {name}").savefig(out, dpi=100)
    return out


def plot_runs(store: Store, run_refs: list[str | int], out_path: str | Path | None = None) -> Path:
    """Several runs on one figure (e.g. one per credit method); returns the PNG path.

    Default output: `compare-<id>-<id>....png` in the current directory."""
    if not run_refs:
        raise UserError("no runs given to compare")
    curves = [_plottable(run_curves(store, ref)) for ref in run_refs]
    ids = "-".join(str(c.run_id) for c in curves)
    out = resolve_out(out_path, f"compare-{ids}.png")
    draw(curves, "runs " + ", ".join(c.label for c in curves)).savefig(out, dpi=100)
    return out


def _safe(name: str) -> str:
    """A run name as a file-name part: path separators and spaces become '_'."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "run"
