"""Defect 20 (issue 11): a run name resolves to the run the command needs; ambiguity is an
error listing the candidates."""

import pytest

from agentrl.errors import UserError
from agentrl.store import queries as q
from agentrl.store.db import open_store


def test_name_resolves_to_the_kind_needed_and_ambiguity_is_an_error(tmp_path):
    """Defect 20: after `eval --run quickstart` stored an eval run also named `quickstart`,
    `eval --run quickstart` / `train --resume quickstart` / `plot quickstart` picked the newest
    (the eval run) and failed."""
    store = open_store(tmp_path / "r.db")
    train_id = store.create_run("quickstart", "name: quickstart\n", kind="train")
    eval_id = store.create_run("quickstart", "name: quickstart\n", kind="eval", parent_run_id=train_id)
    assert q.get_run(store, "quickstart", kind="train").id == train_id
    assert q.get_run(store, "quickstart", kind="eval").id == eval_id
    assert q.get_run(store, str(eval_id), kind="train").id == eval_id  # an id is taken as given
    with pytest.raises(UserError, match=rf"several runs are named 'quickstart': {train_id} \(train.*{eval_id} \(eval"):
        q.get_run(store, "quickstart")
    store.create_run("quickstart", "name: quickstart\n", kind="train")
    with pytest.raises(UserError, match="several train runs are named 'quickstart'"):
        q.get_run(store, "quickstart", kind="train")
    only_eval = store.create_run("ev", "name: ev\n", kind="eval")
    with pytest.raises(UserError, match="'ev' is not a train run"):
        q.get_run(store, "ev", kind="train")
    assert q.get_run(store, "ev").id == only_eval


def test_checkpoint_paths_resolve_from_any_directory(tmp_path, monkeypatch):
    """Defect 3 (issue 11): checkpoint paths were stored relative to the trainer's working
    directory, so `cd / && agentrl eval --run 1 --db DIR/runs.db` found no checkpoint."""
    home = tmp_path / "work"
    (home / "runs" / "q-1" / "iter-0001").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(home)
    store = open_store(home / "runs.db")
    rid = store.create_run("q", "name: q\n", kind="train")
    store.add_checkpoint(rid, 1, "runs/q-1/iter-0001", {})  # what the trainer passes: relative to its cwd
    outside = tmp_path / "abs-ckpt"
    outside.mkdir()
    store.add_checkpoint(rid, 2, str(outside), {})
    monkeypatch.chdir(tmp_path / "elsewhere")
    store = open_store(home / "runs.db", create=False)
    paths = [c["path"] for c in q.checkpoints(store, rid)]
    assert paths == [str(home / "runs" / "q-1" / "iter-0001"), str(outside)]
    # the folder of runs.db + runs/ can move as a whole
    moved = tmp_path / "moved"
    home.rename(moved)
    store = open_store(moved / "runs.db", create=False)
    assert q.checkpoints(store, rid)[0]["path"] == str(moved / "runs" / "q-1" / "iter-0001")
