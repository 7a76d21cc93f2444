"""agentrl.stats: the 95% intervals printed beside success rates and differences."""

import math

import numpy as np
import pytest

from agentrl.stats import Z95, fmt_rate, mean_interval, paired_bootstrap, t975, wilson


def test_wilson_known_values():
    lo, hi = wilson(6, 16)
    assert (lo, hi) == (pytest.approx(0.1848, abs=5e-5), pytest.approx(0.6136, abs=5e-5))
    assert wilson(1, 2) == (pytest.approx(0.0945, abs=5e-5), pytest.approx(0.9055, abs=5e-5))


def test_wilson_edges():
    z2 = Z95 * Z95
    assert wilson(0, 10) == (0.0, pytest.approx(z2 / (10 + z2)))  # closed form at k = 0
    lo, hi = wilson(10, 10)
    assert lo == pytest.approx(10 / (10 + z2)) and hi == pytest.approx(1.0)  # and at k = n
    assert wilson(0, 0) == (0.0, 1.0)  # no episodes: nothing known
    for k in range(0, 17):  # always inside [0, 1] and around the rate
        lo, hi = wilson(k, 16)
        assert 0.0 <= lo <= k / 16 <= hi <= 1.0


def test_fmt_rate():
    assert fmt_rate(6, 16) == "37.5% [18.5, 61.4]"
    assert fmt_rate(0, 4) == "0.0% [0.0, 49.0]"
    assert fmt_rate(4, 4) == "100.0% [51.0, 100.0]"
    assert fmt_rate(0, 0) == "-"


def test_mean_interval_uses_t_quantiles():
    m, lo, hi = mean_interval([1.0, 2.0, 3.0, 4.0])
    half = 3.182 * np.std([1, 2, 3, 4], ddof=1) / 2  # t(3) 97.5% quantile
    assert (m, lo, hi) == (2.5, pytest.approx(2.5 - half), pytest.approx(2.5 + half))
    m, lo, hi = mean_interval([0.2, 0.4])
    assert hi - m == pytest.approx(12.706 * np.std([0.2, 0.4], ddof=1) / math.sqrt(2))  # t(1)
    assert t975(1) == 12.706 and t975(30) == 2.042 and t975(31) == Z95
    assert mean_interval([0.5]) == (0.5, 0.5, 0.5)
    assert all(math.isnan(v) for v in mean_interval([]))


def test_paired_bootstrap_is_seeded_and_covers_the_mean():
    diffs = [1, 0, 1, 1, 0, 1, 0, 1, -1, 1, 0, 1]
    a = paired_bootstrap(diffs, seed=3)
    assert a == paired_bootstrap(diffs, seed=3)  # reproducible
    spread = list(np.random.default_rng(0).normal(0.1, 0.3, size=20))  # another seed, other resamples
    assert paired_bootstrap(spread, seed=3)[1:] != paired_bootstrap(spread, seed=4)[1:]
    m, lo, hi = a
    assert m == pytest.approx(np.mean(diffs))
    assert lo < m < hi and -1 <= lo and hi <= 1
    assert paired_bootstrap([0.25] * 5) == (0.25, 0.25, 0.25)  # no spread, no width
    assert all(math.isnan(v) for v in paired_bootstrap([]))
