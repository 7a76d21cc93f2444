"""agentrl.plot: PNG curves of runs from the iterations table."""

import struct
from pathlib import Path

import pytest

from agentrl.errors import UserError
from agentrl.plot import plot_run, plot_runs, run_curves
from agentrl.store import open_store

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "runs.db")
    yield s
    s.close()


def add_train_run(store, name="quickstart", scale=1.0) -> int:
    """Iteration 0: the pre-training eval only; 1-4 training; evals at 2 and 4."""
    run = store.create_run(name, "name: x\n", kind="train")
    store.add_iteration(run, 0, {"eval_success": 0.25, "eval_return": 0.5, "eval_episodes": 8}, {"eval": 1.0})
    for it in range(1, 5):
        m = {"success": 0.1 * it * scale, "return": 0.2 * it, "loss": 1.0 / it, "approx_kl": 0.01 * it, "episodes": 16}
        if it % 2 == 0:
            m.update(eval_success=0.25 + 0.1 * it, eval_return=0.5 + 0.1 * it)
        store.add_iteration(run, it, m, {"rollout": 2.0, "total": 3.0})
    return run


def test_curves_follow_the_iterations_table(store):
    run = add_train_run(store)
    c = run_curves(store, run)
    assert c.run_id == run and c.label == f"quickstart #{run}"
    assert c.series["success"][0] == [1, 2, 3, 4]
    assert c.series["success"][1] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert c.series["loss"][1] == pytest.approx([1.0, 0.5, 1 / 3, 0.25])
    assert c.series["eval_success"] == ([0, 2, 4], pytest.approx([0.25, 0.45, 0.65]))
    assert c.series["eval_return"][1] == pytest.approx([0.5, 0.7, 0.9])
    assert "episodes" not in c.series
    # the episode counts of the success points (train: `episodes`; eval: `eval_episodes`, stored at 0 only)
    assert c.episodes == {"success": {1: 16, 2: 16, 3: 16, 4: 16}, "eval_success": {0: 8}}


def test_success_bands_are_wilson_intervals(store):
    """Issue 14: each success point whose episode count is known gets its 95% Wilson interval;
    points without one leave a gap (NaN) in the band."""
    import math

    from agentrl.plot import wilson_band
    from agentrl.stats import wilson

    c = run_curves(store, add_train_run(store))
    xs, lo, hi = wilson_band(c, "success")
    assert xs == [1, 2, 3, 4]
    for i, (a, b) in enumerate(zip(lo, hi)):
        k = round(0.1 * (i + 1) * 16)
        assert (a, b) == pytest.approx(wilson(k, 16))
        assert a <= 0.1 * (i + 1) <= b
    xs, lo, hi = wilson_band(c, "eval_success")
    assert xs == [0, 2, 4] and (lo[0], hi[0]) == pytest.approx(wilson(2, 8))
    assert all(math.isnan(v) for v in lo[1:] + hi[1:])


def test_the_success_panel_is_shaded(store, tmp_path, monkeypatch):
    """The success panel draws one band per success curve with known counts (fill_between)."""
    from matplotlib.axes import Axes

    from agentrl import plot

    calls = []
    real = Axes.fill_between
    monkeypatch.setattr(Axes, "fill_between", lambda self, *a, **k: calls.append(a) or real(self, *a, **k))
    run = add_train_run(store)
    plot.plot_run(store, run, tmp_path / "c.png")
    assert [list(a[0]) for a in calls] == [[1, 2, 3, 4], [0, 2, 4]]


def test_plot_run_writes_a_png(store, tmp_path):
    run = add_train_run(store)
    out = plot_run(store, run, tmp_path / "curves.png")
    assert out == tmp_path / "curves.png"
    assert png_size(out) == (1100, 750)  # figsize 11 x 7.5 in at 100 dpi
    assert out.stat().st_size > 20_000

    # not a blank canvas: many distinct colours (lines, text, grid)
    from matplotlib.image import imread

    img = imread(out)
    colours = {tuple(px) for px in img.reshape(-1, img.shape[-1])[::7].round(2).tolist()}
    assert len(colours) > 50


def test_default_output_name_and_run_by_name(store, tmp_path, monkeypatch):
    run = add_train_run(store, name="my run/1")
    monkeypatch.chdir(tmp_path)
    out = plot_run(store, "my run/1")
    assert out == Path(f"my_run_1-{run}.png")
    assert (tmp_path / out).read_bytes()[:8] == PNG_SIGNATURE
    # a directory as output: the default name inside it
    d = tmp_path / "plots"
    d.mkdir()
    assert plot_run(store, run, d) == d / f"my_run_1-{run}.png"


def test_run_without_iterations_is_a_user_error(store, tmp_path):
    run = store.create_run("empty", "name: empty\n", kind="train")
    with pytest.raises(UserError) as e:
        plot_run(store, run, tmp_path / "x.png")
    msg = str(e.value)
    assert "no iterations" in msg and str(run) in msg and "\n" not in msg
    assert not (tmp_path / "x.png").exists()


def test_bad_references_and_outputs(store, tmp_path):
    run = add_train_run(store)
    with pytest.raises(UserError, match="no run 'nope'"):
        plot_run(store, "nope", tmp_path / "x.png")
    with pytest.raises(UserError, match="does not exist"):
        plot_run(store, run, tmp_path / "missing" / "x.png")
    with pytest.raises(UserError, match=".png"):
        plot_run(store, run, tmp_path / "x.pdf")
    with pytest.raises(UserError):
        plot_runs(store, [], tmp_path / "x.png")


def test_eval_run_is_one_eval_point(store):
    run = store.create_run("ev", "name: ev\n", kind="eval")
    store.add_iteration(run, 0, {"eval": {"success": 0.375, "mean_return": 1.25, "episodes": 8}}, {"eval": 2.0})
    c = run_curves(store, run)
    assert c.series == {"eval_success": ([0], [0.375]), "eval_return": ([0], [1.25])}
    assert c.episodes == {"eval_success": {0: 8}}


def test_plot_runs_compares_several(store, tmp_path):
    a = add_train_run(store, "grpo")
    b = add_train_run(store, "gigpo", scale=2.0)
    out = plot_runs(store, [a, str(b)], tmp_path / "cmp.png")
    assert png_size(out) == (1100, 750)
    single = plot_run(store, a, tmp_path / "a.png")
    assert out.read_bytes() != single.read_bytes()  # the second run's curves are drawn too
    with pytest.raises(UserError, match="no iterations"):
        plot_runs(store, [a, store.create_run("empty", "", kind="train")], tmp_path / "y.png")


def test_run_names_are_drawn_literally(store, tmp_path):
    """A '$' in a run name is text, not mathtext: an unbalanced formula used to fail the whole figure."""
    a = add_train_run(store, "a$^$")
    b = add_train_run(store, "cost $x_1$")
    assert png_size(plot_run(store, a, tmp_path / "a.png")) == (1100, 750)
    assert png_size(plot_runs(store, [a, b], tmp_path / "ab.png")) == (1100, 750)
