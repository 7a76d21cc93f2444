"""Issue 11: what the commands print. User- and model-supplied text is printed literally, output
survives a closed pipe, read-only databases can be read, summaries say what they mean, and
every option is explained. Cheap fixtures: tiny stores written through agentrl.store, scripted
policies on the toy suites, the CLI in-process (or in a subprocess where a real pipe or a
read-only mount is needed)."""

import json
import os
import shutil
import subprocess
import sys
from io import StringIO

import pytest
from conftest import AGENTRL, ROOT, run_cli
from conftest import one_line_error as _one_line_error

from agentrl.store import EpisodeRecord, StepRecord, open_store

MARKUP = ["[/bold]", "[red]x[/red]", "[/]", "[/INST]", "[bold]", ":thumbs_up:"]


def _episode(
    split="eval",
    iteration=0,
    won=False,
    task="toy/pick-4/seed-1",
    obs="You are in a room.",
    action="open the red door",
    raw=None,
    n_steps=1,
    final="The end.",
    error=None,
    group=None,
):
    steps = [
        StepRecord(
            t=t,
            observation=obs,
            action=action,
            reward=1.0 if won and t == n_steps - 1 else 0.0,
            admissible=[action, "look"],
            raw=action if raw is None else raw,
            valid=True,
        )
        for t in range(n_steps)
    ]
    return EpisodeRecord(
        task_id=task,
        group_id=group or f"g/{task}",
        env="toy",
        split=split,
        iteration=iteration,
        seed=0,
        policy="random",
        won=won,
        ret=1.0 if won else 0.0,
        goal="Find the way out.",
        final_observation=final,
        error=error,
        steps=steps,
    )


def _train_run(store, name="quickstart", before=(1, 4), after=(3, 4), after_iteration=3) -> int:
    """A training run with held-out evals at iteration 0 (before) and `after_iteration` (after):
    (won, episodes) each, plus one train episode per iteration and the iterations table."""
    run = store.create_run(name, f"name: {name}\n", kind="train")
    for it, (won, n) in ((0, before), (after_iteration, after)):
        for i in range(n):
            store.write_episode(_episode(iteration=it, won=i < won, task=f"toy/pick-4/seed-{1000 + i}"), run)
    store.add_iteration(run, 0, {"eval_success": before[0] / before[1]}, {"eval": 1.0})
    for it in range(1, after_iteration + 1):
        store.write_episode(_episode(split="train", iteration=it, won=True), run)
        m = {"success": 0.5, "return": 0.5, "loss": 0.1, "approx_kl": 0.01}
        if it == after_iteration:
            m["eval_success"] = after[0] / after[1]
        store.add_iteration(run, it, m, {"rollout": 1.0})
    store.set_run_status(run, "finished")
    return run


# ---------------------------------------------------------------- defect 2: markup injection


@pytest.fixture
def markup_db(tmp_path):
    db = tmp_path / "r.db"
    store = open_store(db)
    run = store.create_run("[/bold]oops [red]x[/red]", "name: x\n", kind="eval")
    text = " ".join(MARKUP)
    eid = store.write_episode(
        _episode(
            task="toy/[/]pick",
            obs="o [/bold] [red]x[/red]",
            action="a [/] [bold]",
            raw="g [/INST] :thumbs_up:",
            final=f"final {text}",
            error=f"err {text}",
        ),
        run,
    )
    store.set_run_status(run, "finished")
    store.close()
    return db, run, eid


def test_markup_in_stored_strings_is_printed_literally(markup_db, capsys):
    """Defect 2: Rich markup injection: a run name '[/bold]oops' crashed `runs` and `inspect 1`
    with MarkupError, '[/INST]' or '[/]' in an observation or generation broke `inspect --episode`,
    and '[red]' was silently eaten. Every stored string is now printed as it is."""
    db, run, eid = markup_db
    text = " ".join(MARKUP)
    code, out, err = run_cli(["runs", "--db", str(db)], capsys)
    assert code == 0, err
    assert "[/bold]oops [red]x[/red]" in out
    code, out, err = run_cli(["inspect", str(run), "--db", str(db)], capsys)
    assert code == 0, err
    assert "[/bold]oops [red]x[/red]" in out and "toy/[/]pick" in out
    for full in ([], ["--full"]):
        code, out, err = run_cli(["inspect", "--episode", str(eid), "--db", str(db), *full], capsys)
        assert code == 0, err
        for s in (
            "o [/bold] [red]x[/red]",
            "a [/] [bold]",
            "g [/INST] :thumbs_up:",
            f"final {text}",
            f"err {text}",
            "task toy/[/]pick",
        ):
            assert s in out, (s, out)
    code, out, err = run_cli(["inspect", str(run), "--failed", "--db", str(db)], capsys)
    assert code == 0 and "toy/[/]pick" in out, err


