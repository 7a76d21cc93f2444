"""Bad input, tried as a new user would: one clear line, exit 2 (or 1), never a traceback."""

import os
import sqlite3

import pytest
import yaml
from conftest import run_cli, write_recipe


def _toy_suite(d, name="tiny", pattern="toy/pick-4/seed-{i}", train=(0, 3), eval_=(100, 103), env="toy"):
    (d / f"{name}.yaml").write_text(
        yaml.safe_dump(
            {
                "name": name,
                "env": env,
                "description": "test suite",
                "train": {"pattern": pattern, "seeds": list(train)},
                "eval": {"pattern": pattern, "seeds": list(eval_)},
            }
        )
    )


def _one_line_error(code, err, expected_code=2, needle=""):
    assert code == expected_code, err
    lines = [l for l in err.strip().splitlines() if l.strip()]  # noqa: E741
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    assert "Traceback" not in err
    assert needle.lower() in lines[0].lower(), lines[0]


def test_missing_recipe(tmp_path, capsys):
    code, _, err = run_cli(["eval", str(tmp_path / "nope.yaml"), "--db", str(tmp_path / "r.db")], capsys)
    _one_line_error(code, err, needle="recipe not found")


def test_malformed_yaml(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("env: {suite: tiny\npolicy: [random\n")
    code, _, err = run_cli(["eval", str(p), "--db", str(tmp_path / "r.db")], capsys)
    _one_line_error(code, err, needle="malformed YAML")


def test_unknown_key_and_wrong_type(tmp_path, capsys, suites_dir):
    _toy_suite(suites_dir)
    p = write_recipe(tmp_path / "r.yaml", "tiny", rollout={"gruop_size": 4})
    code, _, err = run_cli(["eval", str(p), "--db", str(tmp_path / "r.db")], capsys)
    _one_line_error(code, err, needle="rollout.gruop_size")
    p = write_recipe(tmp_path / "r.yaml", "tiny", env={"max_steps": "many"})
    code, _, err = run_cli(["eval", str(p), "--db", str(tmp_path / "r.db")], capsys)
    _one_line_error(code, err, needle="env.max_steps")
    p = write_recipe(tmp_path / "r.yaml", "tiny")
    code, _, err = run_cli(["eval", str(p), "--set", "policy=telepathy", "--db", str(tmp_path / "r.db")], capsys)
    _one_line_error(code, err, needle="policy")


def test_unknown_suite_and_unknown_env(tmp_path, capsys, suites_dir):
    p = write_recipe(tmp_path / "r.yaml", "no-such-suite")
    code, _, err = run_cli(["eval", str(p), "--db", str(tmp_path / "r.db")], capsys)
    _one_line_error(code, err, needle="no-such-suite")
    _toy_suite(suites_dir, name="weird", pattern="zork/level-{i}", env="zork")
    p = write_recipe(tmp_path / "r.yaml", "weird")
    # an unknown adapter is refused before the run starts
    code, _, err = run_cli(["eval", str(p), "--db", str(tmp_path / "r.db")], capsys)
    _one_line_error(code, err, needle="unknown env 'zork'")


def test_unknown_episode_and_run(tmp_path, capsys, suites_dir):
    _toy_suite(suites_dir)
    db = str(tmp_path / "r.db")
    p = write_recipe(tmp_path / "r.yaml", "tiny")
    code, _, err = run_cli(["eval", str(p), "--db", db, "--no-progress"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["inspect", "--episode", "9999", "--db", db], capsys)
    _one_line_error(code, err, needle="no episode 9999")
    code, _, err = run_cli(["replay", "abc", "--db", db], capsys)
    _one_line_error(code, err, needle="episode id")
    code, _, err = run_cli(["replay", "1", "--policy", "1:last", "--db", db, "--no-progress"], capsys)
    _one_line_error(code, err, needle="--policy expects RUN or RUN:N, got '1:last'")
    code, _, err = run_cli(["inspect", "nosuchrun", "--db", db], capsys)
    _one_line_error(code, err, needle="no run 'nosuchrun'")


def test_database_that_is_not_sqlite(tmp_path, capsys):
    db = tmp_path / "r.db"
    db.write_text("this is not a database, just text " * 100)
    code, _, err = run_cli(["runs", "--db", str(db)], capsys)
    _one_line_error(code, err, needle="not an SQLite database")


def test_database_of_newer_schema(tmp_path, capsys):
    from agentrl.store import open_store

    db = tmp_path / "r.db"
    open_store(db).close()
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    code, _, err = run_cli(["runs", "--db", str(db)], capsys)
    _one_line_error(code, err, needle="newer")


def test_missing_database(tmp_path, capsys):
    code, _, err = run_cli(["runs", "--db", str(tmp_path / "none.db")], capsys)
    _one_line_error(code, err, needle="no database")


def test_read_only_database_directory(tmp_path, suites_dir):
    """A database path in a directory that cannot be written. Root ignores permission bits, so as
    root the directory is a read-only tmpfs mounted in a private mount namespace (unshare -m)."""
    import shutil
    import subprocess
    import sys

    _toy_suite(suites_dir)
    recipe = write_recipe(tmp_path / "r.yaml", "tiny")
    ro = tmp_path / "ro"
    ro.mkdir()
    cli = [sys.executable, "-m", "agentrl.cli", "eval", str(recipe), "--db", str(ro / "r.db"), "--no-progress"]
    if os.geteuid() == 0:
        if not shutil.which("unshare"):
            pytest.skip("root without unshare: cannot make a read-only directory")
        script = f"mount -t tmpfs -o ro,size=1m tmpfs {ro} && exec " + " ".join(cli)
        probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o ro tmpfs {ro}"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip("root without mount namespaces: cannot make a read-only directory")
        cmd = ["unshare", "-m", "sh", "-c", script]
    else:
        ro.chmod(0o555)
        cmd = cli
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    finally:
        ro.chmod(0o755)
    _one_line_error(r.returncode, r.stderr, needle="not writable")


def test_override_syntax_error(tmp_path, capsys, suites_dir):
    _toy_suite(suites_dir)
    p = write_recipe(tmp_path / "r.yaml", "tiny")
    code, _, err = run_cli(["eval", str(p), "--set", "novalue", "--db", str(tmp_path / "r.db")], capsys)
    _one_line_error(code, err, needle="key=value")
