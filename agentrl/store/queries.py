"""Read-side queries used by runs / inspect / replay / export / train."""

from __future__ import annotations

import math
import os
import socket
from collections import Counter
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Integer, case, cast, func, select
from sqlalchemy.orm import Session, selectinload

from agentrl.errors import UserError
from agentrl.stats import wilson
from agentrl.store.codec import decode_floats, decode_ids
from agentrl.store.db import Store
from agentrl.store.models import AdvantageRow, CheckpointRow, EpisodeRow, Iteration, Run, StepRow
from agentrl.store.records import EpisodeRecord, StepRecord


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def display_status(run: Run) -> str:
    """A run still marked 'running' whose writer process is gone is shown as 'unfinished'."""
    if run.status == "running" and run.host == socket.gethostname() and not _pid_alive(run.pid):
        return "unfinished"
    return run.status


def eval_counts_by_run(s, run_id: int | None = None) -> dict[int, dict[int, tuple[int, int]]]:
    """run -> iteration -> (eval episodes, won) of the runs' held-out evals (of one run if given)."""
    q = (
        select(
            EpisodeRow.run_id,
            EpisodeRow.iteration,
            func.count(EpisodeRow.id),
            func.sum(cast(EpisodeRow.won, Integer)),
        )
        .where(EpisodeRow.split == "eval")
        .group_by(EpisodeRow.run_id, EpisodeRow.iteration)
    )
    if run_id is not None:
        q = q.where(EpisodeRow.run_id == run_id)
    evals: dict[int, dict[int, tuple[int, int]]] = {}
    for rid, it, n, won in s.execute(q):
        evals.setdefault(rid, {})[it] = (n, won or 0)
    return evals


def eval_counts(store: Store, run_id: int) -> dict[int, tuple[int, int]]:
    """iteration -> (eval episodes, won) of one run's held-out evals."""
    with store.session() as s:
        return eval_counts_by_run(s, run_id).get(run_id, {})


# kinds of runs that train an adapter, evaluate before (iteration 0) and after, and keep checkpoints:
# `agentrl train` (PPO) and `agentrl sft`
TRAINED_KINDS = ("train", "sft")


def final_eval_iteration(kind: str, evals: dict[int, tuple[int, int]]) -> int | None:
    """The iteration of a run's "after" eval: a train or sft run's last eval after iteration 0 (its
    eval at iteration 0 is the "before"), an eval run's last one; None without one."""
    return max((i for i in evals if kind not in TRAINED_KINDS or i > 0), default=None)


def _ci(won: int, n: int) -> list[float] | None:
    """The 95% Wilson interval [lo, hi] of won / n; None without episodes."""
    return list(wilson(won, n)) if n else None


def list_runs(store: Store) -> list[dict[str, Any]]:
    """Runs with their episode counts and held-out success. A training run evaluates before
    training (iteration 0), maybe every `eval_every` iterations, and after its last iteration:
    `eval_success` is its last eval after iteration 0 (None until there is one), `eval_before`
    the one at iteration 0. An eval run has one eval: `eval_success`, and `eval_before` None.
    `eval_iteration` / `eval_episodes`: the iteration and size of the eval `eval_success` is of;
    `eval_before_episodes` the size of the one before; `eval_won` / `eval_before_won` their won
    episodes and `eval_ci` / `eval_before_ci` the 95% Wilson intervals [lo, hi] of their success."""
    with store.session() as s:
        runs = s.scalars(select(Run).order_by(Run.id)).all()
        stats = {
            r[0]: r[1:]
            for r in s.execute(
                select(
                    EpisodeRow.run_id,
                    func.count(EpisodeRow.id),
                    func.sum(cast(EpisodeRow.won, Integer)),
                    func.max(EpisodeRow.iteration),
                ).group_by(EpisodeRow.run_id)
            )
        }
        evals = eval_counts_by_run(s)
    out = []
    for r in runs:
        n, won, last_it = stats.get(r.id, (0, 0, None))
        ev = evals.get(r.id, {})
        bn, bwon = ev.get(0, (0, 0)) if r.kind in TRAINED_KINDS else (0, 0)
        final_it = final_eval_iteration(r.kind, ev)
        en, ewon = ev[final_it] if final_it is not None else (0, 0)
        out.append(
            {
                "id": r.id,
                "name": r.name,
                "kind": r.kind,
                "status": display_status(r),
                "created_at": r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                "episodes": n or 0,
                "eval_episodes": en,
                "eval_success": ewon / en if en else None,
                "eval_won": ewon,
                "eval_ci": _ci(ewon, en),
                "eval_iteration": final_it,
                "eval_before": bwon / bn if bn else None,
                "eval_before_episodes": bn,
                "eval_before_won": bwon,
                "eval_before_ci": _ci(bwon, bn),
                "last_iteration": last_it,
            }
        )
    return out


