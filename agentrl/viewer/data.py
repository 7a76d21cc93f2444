"""The queries behind the viewer's pages: plain dicts for the templates.

Every function takes an open `Session` (one short read-only session per request: a consistent
snapshot of the database while a run keeps writing) and loads only what its page shows: episode
lists are counted and paged in SQL (LIMIT/OFFSET), the text search is an SQL LIKE over the steps
(with `%`, `_` and `\\` escaped), and steps are read only for the one episode or group shown.
No starlette here: the data layer imports nothing of the viewer extra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import yaml
from sqlalchemy import Integer, and_, cast, exists, func, or_, select
from sqlalchemy.orm import Session

from agentrl.stats import wilson
from agentrl.store.codec import decode_floats
from agentrl.store.models import AdvantageRow, CheckpointRow, EpisodeRow, Iteration, Run, StepRow
from agentrl.store.queries import (
    CREDIT_METRICS,
    TRAINED_KINDS,
    credit_aggregates,
    display_status,
    eval_counts_by_run,
    final_eval_iteration,
    flat_metrics,
)

PAGE_SIZE = 50
GROUP_MAX_EPISODES = 64  # columns on a group page (a group is G episodes; G is small in practice)
OUTCOMES = ("won", "lost", "error")
SPLITS = ("train", "eval")


# -- small helpers ---------------------------------------------------------------------------
def rate(won: int, n: int) -> dict[str, Any] | None:
    """A success rate with its 95% Wilson interval; None without episodes."""
    if not n:
        return None
    lo, hi = wilson(won, n)
    return {"won": won, "n": n, "p": won / n, "lo": lo, "hi": hi}


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def recipe_info(text: str | None) -> dict[str, str]:
    """name, suite, method and policy of a stored recipe YAML ('' where absent or unreadable)."""
    try:
        data = yaml.load(text or "", Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        data = None
    data = data if isinstance(data, dict) else {}
    env = data.get("env") if isinstance(data.get("env"), dict) else {}
    credit = data.get("credit") if isinstance(data.get("credit"), dict) else {}

    def s(v) -> str:
        return "" if v is None or isinstance(v, (dict, list)) else str(v)

    return {
        "name": s(data.get("name")),
        "suite": s(env.get("suite")),
        "method": s(credit.get("method")),
        "policy": s(data.get("policy")),
    }


def like_pattern(text: str) -> str:
    """`%text%` for SQL LIKE ... ESCAPE '\\': the user's % and _ match themselves."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _before_after(kind: str, evals: dict[int, tuple[int, int]]) -> tuple[dict | None, dict | None, int | None]:
    """(before, after, after's iteration) as in `queries.list_runs`: a train run's eval at
    iteration 0 and its last eval after it; an eval run's (last) eval and no before."""
    before = rate(evals[0][1], evals[0][0]) if kind in TRAINED_KINDS and 0 in evals else None
    final_it = final_eval_iteration(kind, evals)
    after = rate(evals[final_it][1], evals[final_it][0]) if final_it is not None else None
    return before, after, final_it


def _run_dict(r: Run) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "kind": r.kind,
        "status": display_status(r),
        "created_at": r.created_at.strftime("%Y-%m-%d %H:%M:%S") if r.created_at else "",
        "finished_at": r.finished_at.strftime("%Y-%m-%d %H:%M:%S") if r.finished_at else "",
        "version": r.version,
        "host": r.host,
        "pid": r.pid,
        "parent_run_id": r.parent_run_id,
        "recipe": recipe_info(r.recipe),
    }


# -- runs ------------------------------------------------------------------------------------
def list_runs(s: Session) -> list[dict[str, Any]]:
    """Every run with its episode count, last iteration, recipe name/suite/method and held-out
    success before -> after with Wilson intervals (newest first)."""
    runs = s.scalars(select(Run).order_by(Run.id.desc())).all()
    counts = {
        rid: (n, last)
        for rid, n, last in s.execute(
            select(EpisodeRow.run_id, func.count(), func.max(EpisodeRow.iteration)).group_by(EpisodeRow.run_id)
        )
    }
    evals = eval_counts_by_run(s)
    out = []
    for r in runs:
        d = _run_dict(r)
        n, last = counts.get(r.id, (0, None))
        d["before"], d["after"], d["after_iteration"] = _before_after(r.kind, evals.get(r.id, {}))
        d.update(episodes=n, last_iteration=last)
        out.append(d)
    return out


