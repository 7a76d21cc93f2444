"""Per-iteration curves as SVG geometry, computed on the server.

A chart is a dict of numbers (pixel coordinates, tick positions) plus the labels the template
writes as text (autoescaped there); nothing here produces markup. The panels follow the keys the
trainer stores in `iterations.metrics` (`RolloutMetrics`, `UpdateMetrics`, `EvalMetrics`, the
learner's metrics) and `iterations.wall` (`Timings`), see agentrl/train.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from agentrl.stats import wilson
from agentrl.store.queries import CREDIT_METRICS

# (title, [(source, key, series label)], fixed y range or None); source: "m" metrics, "w" wall
PANELS: list[tuple[str, list[tuple[str, str, str]], tuple[float, float] | None]] = [
    ("Success rate (band: 95% Wilson)", [("m", "success", "train"), ("m", "eval_success", "held-out")], (0.0, 1.0)),
    ("Return", [("m", "return", "train"), ("m", "eval_return", "held-out")], None),
    ("Episode length", [("m", "length", "train"), ("m", "eval_length", "held-out")], None),
    ("Loss", [("m", "loss", "loss"), ("m", "pg_loss", "pg loss")], None),
    ("KL", [("m", "approx_kl", "approx KL to rollout policy"), ("m", "kl", "k3 KL to reference")], None),
    ("Clip fraction", [("m", "clip_frac", "clip"), ("m", "dual_clip_frac", "dual clip"),
                       ("m", "tis_clip_frac", "TIS cap")], None),
    ("Entropy", [("m", "entropy", "entropy")], None),
    ("Gradient norm", [("m", "grad_norm", "mean"), ("m", "grad_norm_max", "max")], None),
    ("Wall time per iteration (s)", [("w", "rollout", "rollout"), ("w", "update", "update"),
                                     ("w", "total", "total")], None),
    ("Learned signal", [("m", k, k) for k in CREDIT_METRICS], None),
]  # fmt: skip
# success key -> the key of the episode count it is a rate of (its 95% band)
EPISODE_COUNTS = {"success": "episodes", "eval_success": "eval_episodes"}

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
DASHES = ("", "6 3", "2 3", "8 3 2 3")

W, H = 460, 230
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 12, 30


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    colour: str = PALETTE[0]
    dash: str = ""
    band: list[tuple[float, float, float]] = field(default_factory=list)  # (x, lo, hi)


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def nice_ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1, round(step))
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9 and len(ticks) < 50:
        ticks.append(round(v, 12))
        v += step
    return ticks


def fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-3:
        return f"{v:.1e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{v:.4g}"


def line_chart(title: str, series: list[Series], y_range: tuple[float, float] | None = None) -> dict[str, Any] | None:
    """SVG geometry of a line chart over iterations; None when no series has a point."""
    series = [s for s in series if s.points]
    if not series:
        return None
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points] + [v for s in series for _, lo, hi in s.band for v in (lo, hi)]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y_range is not None:
        y0, y1 = y_range
        y0, y1 = min(y0, min(ys)), max(y1, max(ys))
    else:
        y0, y1 = min(ys), max(ys)
        pad = (y1 - y0) * 0.08 or (abs(y0) * 0.1 or 1.0)
        y0, y1 = y0 - pad, y1 + pad
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float) -> float:
        return round(LEFT + (x - x0) / (x1 - x0) * pw, 1)

    def py(y: float) -> float:
        return round(TOP + (1 - (y - y0) / (y1 - y0)) * ph, 1)

    lines, bands = [], []
    for s in series:
        pts = sorted(s.points)
        lines.append(
            {
                "points": " ".join(f"{px(x)},{py(y)}" for x, y in pts),
                "markers": [
                    {"x": px(x), "y": py(y), "tip": f"{s.label} · iteration {x:g}: {fmt_tick(y)}"} for x, y in pts
                ],
                "colour": s.colour,
                "dash": s.dash,
                "label": s.label,
            }
        )
        if s.band:
            b = sorted(s.band)
            upper = [f"{px(x)},{py(hi)}" for x, _, hi in b]
            lower = [f"{px(x)},{py(lo)}" for x, lo, _ in reversed(b)]
            bands.append({"points": " ".join(upper + lower), "colour": s.colour})
    xt = [t for t in nice_ticks(x0, x1, 6, integer=True) if x0 <= t <= x1]
    yt = [t for t in nice_ticks(y0, y1, 5) if y0 <= t <= y1]
    return {
        "title": title,
        "width": W,
        "height": H,
        "left": LEFT,
        "right": W - RIGHT,
        "top": TOP,
        "bottom": H - BOTTOM,
        "xticks": [{"pos": px(t), "label": f"{t:g}"} for t in xt],
        "yticks": [{"pos": py(t), "label": fmt_tick(t)} for t in yt],
        "lines": lines,
        "bands": bands,
        "legend": [{"label": s.label, "colour": s.colour, "dash": s.dash} for s in series],
        "points": sum(len(s.points) for s in series),
    }


def _series_points(rows: list[dict[str, Any]], source: str, key: str) -> tuple[list, list]:
    pts, band = [], []
    for r in rows:
        v = _number((r["metrics"] if source == "m" else r["wall"]).get(key))
        if v is None:
            continue
        pts.append((float(r["index"]), v))
        n = _number(r["metrics"].get(EPISODE_COUNTS[key])) if key in EPISODE_COUNTS else None
        if n and 0 <= v <= 1:
            lo, hi = wilson(round(v * n), int(n))
            band.append((float(r["index"]), lo, hi))
    return pts, band


def _present(keys: list[tuple[str, str, str]], runs: list[list[dict[str, Any]]]) -> list[tuple[str, str, str]]:
    """The panel's keys that have a number in some row of some run (colours and dashes go by these)."""
    return [k for k in keys if any(_series_points(rows, k[0], k[1])[0] for rows in runs)]


def run_charts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One run's panels (rows: `data.iterations`); series in a panel by colour."""
    out = []
    for title, keys, y_range in PANELS:
        series = []
        for i, (src, key, label) in enumerate(_present(keys, [rows])):
            pts, band = _series_points(rows, src, key)
            series.append(Series(label, pts, PALETTE[i % len(PALETTE)], "", band))
        chart = line_chart(title, series, y_range)
        if chart:
            out.append(chart)
    return out


def compare_charts(runs: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Several runs' panels overlaid: one colour per run, one dash pattern per metric of a panel
    (Wilson bands only for up to 3 runs, where they stay readable)."""
    out = []
    for title, keys, y_range in PANELS:
        series = []
        present = _present(keys, [rows for _, rows in runs])
        for ri, (label, rows) in enumerate(runs):
            for ki, (src, key, klabel) in enumerate(present):
                pts, band = _series_points(rows, src, key)
                colour, dash = PALETTE[ri % len(PALETTE)], DASHES[ki % len(DASHES)]
                series.append(Series(f"{label} · {klabel}", pts, colour, dash, band if len(runs) <= 3 else []))
        chart = line_chart(title, series, y_range)
        if chart:
            out.append(chart)
    return out