def eval_change_by_task(store: Store, run_id: int) -> list[float]:
    """Per eval task (sorted by task id), the change of held-out success from the eval before
    training (iteration 0) to the run's last eval: won after minus won before, averaged over the
    group samples both evals played (matched by task id and sample index). Empty when the run
    lacks either eval or they share no task."""
    its = episode_iterations(store, run_id, split="eval")
    if not its or its[0] != 0 or its[-1] == 0:
        return []
    before = _won_by_sample(episodes(store, run_id, iteration=0, split="eval"))
    after = _won_by_sample(episodes(store, run_id, iteration=its[-1], split="eval"))
    per_task: dict[str, list[float]] = {}
    for key in sorted(before.keys() & after.keys()):
        per_task.setdefault(key[0], []).append(after[key] - before[key])
    return [sum(d) / len(d) for d in per_task.values()]


def _won_by_sample(recs: list[EpisodeRecord]) -> dict[tuple[str, int, int], float]:
    """(task id, sample index, repeat) -> 1.0 won / 0.0 not; `repeat` counts a task played more
    than once with the same sample index (an eval split that lists a task twice)."""
    seen: Counter = Counter()
    out = {}
    for r in recs:
        key = (r.task_id, int(r.info.get("sample", 0)))
        out[(*key, seen[key])] = float(r.won)
        seen[key] += 1
    return out


def episode_iterations(store: Store, run_id: int, split: str | None = None) -> list[int]:
    """The iterations of a run that have episodes (of `split`), ascending."""
    q = select(EpisodeRow.iteration).where(EpisodeRow.run_id == run_id).distinct()
    if split is not None:
        q = q.where(EpisodeRow.split == split)
    with store.session() as s:
        return sorted(s.scalars(q).all())


def get_run(store: Store, ref: str | int, kind: str | tuple[str, ...] | None = None) -> Run:
    """A run by id, or by name.

    A name must name one run: of `kind` ("train" | "eval" | "sft", or a tuple of kinds) when the
    command needs that kind (e.g. `eval --run quickstart` wants the training run, not the eval runs
    it stored under the same name). Several candidates are an error that lists them by id."""
    kinds = (kind,) if isinstance(kind, str) else kind
    kind = " or ".join(kinds) if kinds else None
    with store.session() as s:
        if isinstance(ref, int) or str(ref).isdigit():
            run = s.get(Run, int(ref))
            if run is not None:
                return run
        named = s.scalars(select(Run).where(Run.name == str(ref)).order_by(Run.id)).all()
    if not named:
        raise UserError(f"no run '{ref}' in {store.path} (see `agentrl runs`)")
    cands = [r for r in named if kinds is None or r.kind in kinds]
    if not cands:
        raise UserError(
            f"run '{ref}' is not a {kind} run (ids {', '.join(str(r.id) for r in named)} are "
            f"{', '.join(sorted({r.kind for r in named}))} runs)"
        )
    if len(cands) > 1:
        listed = "; ".join(f"{r.id} ({r.kind}, {display_status(r)}, {r.created_at:%Y-%m-%d %H:%M})" for r in cands)
        raise UserError(f"several {kind + ' ' if kind else ''}runs are named '{ref}': {listed}; give the id")
    return cands[0]


def _step_record(row: StepRow) -> StepRecord:
    return StepRecord(
        t=row.t,
        observation=row.observation,
        action=row.action,
        reward=row.reward,
        terminated=row.terminated,
        truncated=row.truncated,
        valid=row.valid,
        anchor=row.anchor,
        admissible=row.admissible,
        raw=row.raw,
        prompt_ids=decode_ids(row.prompt_ids),
        action_ids=decode_ids(row.action_ids),
        logprobs=decode_floats(row.logprobs),
        info=row.info or {},
        id=row.id,
    )


def _episode_record(row: EpisodeRow, with_steps: bool) -> EpisodeRecord:
    rec = EpisodeRecord(
        task_id=row.task_id,
        group_id=row.group_id,
        env=row.env,
        split=row.split,
        iteration=row.iteration,
        seed=row.seed,
        policy=row.policy,
        status=row.status,
        won=row.won,
        ret=row.ret,
        goal=row.goal,
        final_observation=row.final_observation,
        error=row.error,
        info=row.info or {},
        wall_s=row.wall_s,
        id=row.id,
    )
    if with_steps:
        rec.steps = [_step_record(st) for st in row.steps]
    rec.info.setdefault("run_id", row.run_id)
    rec.info.setdefault("length", row.length)
    return rec