def get_run(s: Session, run_id: int) -> dict[str, Any] | None:
    r = s.get(Run, run_id)
    if r is None:
        return None
    d = _run_dict(r)
    d["recipe_yaml"] = r.recipe or ""
    evals = eval_counts_by_run(s, run_id).get(run_id, {})
    d["before"], d["after"], d["after_iteration"] = _before_after(r.kind, evals)
    d["evals"] = [{"iteration": it, "rate": rate(won, n)} for it, (n, won) in sorted(evals.items())]
    n, won, last = s.execute(
        select(func.count(), func.sum(cast(EpisodeRow.won, Integer)), func.max(EpisodeRow.iteration)).where(
            EpisodeRow.run_id == run_id
        )
    ).one()
    d.update(episodes=n, episodes_won=won or 0, last_iteration=last)
    return d


_flatten = flat_metrics


def iterations(s: Session, run_id: int) -> list[dict[str, Any]]:
    """The run's `iterations` rows: index, metrics (flattened), wall."""
    rows = s.execute(
        select(Iteration.index, Iteration.metrics, Iteration.wall)
        .where(Iteration.run_id == run_id)
        .order_by(Iteration.index)
    ).all()
    return [{"index": i, "metrics": _flatten(m), "wall": dict(w or {})} for i, m, w in rows]


def checkpoints(s: Session, run_id: int) -> list[dict[str, Any]]:
    rows = s.execute(
        select(CheckpointRow.iteration, CheckpointRow.path, CheckpointRow.metrics, CheckpointRow.created_at)
        .where(CheckpointRow.run_id == run_id)
        .order_by(CheckpointRow.iteration)
    ).all()
    return [
        {
            "iteration": it,
            "path": path,
            "metrics": {k: v for k, v in (m or {}).items() if _number(v) is not None},
            "created_at": c.strftime("%Y-%m-%d %H:%M:%S") if c else "",
        }
        for it, path, m, c in rows
    ]


def credit_stats(
    s: Session, run_id: int, iters: list[dict[str, Any]] | None = None, cache: dict | None = None
) -> list[dict[str, Any]]:
    """Per training iteration and stored credit method: steps, mean, mean |A| and std of the
    advantages; per iteration the share of train steps whose state anchor recurs within their
    episode group (GiGPO's non-singleton step groups) and the learned parts' metrics
    (`queries.CREDIT_METRICS`). The aggregates are `queries.credit_aggregates`, as
    `agentrl inspect --credit` prints them.

    `cache` (a dict the caller keeps): the aggregates are reused while the run's last episode id
    and the database's last advantage id are unchanged (new or rewritten advantages get new ids),
    so a finished run's page is not re-aggregated on every reload."""
    key = None
    if cache is not None:
        key = (
            run_id,
            s.scalar(select(func.max(EpisodeRow.id)).where(EpisodeRow.run_id == run_id)),
            s.scalar(select(func.max(AdvantageRow.id))),
        )
    if key is not None and key in cache:
        adv, recur = cache[key]
    else:
        adv, recur = credit_aggregates(s, run_id)
        if key is not None:
            for old in [k for k in cache if k[0] == run_id] + list(cache)[: max(0, len(cache) - 15)]:
                cache.pop(old, None)
            cache[key] = (adv, recur)
    if not adv:
        return []
    metrics = {it["index"]: it["metrics"] for it in (iters if iters is not None else iterations(s, run_id))}
    out = []
    for it, method, n, mean, mean_abs, std in adv:
        m = metrics.get(it, {})
        out.append(
            {
                "iteration": it,
                "method": method,
                "steps": n,
                "mean": mean,
                "mean_abs": mean_abs,
                "std": std,
                "anchor_recur": recur.get(it),
                "learned": {k: m[k] for k in CREDIT_METRICS if _number(m.get(k)) is not None},
            }
        )
    return out


# -- episodes --------------------------------------------------------------------------------
@dataclass
class EpisodeFilter:
    """The filters of a run's episode table (GET query parameters of the same names)."""

    split: str | None = None  # train | eval
    iteration: int | None = None
    outcome: str | None = None  # won | lost (not won, not an error) | error
    task: str | None = None  # substring of the task id
    min_len: int | None = None
    max_len: int | None = None
    q: str | None = None  # substring of any step's observation or action

    def params(self) -> dict[str, str]:
        """The non-empty filters as query parameters."""
        return {f.name: str(v) for f in fields(self) if (v := getattr(self, f.name)) not in (None, "")}

    def active(self) -> bool:
        return bool(self.params())


