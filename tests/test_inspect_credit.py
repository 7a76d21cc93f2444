"""`agentrl inspect RUN --credit`: per iteration and stored method, the advantage statistics and the
anchor recurrence, checked against the same numbers computed here from the raw SQLite rows.

The database (`tests/viewer_db.py`) holds advantages of two methods (gigpo and spa) for the same
steps: each method gets rows of its own, never a pooled one."""

from __future__ import annotations

import json
import sqlite3
import statistics
from collections import Counter

import pytest

from tests import viewer_db
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("credit") / "runs.db"
    return path, viewer_db.build(path)


def expected(path, run_id: int) -> dict[tuple[int, str], dict]:
    con = sqlite3.connect(path)
    adv = con.execute(
        "SELECT e.iteration, a.method, a.value FROM advantages a JOIN steps s ON a.step_id = s.id "
        "JOIN episodes e ON s.episode_id = e.id WHERE e.run_id = ? AND e.split = 'train'",
        (run_id,),
    ).fetchall()
    anchors = con.execute(
        "SELECT e.iteration, e.group_id, s.anchor FROM steps s JOIN episodes e ON s.episode_id = e.id "
        "WHERE e.run_id = ? AND e.split = 'train' AND s.anchor != ''",
        (run_id,),
    ).fetchall()
    con.close()
    counts = Counter(anchors)
    recur = {}
    for it in {a[0] for a in anchors}:
        mine = [a for a in anchors if a[0] == it]
        recur[it] = sum(1 for a in mine if counts[a] > 1) / len(mine)
    out = {}
    for it, method in {(r[0], r[1]) for r in adv}:
        vals = [r[2] for r in adv if (r[0], r[1]) == (it, method)]
        out[(it, method)] = {
            "steps": len(vals),
            "mean_adv": statistics.fmean(vals),
            "mean_abs_adv": statistics.fmean(abs(v) for v in vals),
            "std_adv": statistics.stdev(vals),
            "nonsingleton_anchor_frac": recur[it],
        }
    return out


def test_credit_summary_keeps_methods_apart(db, capsys):
    path, ids = db
    code, out, err = run_cli(["inspect", str(ids["run"]), "--credit", "--json", "--db", str(path)], capsys)
    assert code == 0, err
    rows = json.loads(out)
    want = expected(path, ids["run"])
    assert sorted((r["iteration"], r["method"]) for r in rows) == sorted(want)
    assert len(want) == 4  # two iterations x gigpo, spa
    for r in rows:
        w = want[(r["iteration"], r["method"])]
        assert r["steps"] == w["steps"] == 18  # 2 groups x (2 + 3 + 4 steps): per method, not doubled
        for k in ("mean_adv", "mean_abs_adv", "std_adv", "nonsingleton_anchor_frac"):
            assert r[k] == pytest.approx(w[k]), k


def test_credit_table_has_a_method_column_when_several(db, capsys):
    path, ids = db
    code, out, err = run_cli(["inspect", str(ids["run"]), "--credit", "--db", str(path)], capsys)
    assert code == 0, err
    assert "gigpo, spa" in out
    lines = [ln for ln in out.splitlines() if "gigpo" in ln or "spa" in ln]
    assert sum("gigpo" in ln for ln in lines[1:]) == 2 and sum("spa" in ln for ln in lines[1:]) == 2