def get_episode(store: Store, episode_id: int | str) -> EpisodeRecord:
    try:
        eid = int(episode_id)
    except (TypeError, ValueError):
        raise UserError(f"episode id must be a number, got '{episode_id}'") from None
    with store.session() as s:
        row = s.get(EpisodeRow, eid)
        if row is None:
            raise UserError(f"no episode {eid} in {store.path}")
        return _episode_record(row, with_steps=True)


def episodes(
    store: Store,
    run_id: int,
    iteration: int | None = None,
    split: str | None = None,
    failed: bool = False,
    with_steps: bool = False,
) -> list[EpisodeRecord]:
    q = select(EpisodeRow).where(EpisodeRow.run_id == run_id)
    if iteration is not None:
        q = q.where(EpisodeRow.iteration == iteration)
    if split is not None:
        q = q.where(EpisodeRow.split == split)
    if failed:
        q = q.where(EpisodeRow.won.is_(False))
    with store.session() as s:
        return [_episode_record(r, with_steps) for r in s.scalars(q.order_by(EpisodeRow.id))]


def episode_filter(
    run_id: int, iteration: int | None = None, split: str | None = None, won: bool | None = None
) -> list:
    """WHERE clauses selecting a run's episodes (of one iteration, one split, won or lost ones)."""
    where = [EpisodeRow.run_id == run_id]
    if iteration is not None:
        where.append(EpisodeRow.iteration == iteration)
    if split is not None:
        where.append(EpisodeRow.split == split)
    if won is not None:
        where.append(EpisodeRow.won.is_(won))
    return where


def episode_id_pages(
    store: Store,
    run_id: int,
    iteration: int | None = None,
    split: str | None = None,
    won: bool | None = None,
    page: int = 128,
) -> Iterator[list[int]]:
    """The ids of the selected episodes in ascending pages of at most `page`, each read in its own
    short session, up to the last episode stored when the first page is read (episodes a running
    run writes meanwhile are left out). For exports that must not hold a whole run in memory."""
    where = episode_filter(run_id, iteration, split, won)
    with store.session() as s:
        last_id = s.scalar(select(func.max(EpisodeRow.id)).where(*where))
    after = 0
    while last_id is not None and after < last_id:
        with store.session() as s:
            ids = list(
                s.scalars(
                    select(EpisodeRow.id)
                    .where(*where, EpisodeRow.id > after, EpisodeRow.id <= last_id)
                    .order_by(EpisodeRow.id)
                    .limit(page)
                )
            )
        if not ids:
            return
        yield ids
        after = ids[-1]


def iter_episodes(
    store: Store,
    run_id: int,
    iteration: int | None = None,
    split: str | None = None,
    won: bool | None = None,
    with_steps: bool = False,
    page: int = 128,
) -> Iterator[list[EpisodeRecord]]:
    """`episodes`, streamed: the selected episodes in pages of at most `page` records (ascending ids)."""
    for ids in episode_id_pages(store, run_id, iteration, split, won, page):
        q = select(EpisodeRow).where(EpisodeRow.id.in_(ids)).order_by(EpisodeRow.id)
        if with_steps:
            q = q.options(selectinload(EpisodeRow.steps))
        with store.session() as s:
            yield [_episode_record(r, with_steps) for r in s.scalars(q)]


