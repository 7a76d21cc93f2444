"""`runtime.backend: ray` on a local Ray instance: rollout engines as actors, training end to end.

Runs where Ray is installed (`pip install 'agentrl[ray]'`; CI's ray step); skipped otherwise.
The same on a real multi-node cluster: `tests/test_ray_cluster.py`.
"""

from __future__ import annotations

import os
import sqlite3

import pytest

ray = pytest.importorskip("ray")

from conftest import run_cli  # noqa: E402
from test_train import _pick_suite, _recipe  # noqa: E402

from agentrl.config import load_recipe  # noqa: E402
from agentrl.envs.base import Observation  # noqa: E402
from agentrl.policy.base import TurnContext  # noqa: E402

pytestmark = pytest.mark.ray

CMDS = ["go north", "go south", "take key", "open door", "look"]


@pytest.fixture(scope="module")
def local_ray():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, namespace="agentrl")
    yield ray
    ray.shutdown()


def _recipe_obj(model_dir, engines=2, backend="ray"):
    from agentrl.config import recipe_from_dict

    return recipe_from_dict(
        {
            "env": {"suite": "toy-pick", "workers": 0},
            "model": {"path": str(model_dir)},
            "rollout": {"engine": "hf", "temperature": 1.0, "history": -1},
            "learner": {"lora_rank": 8, "target_modules": ["q_proj", "v_proj"]},
            "runtime": {"backend": backend, "engines": engines, "engine_resources": {"CPU": 0.5}},
        }
    )


def _play(policy, groups: int = 4, size: int = 2, turns: int = 3):
    """Episodes in groups (sampled, each with its own stream), all batched per turn: their actions."""
    keys = [(g, j) for g in range(groups) for j in range(size)]
    hist = {k: [] for k in keys}
    out = {k: [] for k in keys}
    for t in range(turns):
        ctxs = [
            TurnContext(
                key=i,
                task_id=f"toy/{g}",
                t=t,
                observation=Observation(f"Room {g}.{t}. A door.", CMDS[: 2 + (g + t) % 4], "find the key"),
                history=list(hist[k]),
                sample_key=1000 * g + j,
                group_id=f"g{g}",
            )
            for i, k in enumerate(keys)
            for g, j in [k]
        ]
        for k, a in zip(keys, policy.act(ctxs)):
            hist[k].append((f"Room {k[0]}.{t}. A door.", a.text))
            out[k].append((a.text, tuple(a.action_ids), tuple(a.logprobs)))
    for i in range(len(keys)):
        policy.end_episode(i)
    return out


def _same(a, b, tol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        for (ta, ia, la), (tb, ib, lb) in zip(a[k], b[k]):
            assert (ta, ia) == (tb, ib), k
            assert max(abs(x - y) for x, y in zip(la, lb)) < tol, k


@pytest.fixture(scope="module")
def engines(local_ray, tiny_model_dir):
    """(local HF policy, Ray policy on 2 HF engine actors, the local peft model) on the tiny model."""
    from agentrl.engines.factory import make_engine
    from agentrl.learner.lora import add_lora
    from agentrl.policy.llm import LLMPolicy
    from agentrl.policy.model import load_model

    recipe = _recipe_obj(tiny_model_dir)
    model, tok = load_model(recipe.model, seed=0)
    model = add_lora(model, recipe.learner)
    local = LLMPolicy(
        make_engine(_recipe_obj(tiny_model_dir, backend="local"), model, tok), tok, recipe.rollout, seed=7
    )
    remote_engine = make_engine(recipe, model, tok)
    remote = LLMPolicy(remote_engine, tok, recipe.rollout, seed=7)
    yield local, remote, model
    remote_engine.close()


def test_ray_engines_generate_what_the_local_engine_does(engines):
    local, remote, _ = engines
    assert remote.engine.name == "hf" and len(remote.engine.actors) == 2
    _same(_play(local), _play(remote))


def test_groups_stay_on_one_engine_and_use_all_engines(engines):
    _, remote, _ = engines
    eng = remote.engine
    seen = {}
    for rnd in range(2):
        ctxs = [
            TurnContext(
                key=i, task_id="toy", t=0, observation=Observation("Room.", CMDS, "g"), group_id=f"r{rnd}g{i // 2}"
            )
            for i in range(8)
        ]
        remote.act(ctxs)
        for c in ctxs:
            i = eng._engine_of_group[c.group_id]
            seen.setdefault(c.group_id, set()).add(i)
            assert eng.placement(c.key) == eng.nodes[i]
        for c in ctxs:
            remote.end_episode(c.key)
    assert all(len(v) == 1 for v in seen.values())  # a group never splits
    assert {next(iter(v)) for v in seen.values()} == {0, 1}  # both engines served groups


def test_new_weights_reach_every_engine(engines):
    import torch

    local, remote, model = engines
    with torch.no_grad():  # an "update": every LoRA B matrix moves
        g = torch.Generator().manual_seed(0)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.5 * torch.randn(p.shape, generator=g))
    before = _play(remote)
    assert remote.engine.load_weights(model, 1) >= 0 and remote.weights_version == 1
    local.engine.load_weights(model, 1)
    after_local, after_remote = _play(local), _play(remote)
    _same(after_local, after_remote)
    assert after_remote != before  # the engines did change weights


def test_a_dead_engine_is_replaced_and_its_batch_retried(engines):
    local, remote, model = engines
    local.engine.load_weights(model, 2)
    remote.engine.load_weights(model, 2)
    want = _play(local)
    ray.kill(remote.engine.actors[1])
    restarts = remote.engine.restarts
    _same(want, _play(remote))  # the replacement got the current weights
    assert remote.engine.restarts == restarts + 1


