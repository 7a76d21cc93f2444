"""`agentrl envs build`: generate and cache the games of a suite (or ALFWorld games from the generator).

Each adapter builds its own games through its optional hook `build_tasks(task_ids, workers,
progress)` (docs/env-contract.md): TextWorld generates and caches, ALFWorld generates and verifies,
a third-party adapter does what it defines; an adapter without the hook has nothing to build."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentrl.envs.registry import check_tasks, env_name_of, make_env
from agentrl.envs.suites import load_suite
from agentrl.errors import UserError


def build_missing(
    task_ids: list[str],
    is_ready: Callable[[str], bool],
    build_one: Callable[[str], object],
    workers: int,
    progress: Callable[[int], None] | None,
) -> None:
    """Build every task id not ready yet, in `workers` spawned processes; `progress(k)` gets the
    number of task ids that just became ready (cached ones at once), adding up to len(task_ids).

    `build_one` must be a module-level function (it is pickled). Spawn, not fork: workers inherit
    no threads or locks of the caller (e.g. torch's); an executor, unlike Pool, fails instead of
    hanging when a worker dies."""
    missing = list(dict.fromkeys(t for t in task_ids if not is_ready(t)))
    counts = {t: task_ids.count(t) for t in missing}
    cached = len(task_ids) - sum(counts.values())
    if progress and cached:
        progress(cached)
    if workers <= 1 or len(missing) <= 1:
        for t in missing:
            build_one(t)
            if progress:
                progress(counts[t])
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(missing)), mp_context=ctx) as pool:
        futures = {pool.submit(build_one, t): t for t in missing}
        for fut in as_completed(futures):
            fut.result()
            if progress:
                progress(counts[futures[fut]])


def build(
    name: str,
    split: str = "all",
    workers: int = 2,
    n: int | None = None,
    seed: int = 0,
    task_types: list[str] | None = None,
    floorplans: list[str] | None = None,
    small: bool = False,
    console: Console | None = None,
) -> list:
    console = console or Console(stderr=True)
    suite = None
    if name != "alfworld":  # a suite: every task id is checked before anything is built
        suite = load_suite(name)
        check_tasks(suite.train + suite.eval, suite.options)
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        if name == "alfworld":  # the generator, with its own options
            try:
                from agentrl.envs.alfworld import build_alfworld, default_n
            except ImportError as e:
                raise UserError(
                    f"ALFWorld needs the alfworld package ({e.name}): pip install 'agentrl[alfworld]'"
                ) from None
            splits = ["train", "eval"] if split == "all" else [split]
            out: list = []
            for sp in splits:
                bar = progress.add_task(f"alfworld {sp}", total=default_n(sp, small) if n is None else n)
                out += build_alfworld(
                    split=sp,
                    n=n,
                    seed=seed,
                    task_types=task_types,
                    floorplans=floorplans,
                    workers=workers,
                    progress=lambda k, b=bar: progress.advance(b, k),
                    small=small,
                )
            return out
        assert suite is not None
        tasks = (suite.train if split in ("train", "all") else []) + (suite.eval if split in ("eval", "all") else [])
        by_env: dict[str, list[str]] = {}
        for t in tasks:
            by_env.setdefault(env_name_of(t), []).append(t)
        out = []
        for env, ids in by_env.items():
            adapter = make_env(env, suite.options)
            try:
                hook = getattr(adapter, "build_tasks", None)  # the adapter's build hook
                if not callable(hook):  # nothing to generate for this adapter (e.g. toy, gym)
                    out += ids
                    continue
                bar = progress.add_task(f"{name} ({env})", total=len(ids))
                built = hook(ids, workers=workers, progress=lambda k, b=bar: progress.advance(b, k))
                out += list(built) if built is not None else ids
            finally:
                adapter.close()
        return out