def test_markup_in_eval_and_replay_output(tmp_path, capsys, suites_dir):
    """Defect 2: the eval results table (recipe name, suite name) prints them literally too."""
    import yaml

    (suites_dir / "s[red]x.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "s[red]x",
                "env": "toy",
                "description": "d [/] [bold]",
                "train": {"pattern": "toy/pick-4/seed-{i}", "seeds": [0, 1]},
                "eval": {"pattern": "toy/pick-4/seed-{i}", "seeds": [100, 101]},
            }
        )
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump({"name": "n[bold]m", "env": {"suite": "s[red]x", "workers": 0}, "policy": "random"})
    )
    db = str(tmp_path / "r.db")
    code, out, err = run_cli(["eval", str(recipe), "--db", db, "--no-progress"], capsys)
    assert code == 0, err
    assert "n[bold]m" in out and "s[red]x" in out
    code, out, err = run_cli(["envs", "list"], capsys)
    assert code == 0, err
    assert "s[red]x" in out and "d [/] [bold]" in out


# ---------------------------------------------------------------- defect 24: closed pipes


def _pipe_closed_early(args: list[str], read: int) -> tuple[int, str]:
    """Run agentrl ARGS with stdout a pipe that is closed after `read` bytes (`| head -c N`)."""
    p = subprocess.Popen([*AGENTRL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    got = p.stdout.read(read)
    assert len(got) == read
    p.stdout.close()
    err = p.stderr.read().decode()
    return p.wait(timeout=120), err


def test_closed_pipe_exits_quietly(tmp_path):
    """Defect 24: `agentrl export 1 | head -c 100` and `agentrl inspect 1 | head -2` exited 1
    (BrokenPipeError). Now they exit 0 without a word, like Unix tools. Both outputs are larger
    than a pipe's buffer, so the writer is still writing when the reader goes."""
    db = tmp_path / "r.db"
    store = open_store(db)
    run = store.create_run("big", "name: big\n", kind="eval")
    store.write_episode(_episode(obs="x" * 300_000), run)
    for i in range(800):
        store.write_episode(_episode(task=f"toy/pick-4/seed-{i}", n_steps=0), run)
    store.close()
    code, err = _pipe_closed_early(["export", str(run), "--db", str(db)], 100)
    assert (code, err) == (0, "")
    code, err = _pipe_closed_early(["inspect", str(run), "--db", str(db)], 200)
    assert (code, err) == (0, "")
    code, err = _pipe_closed_early(["inspect", str(run), "--db", str(db), "--json"], 200)
    assert (code, err) == (0, "")


# ---------------------------------------------------------------- defect 14: read-only databases

_DRIVER = """
import contextlib, io, json, sys


def run_all(commands, results):
    from agentrl.cli import main

    res = []
    for args in commands:
        o, e = io.StringIO(), io.StringIO()
        sys.argv = ["agentrl", *args]
        code = 0
        with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
            try:
                main()
            except SystemExit as x:
                code = x.code if isinstance(x.code, int) else (0 if x.code is None else 1)
        res.append([args, code, o.getvalue(), e.getvalue()])
    with open(results, "w") as f:
        f.write(json.dumps(res))


if __name__ == "__main__":  # env workers may be spawned processes that import this file
    run_all(json.loads(sys.argv[1]), sys.argv[2])
"""


def test_read_only_commands_on_a_read_only_database(tmp_path, capsys, suites_dir):
    """Defect 14: a database in a read-only folder: `runs`, `inspect`, `export`, `replay` (without
    --policy) and `plot` exited 2 'cannot open the database for writing'. They now open it
    read-only. Root ignores permission bits, so as root the folder is bind-mounted read-only in a
    private mount namespace (unshare -m); otherwise it is chmod 0555."""
    import yaml

    (suites_dir / "tiny.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "env": "toy",
                "description": "t",
                "train": {"pattern": "toy/pick-4/seed-{i}", "seeds": [0, 1]},
                "eval": {"pattern": "toy/pick-4/seed-{i}", "seeds": [100, 101]},
            }
        )
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "r", "env": {"suite": "tiny", "workers": 0}, "policy": "random"}))
    ro = tmp_path / "ro"
    ro.mkdir()
    db = ro / "runs.db"
    # in a subprocess: an in-process CLI would keep its connection (and the -wal file) open
    r = subprocess.run(
        [*AGENTRL, "eval", str(recipe), "--db", str(db), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    store = open_store(db)
    train = _train_run(store)
    store.close()
    assert sorted(p.name for p in ro.iterdir()) == ["runs.db"]  # no -wal / -shm left behind
    outdir = tmp_path / "out"
    outdir.mkdir()
    commands = [
        ["runs"],
        ["inspect", "1"],
        ["inspect", "--episode", "1"],
        ["export", "1", "-o", str(outdir / "e.jsonl")],
        ["replay", "1"],
        ["plot", str(train), "-o", str(outdir / "p.png")],
        ["inspect", "1", "--json"],
    ]
    commands = [[*c, "--db", str(db)] for c in commands]
    results = outdir / "results.json"
    (outdir / "driver.py").write_text(_DRIVER)
    driver = [sys.executable, str(outdir / "driver.py"), json.dumps(commands), str(results)]
    if os.geteuid() == 0:
        if not shutil.which("unshare"):
            pytest.skip("root without unshare: cannot make a read-only directory")
        bind = f"mount --bind {ro} {ro} && mount -o remount,ro,bind {ro}"
        probe = subprocess.run(["unshare", "-m", "sh", "-c", bind], capture_output=True)
        if probe.returncode != 0:
            pytest.skip("root without mount namespaces: cannot make a read-only directory")
        import shlex

        # the folder must really be read-only, or the check proves nothing
        cmd = [
            "unshare",
            "-m",
            "sh",
            "-c",
            f"{bind} || exit 98; if touch {ro}/probe 2>/dev/null; then exit 99; fi; exec {shlex.join(driver)}",
        ]
    else:
        ro.chmod(0o555)
        cmd = driver
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    finally:
        ro.chmod(0o755)
    assert r.returncode == 0 and results.exists(), r.stdout + r.stderr
    for args, code, _out, err in json.loads(results.read_text()):
        assert code == 0, (args, err)
        assert "error" not in err, (args, err)
    assert (outdir / "e.jsonl").stat().st_size > 0 and (outdir / "p.png").stat().st_size > 0
    assert sorted(p.name for p in ro.iterdir()) == ["runs.db"]


def test_read_only_store_never_writes(tmp_path):
    """Defect 14: the read-only store opens SQLite read-only (a write through it fails), and it
    reads a database whose folder does not allow creating the WAL files."""
    from agentrl.errors import WorkError
    from agentrl.store.queries import list_runs

    db = tmp_path / "r.db"
    store = open_store(db)
    store.create_run("a", "name: a\n", kind="eval")
    store.close()
    ro = open_store(db, create=False, readonly=True)
    assert [r["name"] for r in list_runs(ro)] == ["a"]
    with pytest.raises(WorkError, match="readonly"):
        ro.create_run("b", "name: b\n", kind="eval")
    ro.close()
    assert [r["name"] for r in list_runs(open_store(db, create=False))] == ["a"]


# ---------------------------------------------------------------- defect 9: runs' eval success


def test_runs_shows_before_and_after_for_training_runs(tmp_path, capsys):
    """Defect 9: `agentrl runs` showed 'eval success 50.0%' for a training run by pooling the
    before and after evals. Now: the final held-out success, and before → after for training runs."""
    db = tmp_path / "r.db"
    store = open_store(db)
    train = _train_run(store, before=(1, 4), after=(3, 4))
    ev = store.create_run("ev", "name: ev\n", kind="eval")
    for i in range(4):
        store.write_episode(_episode(won=i == 0), ev)
    store.close()
    code, out, err = run_cli(["runs", "--db", str(db)], capsys)
    assert code == 0, err
    assert "50.0%" not in out
    train_line = next(line for line in out.splitlines() if "quickstart" in line)
    assert "25.0% → 75.0%" in train_line
    ev_line = next(line for line in out.splitlines() if " ev " in line)
    assert "25.0%" in ev_line and "→" not in ev_line
    code, out, err = run_cli(["runs", "--db", str(db), "--json"], capsys)
    rows = {r["id"]: r for r in json.loads(out)}
    assert rows[train]["eval_success"] == 0.75 and rows[train]["eval_before"] == 0.25
    assert rows[train]["eval_iteration"] == 3 and rows[train]["eval_episodes"] == 4
    assert rows[ev]["eval_success"] == 0.25 and rows[ev]["eval_before"] is None
    # issue 14: the after's (or the eval run's) 95% Wilson interval, and the numbers in --json
    from agentrl.stats import fmt_rate, wilson

    assert f"25.0% → {fmt_rate(3, 4)}" in train_line and fmt_rate(1, 4) in ev_line
    assert rows[train]["eval_won"] == 3 and rows[train]["eval_ci"] == pytest.approx(list(wilson(3, 4)))
    assert rows[train]["eval_before_won"] == 1 and rows[train]["eval_before_episodes"] == 4
    assert rows[train]["eval_before_ci"] == pytest.approx(list(wilson(1, 4)))
    assert rows[ev]["eval_ci"] == pytest.approx(list(wilson(1, 4))) and rows[ev]["eval_before_ci"] is None


# ---------------------------------------------------------------- issue 14: 95% intervals


def test_training_summary_has_intervals_and_a_paired_change(tmp_path):
    """Issue 14: the training summary shows before and after with Wilson intervals, and the
    change with a paired bootstrap interval over the eval tasks played both times."""
    from rich.console import Console

    from agentrl.stats import fmt_rate, paired_bootstrap
    from agentrl.store import queries as q
    from agentrl.train import summary_table, train_summary

    store = open_store(tmp_path / "r.db")
    run = _train_run(store, before=(1, 4), after=(3, 4))  # the same 4 tasks: won [1,0,0,0] -> [1,1,1,0]
    assert q.eval_change_by_task(store, run) == [0.0, 1.0, 1.0, 0.0]
    s = train_summary(store, run, 3, 90.0)
    assert (s.before_won, s.before_n, s.after_won, s.after_n, s.paired_tasks) == (1, 4, 3, 4, 4)
    assert (s.eval_before, s.eval_after) == (0.25, 0.75)
    assert s.change == paired_bootstrap([0.0, 1.0, 1.0, 0.0])
    buf = StringIO()
    Console(file=buf, width=160, color_system=None).print(summary_table(s))
    text = buf.getvalue()
    _, lo, hi = s.change
    assert fmt_rate(1, 4) in text and fmt_rate(3, 4) in text
    assert f"+50.0 pts [{100 * lo:+.1f}, {100 * hi:+.1f}]" in text
    assert "change: paired bootstrap over 4 tasks" in text and "1.5 min" in text

    # no task in common: the difference without an interval, and the caption says why
    other = store.create_run("other", "name: other\n", kind="train")
    store.write_episode(_episode(iteration=0, won=False, task="toy/pick-4/seed-1"), other)
    store.write_episode(_episode(iteration=2, won=True, task="toy/pick-4/seed-2"), other)
    s = train_summary(store, other, 2, 6.0)
    assert s.change is None and s.paired_tasks == 0
    buf = StringIO()
    Console(file=buf, width=160, color_system=None).print(summary_table(s))
    text = buf.getvalue()
    assert "+100.0 pts │" in text and fmt_rate(0, 1) in text and "none (no task in both evals)" in text
    # a run without any eval: dashes
    s = train_summary(store, store.create_run("none", "name: none\n", kind="train"), 1, 1.0)
    assert s.eval_before is None and s.change is None
    store.close()


def test_eval_and_inspect_print_wilson_intervals(tmp_path, capsys, suites_dir):
    """Issue 14: `agentrl eval`'s success column and `--json`, and `agentrl inspect RUN`'s summary
    line, give the 95% Wilson interval of the success rate."""
    import yaml

    from agentrl.stats import fmt_rate, wilson
    from agentrl.store import queries as q

    (suites_dir / "four.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "four",
                "env": "toy",
                "train": {"pattern": "toy/pick-4/seed-{i}", "seeds": [0, 1]},
                "eval": {"pattern": "toy/pick-4/seed-{i}", "seeds": [100, 103]},
            }
        )
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "four", "env": {"suite": "four", "workers": 0}, "policy": "random"}))
    db = str(tmp_path / "r.db")
    code, out, err = run_cli(["eval", str(recipe), "--db", db, "--no-progress"], capsys)
    assert code == 0, err
    store = open_store(db, create=False, readonly=True)
    row = q.list_runs(store)[0]
    n, won = q.eval_counts(store, row["id"])[0]
    store.close()
    assert n == 4 and "success (95% CI)" in out
    assert fmt_rate(won, n) in out, out
    code, out, err = run_cli(["eval", str(recipe), "--db", db, "--no-progress", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["success_ci"] == pytest.approx(list(wilson(data["won"], data["episodes"])))
    code, out, err = run_cli(["inspect", str(row["id"]), "--db", db], capsys)
    assert code == 0, err
    assert f"success {won}/{n} ({fmt_rate(won, n)}), mean return" in out, out


# ---------------------------------------------------------------- defect 10: replay --failed


@pytest.fixture
def fake_continue(monkeypatch):
    """continue_episodes without a model: records the episode ids it was asked to continue and
    'wins' the first one."""
    import agentrl.replay as replay

    calls = []

    def fake(store, ids, policy_ref, from_step=0, console=None, show_progress=True):
        calls.append(list(ids))
        return 99, [
            replay.Continuation(e, 1000 + e, "toy/pick-4/seed-1", from_step, False, i == 0, 1)
            for i, e in enumerate(ids)
        ]

    monkeypatch.setattr(replay, "continue_episodes", fake)
    return calls


def test_replay_failed_retries_the_final_eval_only(tmp_path, capsys, fake_continue):
    """Defect 10: `agentrl replay --failed RUN --policy CKPT` retried the failures of every eval of
    the run (before training too). Now the final eval's (or `--iteration N`'s), it says which eval
    it used, and reports 'now won k of n'."""
    from agentrl.store import queries as q

    db = tmp_path / "r.db"
    store = open_store(db)
    run = _train_run(store, before=(1, 4), after=(2, 4))
    final_failed = [e.id for e in q.episodes(store, run, iteration=3, split="eval", failed=True)]
    before_failed = [e.id for e in q.episodes(store, run, iteration=0, split="eval", failed=True)]
    store.close()
    code, out, err = run_cli(
        ["replay", "--failed", str(run), "--policy", str(run), "--db", str(db), "--no-progress"], capsys
    )
    assert code == 0, err
    assert fake_continue[-1] == final_failed
    assert "iteration 3" in out + err and "final" in out + err
    assert "now won 1 of 2" in out
    code, out, err = run_cli(
        ["replay", "--failed", str(run), "--iteration", "0", "--policy", str(run), "--db", str(db), "--no-progress"],
        capsys,
    )
    assert code == 0, err
    assert fake_continue[-1] == before_failed and "now won 1 of 3" in out and "iteration 0" in out + err
    code, out, err = run_cli(["replay", "--failed", str(run), "--policy", str(run), "--db", str(db), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["eval_iteration"] == 3 and data["now_won"] == 1 and data["episodes"] == 2
    code, _, err = run_cli(
        ["replay", "--failed", str(run), "--iteration", "7", "--policy", str(run), "--db", str(db)], capsys
    )
    _one_line_error(code, err, needle="0, 3")


# ---------------------------------------------------------------- defect 21: metrics line width


def test_iteration_line_fits_100_columns():
    """Defect 21: the per-iteration metrics line printed by training was ~170 characters. It now
    fits 100 columns, also with extreme values."""
    from rich.console import Console

    from agentrl.train import _IterationPrinter

    wide = StringIO()
    console = Console(file=wide, width=300, color_system=None)
    p = _IterationPrinter(console)
    full = {
        "success": 1.0,
        "return": -123456.789,
        "length": 123.4,
        "loss": -1.234e-05,
        "kl": 1.5e-09,
        "clip_frac": 1.0,
        "entropy": 12345.6,
        "grad_norm": 9.87e12,
        "rollout_tokens_per_s": 123456.0,
        "tokens_per_s": 9876543.0,
        "eval_success": 0.875,
    }
    p.row(9999, full, {"rollout": 59999.0, "update": 7200.0, "eval": 999.0})
    p.row(
        1,
        {
            "success": 0.25,
            "return": 0.25,
            "length": 4.0,
            "loss": 0.0123,
            "kl": 0.0004,
            "clip_frac": 0.03,
            "entropy": 0.7,
            "grad_norm": 1.2,
            "rollout_tokens_per_s": 812.3,
            "tokens_per_s": 2345.0,
        },
        {"rollout": 61.2, "update": 30.0},
    )
    p.row(2, {}, {})
    lines = wide.getvalue().splitlines()
    assert len(lines) == 4
    for line in lines:
        assert len(line) <= 100, (len(line), line)
    assert "87.5%" in lines[1] and "25.0%" in lines[2]
    narrow = StringIO()
    p = _IterationPrinter(Console(file=narrow, width=100, color_system=None))
    p.row(9999, full, {"rollout": 59999.0, "update": 7200.0, "eval": 999.0})
    assert len(narrow.getvalue().splitlines()) == 2  # no wrapping at 100 columns


# ---------------------------------------------------------------- defect 22: --help


def _commands(group, prefix=()):
    import click

    for name, cmd in group.commands.items():
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))


def test_every_option_has_help_and_no_summary_is_cut():
    """Defect 22: --help lacked text for `inspect --split`, `export --format`, `envs build
    --split/--workers`, and command summaries were cut with '...'. Every option of every command
    is explained and every summary is whole."""
    import click
    from click.testing import CliRunner

    from agentrl.cli import cli

    runner = CliRunner()
    missing = []
    for path, cmd in [((), cli), *_commands(cli)]:
        for p in cmd.params:
            if isinstance(p, click.Option) and not (p.help or "").strip():
                missing.append(f"{' '.join(path)} {p.opts[0]}")
        if path:  # the summary a group's --help lists (the root's is never listed)
            summary = cmd.get_short_help_str(limit=45)
            assert summary and not summary.endswith("..."), (path, summary)
        r = runner.invoke(cli, [*path, "--help"], terminal_width=80)
        assert r.exit_code == 0, r.output
        cut = [
            line for line in r.output.splitlines() if line.rstrip().endswith("...") and not line.startswith("Usage:")
        ]  # [ARGS]... is usage
        assert not cut, r.output
    assert missing == []


def test_replay_options_that_need_policy(tmp_path, capsys):
    """Defect 22: `replay 5 --from-step 3` without --policy was silently ignored, and `replay
    --failed 1` without --policy said 'give an EPISODE_ID'. Both are now errors that say that the
    option needs --policy."""
    db = tmp_path / "r.db"
    store = open_store(db)
    run = store.create_run("a", "name: a\n", kind="eval")
    eid = store.write_episode(_episode(), run)
    store.close()
    code, _, err = run_cli(["replay", str(eid), "--from-step", "3", "--db", str(db)], capsys)
    _one_line_error(code, err, needle="--from-step needs --policy")
    code, _, err = run_cli(["replay", "--failed", str(run), "--db", str(db)], capsys)
    _one_line_error(code, err, needle="--failed needs --policy")
    code, _, err = run_cli(["replay", str(eid), "--iteration", "1", "--policy", "1", "--db", str(db)], capsys)
    _one_line_error(code, err, needle="--iteration needs --failed")


# ---------------------------------------------------------------- defect 23: empty answers


def test_inspect_unknown_iteration_and_plot_of_eval_run(tmp_path, capsys):
    """Defect 23: `inspect 1 --iteration 99` printed an empty table and exited 0, and `plot` of an
    eval-only run drew one point on a meaningless axis. Now: exit 2 with one line that says which
    iterations exist / that it is an eval run."""
    db = tmp_path / "r.db"
    store = open_store(db)
    train = _train_run(store)
    ev = store.create_run("ev", "name: ev\n", kind="eval", parent_run_id=train)
    store.write_episode(_episode(), ev)
    store.add_iteration(ev, 0, {"eval": {"success": 0.0, "mean_return": 0.0}}, {"eval": 1.0})
    store.close()
    code, _, err = run_cli(["inspect", str(train), "--iteration", "99", "--db", str(db)], capsys)
    _one_line_error(code, err, needle="0, 1, 2, 3")
    code, _, err = run_cli(["inspect", str(train), "--iteration", "2", "--split", "eval", "--db", str(db)], capsys)
    _one_line_error(code, err, needle="0, 3")
    code, out, err = run_cli(["inspect", str(train), "--iteration", "3", "--db", str(db)], capsys)
    assert code == 0, err
    code, _, err = run_cli(["plot", str(ev), "-o", str(tmp_path / "p.png"), "--db", str(db)], capsys)
    _one_line_error(code, err, needle="eval run")
    assert not (tmp_path / "p.png").exists()
    code, _, err = run_cli(["plot", str(train), str(ev), "-o", str(tmp_path / "p.png"), "--db", str(db)], capsys)
    _one_line_error(code, err, needle="eval run")
