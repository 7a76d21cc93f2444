"""Plumbing the commands share (`eval`, `train`, `sft`, `replay --policy`): SIGTERM handling and a
run's stored status around its work, the rollout progress bar, and finding a training run's checkpoint.

Imported by `agentrl.evaluate`, `agentrl.train`, `agentrl.sft` and `agentrl.replay`, and by `agentrl.cli` only
inside the commands that need it (so `agentrl --help` stays fast).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from agentrl.config import Recipe, recipe_from_dict
from agentrl.errors import UserError, WorkError
from agentrl.rollout import RolloutStats, clear_stop, request_stop, run_episodes, stop_requested
from agentrl.store import queries as q
from agentrl.store.db import Store
from agentrl.store.records import EpisodeRecord


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends a run like Ctrl-C: the run is marked interrupted, finished episodes are kept.

    The first SIGTERM asks the rollout to stop at the next turn boundary (never inside a database
    write or an env request); a second one interrupts at once."""

    def handler(signum, frame):
        if stop_requested():
            raise KeyboardInterrupt
        request_stop()

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    clear_stop()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
        clear_stop()


@dataclass
class RunOutcome:
    status: str = "running"  # then finished | interrupted | failed, as stored


@contextmanager
def stored_run(store: Store, run_id: int, on_interrupt: str, outcome: RunOutcome | None = None) -> Iterator[RunOutcome]:
    """A run's work, with SIGTERM as Ctrl-C (`sigterm_as_interrupt`) and the run's status stored when
    it ends: finished; interrupted, re-raised as a one-line WorkError `on_interrupt` (what was stored
    stays); failed, the error re-raised. `outcome` (yielded) holds the status too, for the trackers."""
    outcome = outcome or RunOutcome()
    try:
        with sigterm_as_interrupt():
            yield outcome
    except KeyboardInterrupt:
        outcome.status = "interrupted"
        store.set_run_status(run_id, "interrupted")
        raise WorkError(on_interrupt) from None
    except BaseException:
        outcome.status = "failed"
        store.set_run_status(run_id, "failed")
        raise
    outcome.status = "finished"
    store.set_run_status(run_id, "finished")


def progress_bar(console: Console, show: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("won {task.fields[won]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not show,
        transient=False,
    )


def rollout_with_progress(
    recipe: Recipe,
    policy,
    policy_name: str,
    specs,
    store: Store,
    run_id: int,
    description: str,
    console: Console,
    show_progress: bool,
    concurrency: int | None = None,
    pool=None,
) -> tuple[list[EpisodeRecord], RolloutStats]:
    """Run episodes with a progress bar; each finished episode is committed to the store at once.
    `pool`: an env pool to step them in, kept open (a trainer keeps one warm for the run); None:
    one of the recipe's runtime for this rollout only."""
    recs: list[EpisodeRecord] = []
    if concurrency is None:
        concurrency = recipe.rollout.batch_size if recipe.policy == "llm" else max(8, 2 * max(1, recipe.env.workers))
    own = pool is None
    if own:
        from agentrl.runtime import make_pool

        pool = make_pool(recipe)
    with progress_bar(console, show_progress) as progress, pool if own else nullcontext(pool) as pool:
        # the description holds suite and policy names: print them literally
        bar = progress.add_task(escape(description), total=len(specs), won=0)

        def on_episode(rec: EpisodeRecord) -> None:
            store.write_episode(rec, run_id)
            recs.append(rec)
            progress.update(bar, advance=1, won=sum(r.won for r in recs))

        stats = run_episodes(
            specs,
            policy,
            pool,
            recipe.env.max_steps,
            on_episode,
            concurrency=min(concurrency, max(1, len(specs))),
            invalid_penalty=recipe.env.invalid_penalty,
            policy_name=policy_name,
        )
    return recs, stats


def parse_checkpoint_ref(ref: str, option: str = "--policy") -> tuple[str, int | None]:
    """`RUN` or `RUN:N` (a training run by id or name, checkpoint N) -> (RUN, N or None: the last)."""
    run_ref, _, it = ref.partition(":")
    if it and not it.isdigit():
        raise UserError(f"{option} expects RUN or RUN:N, got '{ref}'")
    return run_ref, int(it) if it else None


def resolve_checkpoint(store: Store, run_ref: str, iteration: int | None, overrides=()) -> tuple[Recipe, str, int]:
    """(recipe, adapter dir, run id) of checkpoint `iteration` (default: the last) of a training or
    sft run."""
    run = q.get_run(store, run_ref, kind=q.TRAINED_KINDS)
    cps = q.checkpoints(store, run.id)
    if not cps:
        raise UserError(f"run {run.id} has no checkpoints")
    if iteration is None:
        cp = cps[-1]
    else:
        cp = next((c for c in cps if c["iteration"] == iteration), None)
        if cp is None:
            have = ", ".join(str(c["iteration"]) for c in cps)
            raise UserError(f"run {run.id} has no checkpoint {iteration} (have: {have})")
    if not Path(cp["path"]).exists():
        raise UserError(f"checkpoint directory {cp['path']} is missing")
    recipe = recipe_from_dict(yaml.safe_load(run.recipe), overrides, source=f"run {run.id}")
    return recipe, cp["path"], run.id
