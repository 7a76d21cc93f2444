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