def _where(run_id: int, f: EpisodeFilter) -> list:
    conds = [EpisodeRow.run_id == run_id]
    if f.split:
        conds.append(EpisodeRow.split == f.split)
    if f.iteration is not None:
        conds.append(EpisodeRow.iteration == f.iteration)
    if f.outcome == "won":
        conds.append(EpisodeRow.won.is_(True))
    elif f.outcome == "lost":
        conds.extend([EpisodeRow.won.is_(False), EpisodeRow.status != "error"])
    elif f.outcome == "error":
        conds.append(EpisodeRow.status == "error")
    if f.task:
        conds.append(EpisodeRow.task_id.like(like_pattern(f.task), escape="\\"))
    if f.min_len is not None:
        conds.append(EpisodeRow.length >= f.min_len)
    if f.max_len is not None:
        conds.append(EpisodeRow.length <= f.max_len)
    if f.q:
        pat = like_pattern(f.q)
        conds.append(
            exists().where(
                StepRow.episode_id == EpisodeRow.id,
                or_(StepRow.observation.like(pat, escape="\\"), StepRow.action.like(pat, escape="\\")),
            )
        )
    return conds


EPISODE_COLUMNS = (
    EpisodeRow.id,
    EpisodeRow.iteration,
    EpisodeRow.split,
    EpisodeRow.task_id,
    EpisodeRow.group_id,
    EpisodeRow.status,
    EpisodeRow.won,
    EpisodeRow.ret,
    EpisodeRow.length,
    EpisodeRow.error,
    EpisodeRow.wall_s,
)


def _episode_row(row) -> dict[str, Any]:
    r = row._mapping
    d = {
        k: r[k]
        for k in ("id", "iteration", "split", "task_id", "group_id", "status", "ret", "length", "error", "wall_s")
    }
    d["won"] = bool(r["won"])
    d["outcome"] = "error" if r["status"] == "error" else ("won" if r["won"] else "lost")
    return d


def find_episodes(
    s: Session, run_id: int, f: EpisodeFilter, page: int = 1, page_size: int = PAGE_SIZE
) -> dict[str, Any]:
    """One page of the run's episodes that pass the filters (by id), the number that pass and
    how many of those were won."""
    conds = and_(*_where(run_id, f))
    total, won = s.execute(select(func.count(), func.sum(cast(EpisodeRow.won, Integer))).where(conds)).one()
    pages = max(1, math.ceil(total / page_size))
    page = min(max(1, page), pages)
    rows = []
    if total:  # (no second scan when nothing matches: a search for an absent word reads every step)
        rows = s.execute(
            select(*EPISODE_COLUMNS)
            .where(conds)
            .order_by(EpisodeRow.id)
            .limit(page_size)
            .offset((page - 1) * page_size)
        ).all()
    return {
        "rows": [_episode_row(r) for r in rows],
        "total": total,
        "rate": rate(won or 0, total),
        "page": page,
        "pages": pages,
        "page_size": page_size,
    }


def episode_iterations(s: Session, run_id: int) -> list[int]:
    return list(
        s.scalars(
            select(EpisodeRow.iteration).where(EpisodeRow.run_id == run_id).distinct().order_by(EpisodeRow.iteration)
        )
    )


def _advantages(s: Session, episode_ids: list[int], method: str | None = None) -> dict[int, dict[str, dict]]:
    """step id -> method -> {value, signals} for the steps of these episodes."""
    q = (
        select(AdvantageRow.step_id, AdvantageRow.method, AdvantageRow.value, AdvantageRow.signals)
        .join(StepRow, StepRow.id == AdvantageRow.step_id)
        .where(StepRow.episode_id.in_(episode_ids))
    )
    if method is not None:
        q = q.where(AdvantageRow.method == method)
    out: dict[int, dict[str, dict]] = {}
    for sid, m, v, sig in s.execute(q):
        out.setdefault(sid, {})[m] = {"value": v, "signals": {k: x for k, x in (sig or {}).items()}}
    return out


