"""Uncertainty of the numbers agentrl prints (pure numpy; no torch).

- `wilson(k, n)`: the 95% Wilson score interval of a proportion (k successes of n): right at 0 and
  n, and honest for the small n of held-out splits, where the normal approximation is not.
- `mean_interval(values)`: mean and 95% Student-t interval of a few values (e.g. one success rate
  per seed, when several runs are combined).
- `paired_bootstrap(diffs)`: mean and 95% percentile-bootstrap interval of paired differences
  (e.g. per (seed, task): method minus baseline), resampling the pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
# Student t 97.5% quantiles for 1..30 degrees of freedom (above 30: the normal's)
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (lo, hi) of k successes in n trials; (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def t975(df: int) -> float:
    return _T975[df - 1] if 1 <= df <= len(_T975) else Z95


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean and its 95% t interval; lo = hi = mean for a single value."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if x.size == 1:
        return m, m, m
    half = t975(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return m, m - half, m + half


def paired_bootstrap(diffs: Sequence[float], n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi) of paired differences with a 95% percentile-bootstrap interval over the pairs."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def fmt_rate(k: float, n: int) -> str:
    """'37.5% [18.5, 61.4]': a success rate with its 95% Wilson interval, in percent."""
    lo, hi = wilson(k, n)
    return f"{100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]" if n else "-"
