"""`agentrl export RUN --format jsonl`: a run as JSON lines, everything the store holds.

Line 1 is the run header, every further line one episode:

    {"type": "run", "schema": 1, "id", "name", "kind", "status", "created_at", "finished_at",
     "version", "parent_run_id", "recipe" (the resolved recipe as a mapping), "recipe_yaml",
     "iterations": [{"index", "metrics", "wall"}], "checkpoints": [{"iteration", "path", "metrics"}]}
    {"type": "episode", "id", "run_id", "iteration", "split", "task_id", "group_id", "env",
     "seed", "policy", "status", "won", "return", "length", "goal", "final_observation",
     "error", "wall_s", "info",
     "steps": [{"t", "observation", "admissible", "prompt_ids", "raw", "action", "action_ids",
                "logprobs", "reward", "terminated", "truncated", "valid", "anchor", "info",
                "advantages": {method: value}, "signals": {method: {name: value}}}]}

`advantages` holds every credit method stored for that step (training steps; eval steps
have none) and `signals` the learned signals that method used (SPA progress, OPRL
log-ratio, IGPO answer probability). Token ids and log-probs are plain lists.

`--iteration N`, `--split train|eval` and `--won` select episodes (the header is always whole).
The other formats: `export_parquet.py` (one row per step) and `export_sft.py` (chat messages).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

import yaml

from agentrl.store.db import Store
from agentrl.store.models import Run
from agentrl.store.queries import advantages_for_steps, checkpoints, display_status, iter_episodes, iterations
from agentrl.store.records import EpisodeRecord

SCHEMA = 1


def run_header(store: Store, run: Run) -> dict[str, Any]:
    try:
        recipe = yaml.safe_load(run.recipe)
    except yaml.YAMLError:
        recipe = None
    return {
        "type": "run",
        "schema": SCHEMA,
        "id": run.id,
        "name": run.name,
        "kind": run.kind,
        "status": display_status(run),
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "version": run.version,
        "parent_run_id": run.parent_run_id,
        "recipe": recipe,
        "recipe_yaml": run.recipe,
        "iterations": iterations(store, run.id),
        "checkpoints": checkpoints(store, run.id),
    }


def episode_dicts(
    store: Store,
    run_id: int,
    iteration: int | None = None,
    split: str | None = None,
    won: bool | None = None,
) -> Iterator[dict[str, Any]]:
    """The selected episodes of a run as export lines, read page by page (a run is never held whole)."""
    for page in iter_episodes(store, run_id, iteration, split, won, with_steps=True):
        advs = advantages_for_steps(store, [st.id for ep in page for st in ep.steps])
        for ep in page:
            yield _episode_dict(ep, run_id, advs)


def _episode_dict(ep: EpisodeRecord, run_id: int, advs: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    steps = []
    for st in ep.steps:
        rows = advs.get(st.id, [])
        steps.append(
            {
                "t": st.t,
                "observation": st.observation,
                "admissible": st.admissible,
                "prompt_ids": st.prompt_ids,
                "raw": st.raw,
                "action": st.action,
                "action_ids": st.action_ids,
                "logprobs": st.logprobs,
                "reward": st.reward,
                "terminated": st.terminated,
                "truncated": st.truncated,
                "valid": st.valid,
                "anchor": st.anchor,
                "info": st.info,
                "advantages": {r["method"]: r["value"] for r in rows},
                "signals": {r["method"]: r["signals"] for r in rows if r["signals"]},
            }
        )
    info = dict(ep.info)
    info.pop("run_id", None)
    info.pop("length", None)
    return {
        "type": "episode",
        "id": ep.id,
        "run_id": run_id,
        "iteration": ep.iteration,
        "split": ep.split,
        "task_id": ep.task_id,
        "group_id": ep.group_id,
        "env": ep.env,
        "seed": ep.seed,
        "policy": ep.policy,
        "status": ep.status,
        "won": ep.won,
        "return": ep.ret,
        "length": len(ep.steps),
        "goal": ep.goal,
        "final_observation": ep.final_observation,
        "error": ep.error,
        "wall_s": ep.wall_s,
        "info": info,
        "steps": steps,
    }


def export_jsonl(
    store: Store,
    run: Run,
    out: IO[str],
    iteration: int | None = None,
    split: str | None = None,
    won: bool | None = None,
) -> int:
    """Write the header and the selected episodes of `run` (all by default); returns the number of episodes."""
    out.write(json.dumps(run_header(store, run), default=str) + "\n")
    n = 0
    for d in episode_dicts(store, run.id, iteration, split, won):
        out.write(json.dumps(d, default=str) + "\n")
        n += 1
    return n