def _bar(v: float | None, scale: float) -> dict[str, Any] | None:
    """A signed bar: `frac` in [-1, 1] of the half-width (scale = the largest |value| shown)."""
    if v is None:
        return None
    return {"value": v, "frac": 0.0 if scale <= 0 else max(-1.0, min(1.0, v / scale))}


STEP_COLUMNS = (
    StepRow.id,
    StepRow.episode_id,
    StepRow.t,
    StepRow.observation,
    StepRow.admissible,
    StepRow.action,
    StepRow.raw,
    StepRow.reward,
    StepRow.terminated,
    StepRow.truncated,
    StepRow.valid,
    StepRow.anchor,
    StepRow.info,
    StepRow.logprobs,
)


def _step_dict(row) -> dict[str, Any]:
    r = row._mapping  # not row.t: a Row's `.t` is its tuple
    lps = decode_floats(r["logprobs"]) or []
    return {
        "id": r["id"],
        "t": r["t"],
        "observation": r["observation"],
        "admissible": r["admissible"] if isinstance(r["admissible"], list) else None,
        "action": r["action"],
        "raw": r["raw"],
        "reward": r["reward"],
        "terminated": r["terminated"],
        "truncated": r["truncated"],
        "valid": r["valid"],
        "anchor": r["anchor"],
        "info": r["info"] or {},
        "tokens": len(lps),
        "logprob": sum(lps) if lps else None,
    }


def neighbours(s: Session, run_id: int, episode_id: int) -> tuple[int | None, int | None]:
    prev = s.scalar(select(func.max(EpisodeRow.id)).where(EpisodeRow.run_id == run_id, EpisodeRow.id < episode_id))
    nxt = s.scalar(select(func.min(EpisodeRow.id)).where(EpisodeRow.run_id == run_id, EpisodeRow.id > episode_id))
    return prev, nxt


def get_episode(s: Session, episode_id: int) -> dict[str, Any] | None:
    """One episode with its steps, return-to-go and every stored credit method's advantage and
    signals per step, as bars scaled per method / signal within the episode."""
    e = s.execute(
        select(*EPISODE_COLUMNS, EpisodeRow.run_id, EpisodeRow.env, EpisodeRow.seed, EpisodeRow.policy,
               EpisodeRow.goal, EpisodeRow.final_observation, EpisodeRow.info, EpisodeRow.created_at)
        .where(EpisodeRow.id == episode_id)
    ).one_or_none()  # fmt: skip
    if e is None:
        return None
    ep = _episode_row(e)
    info = e.info or {}
    ep.update(
        run_id=e.run_id,
        env=e.env,
        seed=e.seed,
        policy=e.policy,
        goal=e.goal,
        final_observation=e.final_observation,
        info={k: v for k, v in info.items() if k != "signals"},
        episode_signals=info.get("signals") if isinstance(info.get("signals"), dict) else {},
        created_at=e.created_at.strftime("%Y-%m-%d %H:%M:%S") if e.created_at else "",
    )
    run = s.get(Run, e.run_id)
    ep["run_name"] = run.name if run else ""
    steps = [
        _step_dict(r)
        for r in s.execute(select(*STEP_COLUMNS).where(StepRow.episode_id == episode_id).order_by(StepRow.t))
    ]
    advs = _advantages(s, [episode_id])
    togo = 0.0
    for st in reversed(steps):
        togo += st["reward"]
        st["to_go"] = togo
    methods = sorted({m for a in advs.values() for m in a})
    signal_keys = {
        m: sorted({k for a in advs.values() if m in a for k, v in a[m]["signals"].items() if _number(v) is not None})
        for m in methods
    }
    scale = {m: max((abs(a[m]["value"]) for a in advs.values() if m in a), default=0.0) for m in methods}

    def signal_values(m: str, k: str) -> list[float]:
        return [v for a in advs.values() if m in a and (v := _number(a[m]["signals"].get(k))) is not None]

    sig_scale = {(m, k): max(map(abs, signal_values(m, k)), default=0.0) for m in methods for k in signal_keys[m]}
    for st in steps:
        a = advs.get(st["id"], {})
        st["credit"] = []
        for m in methods:
            x = a.get(m)
            st["credit"].append(
                {
                    "method": m,
                    "bar": _bar(x["value"] if x else None, scale[m]),
                    "signals": [
                        {"key": k, "bar": _bar(_number(x["signals"].get(k)) if x else None, sig_scale[(m, k)])}
                        for k in signal_keys[m]
                    ],
                }
            )
    ep["prev_id"], ep["next_id"] = neighbours(s, e.run_id, episode_id)
    group_size = s.scalar(select(func.count()).where(EpisodeRow.run_id == e.run_id, EpisodeRow.group_id == e.group_id))
    return {"episode": ep, "steps": steps, "methods": methods, "signal_keys": signal_keys, "group_size": group_size}


