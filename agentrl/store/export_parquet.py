"""`agentrl export RUN --format parquet -o FILE.parquet`: one row per step, for the data ecosystem.

Parquet (pyarrow; the `parquet` extra: `pip install 'agentrl[parquet]'`), read by
`pandas.read_parquet`, `datasets.load_dataset("parquet", data_files=...)`, polars, DuckDB, Spark.
One row per stored step, ordered by episode id and then `t`; the run's and the episode's fields are
repeated on every row of the episode (an episode that ended before its first step has no row):

    column            type              what
    run_id            int64             the run
    run_name          string
    episode_id        int64             the episode (`agentrl inspect --episode ID`)
    iteration         int64             training iteration (evals: the iteration they followed)
    split             string            train | eval
    task_id           string
    group_id          string            episodes of one group share the initial state
    env               string            the adapter
    seed              int64 (null)      the env seed
    policy            string            llm:<model>[+adapter] | random | expert
    status            string            ok | truncated | error
    won               bool
    episode_return    float64           the episode's return
    length            int64             the episode's number of steps
    t                 int64             the turn, from 0
    observation       string            what the agent read before acting
    admissible        list<string>      the valid commands (null when the env gives none)
    prompt_ids        list<int32>       the prompt token ids (null for scripted policies)
    raw               string            the decoded generation
    action            string            the command sent to the env
    action_ids        list<int32>       the generated token ids
    logprobs          list<float32>     their log-probs under the sampling distribution
    reward            float64
    terminated        bool
    truncated         bool
    valid             bool              False: the env could not apply the action
    anchor            string            the state key (GiGPO)
    adv_<method>      float64 (null)    the step's advantage of each credit method stored in the
                                        run (training steps; null where absent, e.g. eval steps)
    sig_<method>_<name> float64 (null)  the learned signals that method used (e.g. sig_spa_progress)
    info              string            the step's info as JSON (dropped_turns, env_reward, ...)

The `adv_`/`sig_` columns are those of the selected episodes when the export starts (read
before the first row is written). The file's key-value metadata `agentrl.run` holds the run
header of the jsonl export (recipe, iteration metrics, checkpoints) as JSON. Rows are written in
row groups of about `rows_per_group` steps, episode by episode, so a large run is never held in
memory; the file appears under its name only once complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select, true

from agentrl.errors import UserError, WorkError
from agentrl.store.db import Store
from agentrl.store.models import AdvantageRow, EpisodeRow, Run, StepRow
from agentrl.store.queries import advantages_for_steps, episode_filter, episode_id_pages

EXTRA_HINT = "the parquet format needs pyarrow: pip install 'agentrl[parquet]'"
_FLUSH_BYTES = 64 << 20  # also end a row group when its blobs and texts pass this


def require_pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(EXTRA_HINT) from None
    return pa, pq


def credit_columns(
    store: Store, run_id: int, iteration: int | None = None, split: str | None = None, won: bool | None = None
) -> tuple[list[str], list[tuple[str, str]]]:
    """(credit methods, (method, signal name) pairs) stored for the selected episodes, sorted."""
    sig = func.json_each(AdvantageRow.signals).table_valued("key", "type")
    q = (
        select(AdvantageRow.method, sig.c.key, sig.c.type)
        .select_from(AdvantageRow)
        .join(StepRow, StepRow.id == AdvantageRow.step_id)
        .join(EpisodeRow, EpisodeRow.id == StepRow.episode_id)
        .outerjoin(sig, true())
        .where(*episode_filter(run_id, iteration, split, won))
        .distinct()
    )
    methods: set[str] = set()
    signals: set[tuple[str, str]] = set()
    with store.session() as s:
        for method, key, kind in s.execute(q):
            methods.add(method)
            if isinstance(key, str) and kind in ("integer", "real", "true", "false", "null"):
                signals.add((method, key))
    return sorted(methods), sorted(signals)


def _column_names(methods: list[str], signals: list[tuple[str, str]]) -> tuple[dict, dict]:
    taken = set(BASE_COLUMNS)
    adv, sig = {}, {}

    def name(base: str) -> str:
        n, k = base, 2
        while n in taken:  # e.g. method "a_b" signal "c" vs method "a" signal "b_c"
            n, k = f"{base}_{k}", k + 1
        taken.add(n)
        return n

    for m in methods:
        adv[m] = name(f"adv_{m}")
    for m, key in signals:
        sig[(m, key)] = name(f"sig_{m}_{key}")
    return adv, sig


BASE_COLUMNS = [
    "run_id",
    "run_name",
    "episode_id",
    "iteration",
    "split",
    "task_id",
    "group_id",
    "env",
    "seed",
    "policy",
    "status",
    "won",
    "episode_return",
    "length",
    "t",
    "observation",
    "admissible",
    "prompt_ids",
    "raw",
    "action",
    "action_ids",
    "logprobs",
    "reward",
    "terminated",
    "truncated",
    "valid",
    "anchor",
]


def parquet_schema(pa, adv_cols: dict, sig_cols: dict, metadata: dict[str, str] | None = None):
    types = {
        "run_id": pa.int64(),
        "run_name": pa.string(),
        "episode_id": pa.int64(),
        "iteration": pa.int64(),
        "split": pa.string(),
        "task_id": pa.string(),
        "group_id": pa.string(),
        "env": pa.string(),
        "seed": pa.int64(),
        "policy": pa.string(),
        "status": pa.string(),
        "won": pa.bool_(),
        "episode_return": pa.float64(),
        "length": pa.int64(),
        "t": pa.int64(),
        "observation": pa.string(),
        "admissible": pa.list_(pa.string()),
        "prompt_ids": pa.list_(pa.int32()),
        "raw": pa.string(),
        "action": pa.string(),
        "action_ids": pa.list_(pa.int32()),
        "logprobs": pa.list_(pa.float32()),
        "reward": pa.float64(),
        "terminated": pa.bool_(),
        "truncated": pa.bool_(),
        "valid": pa.bool_(),
        "anchor": pa.string(),
    }
    fields = [pa.field(n, types[n]) for n in BASE_COLUMNS]
    fields += [pa.field(c, pa.float64()) for c in adv_cols.values()]
    fields += [pa.field(c, pa.float64()) for c in sig_cols.values()]
    fields.append(pa.field("info", pa.string()))
    return pa.schema(fields, metadata=metadata)


def _num(v: Any) -> float | None:
    """A signal's value as a float (booleans as 0/1); None for anything else."""
    return float(v) if isinstance(v, (int, float)) else None


