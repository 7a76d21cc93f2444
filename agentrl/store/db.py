"""Opening the database and writing to it.

SQLite in WAL mode with a busy timeout, so `inspect` can read while a run writes.
One transaction per finished episode: a crash loses at most the episodes in flight.

Commands that only read (`runs`, `inspect`, `export`, `replay` without --policy, `plot`) open
the database read-only (`readonly=True`): SQLite's `mode=ro`, so they work on a database they
may not write; and in a folder where SQLite cannot create the WAL index (`-shm`) either, as
`immutable=1` (nothing can be writing to a database in a read-only folder).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import create_engine, delete, event, insert, select, update
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

import agentrl
from agentrl.errors import UserError, WorkError
from agentrl.store.codec import encode_floats, encode_ids
from agentrl.store.models import (
    SCHEMA_VERSION,
    AdvantageRow,
    Base,
    CheckpointRow,
    EpisodeRow,
    Iteration,
    Meta,
    Run,
    StepRow,
)
from agentrl.store.records import EpisodeRecord

DEFAULT_DB = "runs.db"


def default_db_path() -> str:
    return os.environ.get("AGENTRL_DB", DEFAULT_DB)


def _version_string() -> str:
    try:
        root = Path(agentrl.__file__).resolve().parent.parent
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except Exception:
        commit = ""
    return f"agentrl {agentrl.__version__}" + (f" ({commit})" if commit else "")


def _set_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout = 30000")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.close()


def _connect_readonly(path: Path):
    """A read-only sqlite3 connection: `mode=ro`; where that cannot open the database because
    its folder does not let SQLite create the WAL files, `immutable=1`."""
    uri = path.resolve().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30, check_same_thread=False)
    try:
        conn.execute("PRAGMA schema_version").fetchone()  # opening is lazy: this reads the file (and WAL)
        return conn
    except sqlite3.OperationalError as e:
        conn.close()
        if "unable to open" not in str(e) or os.access(path.resolve().parent, os.W_OK):
            raise
    return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=30, check_same_thread=False)


class Store:
    """A handle on one runs database. `readonly=True` opens an existing one read-only (no writes
    are possible through it; nothing is created)."""

    def __init__(self, path: str | Path, create: bool = True, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        create = create and not readonly
        if not create and not self.path.exists():
            raise UserError(f"no database at {self.path} (run `agentrl eval` or `agentrl train` first, or pass --db)")
        if self.path.exists() and self.path.is_dir():
            raise UserError(f"{self.path} is a directory, not a database file")
        parent = self.path.resolve().parent
        if not parent.exists():
            raise UserError(f"cannot create database {self.path}: directory {parent} does not exist")
        if create and not self.path.exists() and not os.access(parent, os.W_OK):
            raise UserError(f"cannot create database {self.path}: directory {parent} is not writable")
        if readonly:
            self.engine = create_engine("sqlite://", creator=lambda: _connect_readonly(self.path))
        else:
            self.engine = create_engine(f"sqlite:///{self.path}", connect_args={"timeout": 30})
        event.listen(self.engine, "connect", _set_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._check_and_init(create)

    # -- setup ---------------------------------------------------------------------------
    def _check_and_init(self, create: bool) -> None:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA schema_version").fetchone()  # fails on non-SQLite files
                mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
                if mode != "wal" and not self.readonly:
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")}
                if "meta" in names:
                    row = conn.exec_driver_sql("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                    version = int(row[0]) if row else None
                    if version is None:
                        raise UserError(f"{self.path}: not an agentrl database (no schema version)")
                    if version > SCHEMA_VERSION:
                        raise UserError(
                            f"{self.path}: database schema v{version} is newer than this agentrl "
                            f"(v{SCHEMA_VERSION}); upgrade agentrl to read it"
                        )
                    if version < SCHEMA_VERSION:
                        raise UserError(f"{self.path}: database schema v{version} is older than v{SCHEMA_VERSION}")
                    return
                if names - {"meta"}:
                    raise UserError(
                        f"{self.path}: not an agentrl database (unknown tables: {', '.join(sorted(names))})"
                    )
            if not create:
                raise UserError(f"{self.path}: empty database")
            Base.metadata.create_all(self.engine)
            with self.session() as s:
                s.merge(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
        except UserError:
            self.engine.dispose()
            raise
        except (DatabaseError, OperationalError, sqlite3.DatabaseError) as e:
            self.engine.dispose()
            msg = str(getattr(e, "orig", e))
            if "not a database" in msg or "malformed" in msg:
                raise UserError(f"{self.path}: not an SQLite database ({msg})") from None
            if self.readonly and "unable to open" in msg:
                raise UserError(
                    f"{self.path}: cannot open the database for reading ({msg}); "
                    f"check permissions of the file and its directory"
                ) from None
            if "readonly" in msg or "unable to open" in msg or "read-only" in msg:
                raise UserError(
                    f"{self.path}: cannot open the database for writing ({msg}); "
                    f"check permissions of the file and its directory"
                ) from None
            raise UserError(f"{self.path}: cannot open database ({msg})") from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        s = self._sessions()
        try:
            yield s
            s.commit()
        except (OperationalError, DatabaseError) as e:
            s.rollback()
            raise WorkError(f"database error on {self.path}: {getattr(e, 'orig', e)}") from None
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def close(self) -> None:
        self.engine.dispose()

    # -- runs ----------------------------------------------------------------------------
    def create_run(self, name: str, recipe_yaml: str, kind: str, parent_run_id: int | None = None) -> int:
        with self.session() as s:
            run = Run(
                name=name,
                kind=kind,
                recipe=recipe_yaml,
                status="running",
                version=_version_string(),
                pid=os.getpid(),
                host=socket.gethostname(),
                parent_run_id=parent_run_id,
            )
            s.add(run)
            s.flush()
            return run.id

    def set_run_status(self, run_id: int, status: str) -> None:
        with self.session() as s:
            values = {"status": status}
            if status != "running":
                values["finished_at"] = datetime.now(timezone.utc)
            else:
                values.update(pid=os.getpid(), host=socket.gethostname(), finished_at=None)
            s.execute(update(Run).where(Run.id == run_id).values(**values))

    # -- episodes ------------------------------------------------------------------------
    def write_episode(self, rec: EpisodeRecord, run_id: int) -> int:
        """Write one finished episode and all its steps in a single transaction.

        Core inserts (not ORM objects): the unit-of-work bookkeeping cost about 2x in write time.
        """
        with self.session() as s:
            conn = s.connection()
            eid = conn.execute(
                insert(EpisodeRow).returning(EpisodeRow.id),
                dict(
                    run_id=run_id,
                    iteration=rec.iteration,
                    split=rec.split,
                    task_id=rec.task_id,
                    group_id=rec.group_id,
                    env=rec.env,
                    seed=rec.seed,
                    policy=rec.policy,
                    status=rec.status,
                    won=rec.won,
                    length=len(rec.steps),
                    error=rec.error,
                    final_observation=rec.final_observation,
                    goal=rec.goal,
                    info=rec.info,
                    wall_s=rec.wall_s,
                    **{"return": rec.ret},  # column "return"
                ),
            ).scalar_one()
            step_ids: list[int] = []
            if rec.steps:
                step_ids = (
                    conn.execute(
                        insert(StepRow).returning(StepRow.id, sort_by_parameter_order=True),
                        [
                            dict(
                                episode_id=eid,
                                t=st.t,
                                observation=st.observation,
                                admissible=st.admissible,
                                prompt_ids=encode_ids(st.prompt_ids),
                                action=st.action,
                                raw=st.raw,
                                action_ids=encode_ids(st.action_ids),
                                logprobs=encode_floats(st.logprobs),
                                reward=st.reward,
                                terminated=st.terminated,
                                truncated=st.truncated,
                                valid=st.valid,
                                anchor=st.anchor,
                                info=st.info,
                            )
                            for st in rec.steps
                        ],
                    )
                    .scalars()
                    .all()
                )
        rec.id = eid
        for st, sid in zip(rec.steps, step_ids):
            st.id = sid
        return eid

    def write_advantages(self, method: str, rows: list[tuple[int, float, dict]]) -> None:
        """rows: (step id, advantage, signals) - one transaction; replaces earlier values of `method`."""
        with self.session() as s:
            ids = [r[0] for r in rows]
            for i in range(0, len(ids), 500):
                s.execute(
                    delete(AdvantageRow).where(
                        AdvantageRow.method == method, AdvantageRow.step_id.in_(ids[i : i + 500])
                    )
                )
            s.add_all(AdvantageRow(step_id=sid, method=method, value=float(v), signals=sig) for sid, v, sig in rows)

    def add_iteration(self, run_id: int, index: int, metrics: dict, wall: dict) -> None:
        with self.session() as s:
            existing = s.scalar(select(Iteration).where(Iteration.run_id == run_id, Iteration.index == index))
            if existing is None:
                s.add(Iteration(run_id=run_id, index=index, metrics=metrics, wall=wall))
            else:
                existing.metrics, existing.wall = metrics, wall

    def add_checkpoint(self, run_id: int, iteration: int, path: str, metrics: dict) -> None:
        """Record a checkpoint. Its path is stored relative to the database's folder when it
        lies inside it (so a moved folder of runs.db + runs/ still resolves), else absolute;
        never relative to the writer's working directory."""
        p = Path(path).resolve()
        home = self.path.resolve().parent
        stored = str(p.relative_to(home)) if p.is_relative_to(home) else str(p)
        with self.session() as s:
            s.add(CheckpointRow(run_id=run_id, iteration=iteration, path=stored, metrics=metrics))

    def resolve_path(self, stored: str) -> str:
        """A stored checkpoint path as a usable path: relative ones are relative to the database's
        folder (databases written before this rule stored paths relative to the trainer's working
        directory, which was the database's folder in the default set-up)."""
        p = Path(stored)
        return str(p if p.is_absolute() else self.path.resolve().parent / p)


def open_store(path: str | Path | None = None, create: bool = True, readonly: bool = False) -> Store:
    """The store at `path` (default: $AGENTRL_DB or ./runs.db). `readonly=True` for commands that
    only read: the database must exist and is opened read-only."""
    return Store(path or default_db_path(), create=create, readonly=readonly)