# -- groups ----------------------------------------------------------------------------------
def get_group(s: Session, run_id: int, group_id: str) -> dict[str, Any] | None:
    """A group's episodes side by side: every step with its anchor's step group (anchors shared
    by more than one step of the group, labelled S1, S2, ... in order of first appearance) and
    its stored advantage (gigpo's where stored, else each stored method's)."""
    eps = s.execute(
        select(*EPISODE_COLUMNS)
        .where(EpisodeRow.run_id == run_id, EpisodeRow.group_id == group_id)
        .order_by(EpisodeRow.id)
        .limit(GROUP_MAX_EPISODES + 1)
    ).all()
    if not eps:
        return None
    truncated = len(eps) > GROUP_MAX_EPISODES
    episodes = [_episode_row(r) for r in eps[:GROUP_MAX_EPISODES]]
    ids = [e["id"] for e in episodes]
    by_ep: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    step_cols = (StepRow.id, StepRow.episode_id, StepRow.t, StepRow.action, StepRow.observation, StepRow.reward,
                 StepRow.valid, StepRow.anchor)  # fmt: skip
    for row in s.execute(select(*step_cols).where(StepRow.episode_id.in_(ids)).order_by(StepRow.t, StepRow.episode_id)):
        r = row._mapping  # not row.t: a Row's `.t` is its tuple
        by_ep[r["episode_id"]].append(
            {k: r[k] for k in ("id", "t", "action", "observation", "reward", "valid", "anchor")}
        )
    stored = set(
        s.scalars(
            select(AdvantageRow.method)
            .join(StepRow, StepRow.id == AdvantageRow.step_id)
            .where(StepRow.episode_id.in_(ids))
            .distinct()
        )
    )
    methods = ["gigpo"] if "gigpo" in stored else sorted(stored)
    advs = _advantages(s, ids, "gigpo" if methods == ["gigpo"] else None)
    # step groups: anchors shared by more than one step of the group
    counts: dict[str, int] = {}
    order: list[str] = []
    for st in sorted((st for sts in by_ep.values() for st in sts), key=lambda st: (st["t"], st["id"])):
        a = st["anchor"]
        if not a:
            continue
        if a not in counts:
            order.append(a)
        counts[a] = counts.get(a, 0) + 1
    label = {}
    for a in order:
        if counts[a] > 1:
            label[a] = len(label)
    groups: list[dict[str, Any]] = [
        {"index": i, "label": f"S{i + 1}", "anchor": a, "size": counts[a], "episodes": set(), "values": {}}
        for a, i in label.items()
    ]
    scale = max((abs(v["value"]) for a in advs.values() for v in a.values()), default=0.0)
    for e in episodes:
        for st in by_ep[e["id"]]:
            k = label.get(st["anchor"])
            st["group"] = k
            a = advs.get(st["id"], {})
            st["credit"] = [{"method": m, "bar": _bar(a[m]["value"] if m in a else None, scale)} for m in methods]
            if k is not None:
                g = groups[k]
                g["episodes"].add(e["id"])
                for c in st["credit"]:
                    if c["bar"] is not None:
                        g["values"].setdefault(c["method"], []).append(c["bar"]["value"])
        e["steps"] = by_ep[e["id"]]
    for g in groups:
        g["episodes"] = len(g["episodes"])
        g["mean"] = {m: sum(v) / len(v) for m, v in g["values"].items()}
    max_t = max((len(e["steps"]) for e in episodes), default=0)
    won = sum(e["won"] for e in episodes)
    recurring = sum(g["size"] for g in groups)
    total_steps = sum(len(e["steps"]) for e in episodes)
    return {
        "run_id": run_id,
        "group_id": group_id,
        "episodes": episodes,
        "truncated": truncated,
        "methods": methods,
        "step_groups": groups,
        "rows": max_t,
        "rate": rate(won, len(episodes)),
        "steps": total_steps,
        "recurring_frac": recurring / total_steps if total_steps else None,
    }