_BLOBS = {"prompt_ids": ("<i4", np.int32), "action_ids": ("<i4", np.int32), "logprobs": ("<f4", np.float32)}


class _Batch:
    """Columns of the rows of one row group."""

    def __init__(self, schema, adv_cols: dict, sig_cols: dict):
        self.schema, self.adv_cols, self.sig_cols = schema, adv_cols, sig_cols
        self.clear()

    def clear(self) -> None:
        self.cols: dict[str, list] = {f.name: [] for f in self.schema}
        self.rows = 0
        self.bytes = 0

    def add(self, row: dict[str, Any], advs: list[dict[str, Any]]) -> None:
        for k, v in row.items():
            self.cols[k].append(v)
        by_adv = {c: None for c in self.adv_cols.values()}
        by_sig = {c: None for c in self.sig_cols.values()}
        for a in advs:
            col = self.adv_cols.get(a["method"])
            if col is not None:
                by_adv[col] = float(a["value"])
            for key, v in a["signals"].items() if isinstance(a["signals"], dict) else ():
                col = self.sig_cols.get((a["method"], key))
                if col is not None:
                    by_sig[col] = _num(v)
        for c, v in (*by_adv.items(), *by_sig.items()):
            self.cols[c].append(v)
        self.rows += 1
        self.bytes += sum(len(row[k] or b"") for k in _BLOBS) + len(row["observation"]) + len(row["info"])

    def record_batch(self, pa):
        arrays = []
        for f in self.schema:
            vals = self.cols[f.name]
            if f.name in _BLOBS:
                arrays.append(_list_array(pa, vals, *_BLOBS[f.name], f.type))
            else:
                arrays.append(pa.array(vals, type=f.type))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def _list_array(pa, blobs: list[bytes | None], wire: str, native, typ):
    """A list array straight from the store's little-endian blobs (no Python ints)."""
    lengths = np.fromiter((0 if b is None else len(b) // 4 for b in blobs), dtype=np.int64, count=len(blobs))
    offsets = np.zeros(len(blobs) + 1, dtype=np.int32)  # a row group holds far fewer than 2**31 ids
    np.cumsum(lengths, out=offsets[1:])
    values = np.frombuffer(b"".join(b for b in blobs if b), dtype=wire).astype(native, copy=False)
    mask = pa.array([b is None for b in blobs], type=pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=typ.value_type), type=typ, mask=mask)


def export_parquet(
    store: Store,
    run: Run,
    path: str | os.PathLike,
    iteration: int | None = None,
    split: str | None = None,
    won: bool | None = None,
    rows_per_group: int = 4096,
    page: int = 64,
) -> tuple[int, int]:
    """Write the selected episodes of `run` to `path`, one row per step; returns (episodes, rows)."""
    pa, pq = require_pyarrow()
    from agentrl.store.export import run_header

    path = Path(path)
    methods, signals = credit_columns(store, run.id, iteration, split, won)
    adv_cols, sig_cols = _column_names(methods, signals)
    meta = {"agentrl.run": json.dumps(run_header(store, run), default=str), "agentrl.schema": "1"}
    schema = parquet_schema(pa, adv_cols, sig_cols, meta)
    batch = _Batch(schema, adv_cols, sig_cols)
    tmp = path.with_name(f".{path.name}.part")
    n_eps = n_rows = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for ids in episode_id_pages(store, run.id, iteration, split, won, page):
                eps, steps = _page(store, ids)
                advs = advantages_for_steps(store, [st[0] for st in steps])
                n_eps += len(eps)
                for st in steps:
                    ep = eps[st[1]]
                    row = {
                        "run_id": run.id,
                        "run_name": run.name,
                        "episode_id": ep[0],
                        "iteration": ep[1],
                        "split": ep[2],
                        "task_id": ep[3],
                        "group_id": ep[4],
                        "env": ep[5],
                        "seed": ep[6],
                        "policy": ep[7],
                        "status": ep[8],
                        "won": bool(ep[9]),
                        "episode_return": ep[10],
                        "length": ep[11],
                        "t": st[2],
                        "observation": st[3],
                        "admissible": st[4],
                        "prompt_ids": st[5],
                        "raw": st[6],
                        "action": st[7],
                        "action_ids": st[8],
                        "logprobs": st[9],
                        "reward": st[10],
                        "terminated": bool(st[11]),
                        "truncated": bool(st[12]),
                        "valid": bool(st[13]),
                        "anchor": st[14],
                        "info": json.dumps(st[15] if st[15] is not None else {}, default=str),
                    }
                    batch.add(row, advs.get(st[0], []))
                    if batch.rows >= rows_per_group or batch.bytes >= _FLUSH_BYTES:
                        writer.write_batch(batch.record_batch(pa))
                        n_rows += batch.rows
                        batch.clear()
            if batch.rows:
                writer.write_batch(batch.record_batch(pa))
                n_rows += batch.rows
        os.replace(tmp, path)
    except OSError as e:  # the folder was checked before: a full disk, a vanished folder
        tmp.unlink(missing_ok=True)
        raise WorkError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n_eps, n_rows


def _page(store: Store, ids: list[int]) -> tuple[dict[int, tuple], list[tuple]]:
    """The episodes (id -> fields) and their steps (ordered by episode, t) of one page of ids."""
    with store.session() as s:
        eps = {
            r[0]: tuple(r)
            for r in s.execute(
                select(
                    EpisodeRow.id,
                    EpisodeRow.iteration,
                    EpisodeRow.split,
                    EpisodeRow.task_id,
                    EpisodeRow.group_id,
                    EpisodeRow.env,
                    EpisodeRow.seed,
                    EpisodeRow.policy,
                    EpisodeRow.status,
                    EpisodeRow.won,
                    EpisodeRow.ret,
                    EpisodeRow.length,
                ).where(EpisodeRow.id.in_(ids))
            )
        }
        steps = [
            tuple(r)
            for r in s.execute(
                select(
                    StepRow.id,
                    StepRow.episode_id,
                    StepRow.t,
                    StepRow.observation,
                    StepRow.admissible,
                    StepRow.prompt_ids,
                    StepRow.raw,
                    StepRow.action,
                    StepRow.action_ids,
                    StepRow.logprobs,
                    StepRow.reward,
                    StepRow.terminated,
                    StepRow.truncated,
                    StepRow.valid,
                    StepRow.anchor,
                    StepRow.info,
                )
                .where(StepRow.episode_id.in_(ids))
                .order_by(StepRow.episode_id, StepRow.t)
            )
        ]
    return eps, steps