def _episodes(db):
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT e.task_id, e.group_id, e.won, s.t, s.action, s.observation, s.reward, s.action_ids, s.logprobs "
        "FROM episodes e JOIN steps s ON s.episode_id = e.id ORDER BY e.split, e.iteration, e.group_id, e.id, s.t"
    ).fetchall()
    nodes = con.execute("SELECT json_extract(info, '$.nodes') FROM episodes").fetchall()
    con.close()
    return rows, nodes


def test_train_on_ray_equals_local(local_ray, tmp_path, suites_dir, tiny_model_dir, capsys):
    """A tiny training run on the ray backend (2 env actors, 2 engine actors) stores the episodes the
    local backend stores: actions, observations, rewards and token ids equal, log-probs up to float
    rounding; every episode names the nodes that served it."""
    import numpy as np

    _pick_suite(suites_dir)
    runs = {}
    for backend in ("local", "ray"):
        d = tmp_path / backend
        d.mkdir()
        recipe = _recipe(
            d,
            tiny_model_dir,
            train={"iterations": 2, "eval_every": 0, "output_dir": str(d / "ckpt")},
            rollout={"groups_per_iteration": 4, "group_size": 4},
            eval={"episodes": 8},
            runtime={"backend": backend, "env_workers": 2, "engines": 2, "engine_resources": {"CPU": 0.5}},
        )
        code, out, err = run_cli(["train", str(recipe), "--db", str(d / "runs.db"), "--no-progress"], capsys)
        assert code == 0, err
        runs[backend] = _episodes(d / "runs.db")
    (local_rows, _), (ray_rows, ray_nodes) = runs["local"], runs["ray"]
    assert len(local_rows) == len(ray_rows) > 0
    for a, b in zip(local_rows, ray_rows):
        assert a[:8] == b[:8]
        la, lb = np.frombuffer(a[8], "<f4"), np.frombuffer(b[8], "<f4")
        assert np.abs(la - lb).max() < 1e-4
    assert all(n[0] and '"env"' in n[0] and '"engine"' in n[0] for n in ray_nodes)
    assert all(n[0] is None for n in runs["local"][1])


def test_scripted_eval_on_ray_is_identical(local_ray, tmp_path, capsys):
    """Scripted policies: the ray backend stores exactly the local backend's episodes."""
    runs = {}
    for backend in ("local", "ray"):
        db = tmp_path / f"{backend}.db"
        code, _, err = run_cli(
            [
                "eval",
                _write_toy(tmp_path),
                "--db",
                str(db),
                "--no-progress",
                "--set",
                f"runtime.backend={backend}",
            ],
            capsys,
        )
        assert code == 0, err
        runs[backend] = _episodes(db)[0]
    assert runs["local"] == runs["ray"] and len(runs["local"]) > 0


def _write_toy(tmp_path):
    from conftest import write_recipe

    p = tmp_path / "toy-random.yaml"
    if not p.exists():
        write_recipe(p, "toy-chain", policy="random", runtime={"env_workers": 2})
    return str(p)


def test_ray_backend_without_ray_is_a_one_line_error(monkeypatch):
    import builtins

    from agentrl.errors import UserError
    from agentrl.runtime.cluster import import_ray

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray":
            raise ImportError("no ray")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(UserError, match=r"pip install 'agentrl\[ray\]'"):
        import_ray()
    assert load_recipe("quickstart").runtime.backend == "local"


@pytest.mark.parametrize("bound", [1, 2])
def test_bounded_staleness_rolls_out_ahead(local_ray, tmp_path, suites_dir, tiny_model_dir, capsys, bound):
    """train.max_staleness on the ray backend: iteration k+1 (and k+2 with 2) is rolled out with older
    weights while the learner updates on k; every episode stores its staleness, none is over the bound,
    the old log-probs are recomputed (TIS) and the run finishes with every episode stored once."""
    import json

    _pick_suite(suites_dir)
    recipe = _recipe(
        tmp_path,
        tiny_model_dir,
        train={"iterations": 3, "eval_every": 0, "output_dir": str(tmp_path / "ckpt"), "max_staleness": bound},
        rollout={"groups_per_iteration": 4, "group_size": 4},
        eval={"episodes": 8},
        runtime={"backend": "ray", "env_workers": 2, "engines": 1, "engine_resources": {"CPU": 0.5}},
    )
    db = tmp_path / "runs.db"
    code, out, err = run_cli(["train", str(recipe), "--db", str(db), "--no-progress"], capsys)
    assert code == 0, err
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT iteration, json_extract(info, '$.weights_version'), json_extract(info, '$.staleness') "
        "FROM episodes WHERE split = 'train'"
    ).fetchall()
    metrics = {i: json.loads(m) for i, m in con.execute('SELECT "index", metrics FROM iterations WHERE "index" > 0')}
    con.close()
    assert len(rows) == 3 * 16
    assert all(s == it - 1 - v and 0 <= s <= bound for it, v, s in rows)
    assert {s for it, _, s in rows if it == 2} == {1}  # iteration 2 ran beside update 1, on the base weights
    assert all("mismatch_abs" in m and m["staleness_max"] <= bound for m in metrics.values())
    assert "staleness: mean" in err or "staleness: mean" in out


def test_bounded_staleness_needs_an_engine_with_its_own_weights(tmp_path, suites_dir, tiny_model_dir, capsys):
    from conftest import one_line_error

    _pick_suite(suites_dir)
    recipe = _recipe(tmp_path, tiny_model_dir, train={"max_staleness": 1}, rollout={"engine": "hf"})
    code, _, err = run_cli(["train", str(recipe), "--db", str(tmp_path / "r.db"), "--no-progress"], capsys)
    one_line_error(code, err, "max_staleness")
