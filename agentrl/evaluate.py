"""`agentrl eval`: roll a policy out on a suite's eval split and store every turn."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from rich.console import Console

from agentrl.checks import check_model_device, checked_suite
from agentrl.command import rollout_with_progress, stored_run
from agentrl.config import Recipe, recipe_to_yaml
from agentrl.errors import reset_warnings
from agentrl.policy.factory import make_policy
from agentrl.rollout import RolloutStats, group_specs
from agentrl.store.db import Store
from agentrl.store.records import EpisodeRecord


@dataclass
class EvalSummary:
    run_id: int
    policy: str
    episodes: int
    won: int
    success: float
    mean_return: float
    mean_length: float
    errors: int
    truncated: int
    wall_s: float
    steps_per_s: float
    store_share: float  # fraction of wall time spent writing to the store

    def as_dict(self) -> dict:
        return asdict(self)


def episode_means(recs: list[EpisodeRecord]) -> tuple[float, float, float]:
    """(success rate, mean return, mean length) of some episodes; zeros when there are none."""
    n = len(recs)
    if not n:
        return 0.0, 0.0, 0.0
    return sum(r.won for r in recs) / n, sum(r.ret for r in recs) / n, sum(len(r.steps) for r in recs) / n


def summarise(run_id: int, policy: str, recs: list[EpisodeRecord], stats: RolloutStats) -> EvalSummary:
    success, mean_return, mean_length = episode_means(recs)
    return EvalSummary(
        run_id=run_id,
        policy=policy,
        episodes=len(recs),
        won=sum(r.won for r in recs),
        success=success,
        mean_return=mean_return,
        mean_length=mean_length,
        errors=sum(r.status == "error" for r in recs),
        truncated=sum(r.status == "truncated" for r in recs),
        wall_s=stats.wall_s,
        steps_per_s=stats.steps / stats.wall_s if stats.wall_s else 0.0,
        store_share=stats.write_s / stats.wall_s if stats.wall_s else 0.0,
    )


def eval_tasks(recipe: Recipe, episodes: int | None, split: str = "eval") -> list[str]:
    suite = checked_suite(recipe, (split,))  # UserError on an empty split or a bad task id
    tasks = suite.eval if split == "eval" else suite.train
    n = episodes or recipe.eval.episodes or len(tasks)
    return [tasks[i % len(tasks)] for i in range(n)]


def run_eval(
    recipe: Recipe,
    store: Store,
    episodes: int | None = None,
    adapter_path: str | None = None,
    parent_run_id: int | None = None,
    console: Console | None = None,
    show_progress: bool = True,
    split: str = "eval",
) -> EvalSummary:
    """Roll the recipe's policy out on the suite's `split` (eval: the held-out games; train: e.g.
    expert demonstrations for `agentrl sft`), stored with that split."""
    console = console or Console(stderr=True)
    reset_warnings()  # each distinct warning (e.g. an env's) once per run
    tasks = eval_tasks(recipe, episodes, split)  # validates the suite before anything is written
    check_model_device(recipe)  # before a model is loaded
    policy, name = make_policy(recipe, greedy=recipe.eval.greedy, adapter_path=adapter_path)
    run_id = store.create_run(recipe.name, recipe_to_yaml(recipe), kind="eval", parent_run_id=parent_run_id)
    specs = group_specs(tasks, recipe.eval.group_size, split, 0, recipe.seed)
    t0 = time.perf_counter()
    with stored_run(store, run_id, f"interrupted; run {run_id} keeps the episodes that finished"):
        recs, stats = rollout_with_progress(
            recipe, policy, name, specs, store, run_id, f"eval {recipe.env.suite} ({name})", console, show_progress
        )
        stats.wall_s = time.perf_counter() - t0
        summary = summarise(run_id, name, recs, stats)
        store.add_iteration(run_id, 0, {"eval": summary.as_dict()}, {"eval": stats.wall_s})
    return summary