def advantages_for_steps(store: Store, step_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """step id -> [{method, value, signals}] for the given steps."""
    out: dict[int, list[dict[str, Any]]] = {}
    with store.session() as s:
        for i in range(0, len(step_ids), 500):
            rows = s.execute(
                select(AdvantageRow.step_id, AdvantageRow.method, AdvantageRow.value, AdvantageRow.signals)
                .where(AdvantageRow.step_id.in_(step_ids[i : i + 500]))
                .order_by(AdvantageRow.id)
            )
            for sid, method, value, signals in rows:
                out.setdefault(sid, []).append({"method": method, "value": value, "signals": signals})
    return out


def iterations(store: Store, run_id: int) -> list[dict[str, Any]]:
    with store.session() as s:
        rows = s.scalars(select(Iteration).where(Iteration.run_id == run_id).order_by(Iteration.index)).all()
        return [{"index": r.index, "metrics": r.metrics, "wall": r.wall} for r in rows]


def checkpoints(store: Store, run_id: int) -> list[dict[str, Any]]:
    with store.session() as s:
        rows = s.scalars(
            select(CheckpointRow).where(CheckpointRow.run_id == run_id).order_by(CheckpointRow.iteration)
        ).all()
        return [{"iteration": r.iteration, "path": store.resolve_path(r.path), "metrics": r.metrics} for r in rows]


def advantages_for_episode(store: Store, episode_id: int) -> dict[int, list[dict[str, Any]]]:
    """step id -> [{method, value, signals}] for the steps of one episode."""
    with store.session() as s:
        rows = (
            s.execute(
                select(AdvantageRow)
                .join(StepRow, StepRow.id == AdvantageRow.step_id)
                .where(StepRow.episode_id == episode_id)
            )
            .scalars()
            .all()
        )
        out: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            out.setdefault(r.step_id, []).append({"method": r.method, "value": r.value, "signals": r.signals})
        return out


CREDIT_METRICS = (
    "estimator_loss",
    "prm_loss",
    "prm_pairs",
    "logratio_abs",
    "progress_abs",
    "answer_prob",
    "final_answer_prob",
    "zero_ig_frac",
)


def credit_aggregates(s: Session, run_id: int) -> tuple[list, dict[int, float]]:
    """A training run's advantages, aggregated in SQL: per (iteration, stored method) the step count,
    mean, mean |A| and sample std; and per iteration the share of its train steps with a
    non-empty state anchor that recurs within their episode group (GiGPO's step groups of size >= 2).
    The one definition behind `inspect --credit` and the viewer's credit panel."""
    adv = s.execute(
        select(
            EpisodeRow.iteration,
            AdvantageRow.method,
            func.count(),
            func.avg(AdvantageRow.value),
            func.avg(func.abs(AdvantageRow.value)),
            func.sum(AdvantageRow.value * AdvantageRow.value),
        )
        .select_from(EpisodeRow)
        .join(StepRow, StepRow.episode_id == EpisodeRow.id)
        .join(AdvantageRow, AdvantageRow.step_id == StepRow.id)
        .where(EpisodeRow.run_id == run_id, EpisodeRow.split == "train")
        .group_by(EpisodeRow.iteration, AdvantageRow.method)
        .order_by(EpisodeRow.iteration, AdvantageRow.method)
    ).all()
    if not adv:
        return [], {}
    per_anchor = (
        select(EpisodeRow.iteration.label("it"), func.count().label("c"))
        .select_from(EpisodeRow)
        .join(StepRow, StepRow.episode_id == EpisodeRow.id)
        .where(EpisodeRow.run_id == run_id, EpisodeRow.split == "train", StepRow.anchor != "")
        .group_by(EpisodeRow.iteration, EpisodeRow.group_id, StepRow.anchor)
        .subquery()
    )
    recurring = func.sum(case((per_anchor.c.c > 1, per_anchor.c.c), else_=0))
    recur = {
        it: (rec or 0) / n
        for it, rec, n in s.execute(
            select(per_anchor.c.it, recurring, func.sum(per_anchor.c.c)).group_by(per_anchor.c.it)
        )
        if n
    }
    rows = []
    for it, method, n, mean, mean_abs, sq in adv:
        std = math.sqrt(max(0.0, (sq - n * mean * mean) / (n - 1))) if n > 1 else 0.0
        rows.append((it, method, n, mean, mean_abs, std))
    return rows, recur


def credit_summary(store: Store, run_id: int) -> list[dict[str, Any]]:
    """Per training iteration and stored credit method (`credit_aggregates`): steps, mean, mean |A|
    and std of the advantages, the anchor recurrence, and the learned parts' metrics. A run stores
    one method; advantages of another written beside it get rows of their own, never pooled."""
    with store.session() as s:
        adv, recur = credit_aggregates(s, run_id)
    metrics = {it["index"]: it["metrics"] for it in iterations(store, run_id)}
    out = []
    for it, method, n, mean, mean_abs, std in adv:
        row = {
            "iteration": it,
            "method": method,
            "steps": n,
            "mean_adv": mean,
            "mean_abs_adv": mean_abs,
            "std_adv": std,
            "nonsingleton_anchor_frac": recur.get(it),
        }
        row.update({k: metrics.get(it, {}).get(k) for k in CREDIT_METRICS if k in metrics.get(it, {})})
        out.append(row)
    return out


def flat_metrics(metrics: dict | None) -> dict:
    """An iteration's metrics with an eval run's `{"eval": {...}}` row as the train-run keys
    (`eval_success`, `eval_return`, `eval_episodes`), as `plot` and `view` read them."""
    out = dict(metrics or {})
    ev = out.get("eval")
    if isinstance(ev, dict):
        out.setdefault("eval_success", ev.get("success"))
        out.setdefault("eval_return", ev.get("mean_return"))
        out.setdefault("eval_episodes", ev.get("episodes"))
    return out
