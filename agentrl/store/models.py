"""SQLAlchemy models: the tables of ARCHITECTURE.md §4 (table names are public).

Token ids and log-probs are stored as little-endian int32 / float32 blobs; only the
store layer encodes and decodes them (see `codec.py`).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA_VERSION = 1


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16), default="eval")  # train | eval
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    recipe: Mapped[str] = mapped_column(Text)  # the resolved recipe, YAML
    status: Mapped[str] = mapped_column(String(16), default="running")  # running|finished|failed|interrupted
    version: Mapped[str] = mapped_column(String(100), default="")  # agentrl version + git commit
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)  # writer process, to spot dead runs
    host: Mapped[str] = mapped_column(String(200), default="")
    parent_run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # eval of a train run's checkpoint


class Iteration(Base):
    __tablename__ = "iterations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    wall: Mapped[dict] = mapped_column(JSON, default=dict)  # seconds per phase
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    __table_args__ = (Index("ix_iterations_run_index", "run_id", "index", unique=True),)


class EpisodeRow(Base):
    __tablename__ = "episodes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    iteration: Mapped[int] = mapped_column(Integer, default=0)
    split: Mapped[str] = mapped_column(String(8))  # train | eval
    task_id: Mapped[str] = mapped_column(String(300))
    group_id: Mapped[str] = mapped_column(String(300))
    env: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    policy: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16))  # ok | error | truncated
    won: Mapped[bool] = mapped_column(Boolean, default=False)
    ret: Mapped[float] = mapped_column("return", Float, default=0.0)
    length: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    final_observation: Mapped[str] = mapped_column(Text, default="")
    goal: Mapped[str] = mapped_column(Text, default="")
    info: Mapped[dict] = mapped_column(JSON, default=dict)  # e.g. walkthrough, signals
    wall_s: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    steps: Mapped[list[StepRow]] = relationship(
        back_populates="episode", order_by="StepRow.t", cascade="all, delete-orphan"
    )
    __table_args__ = (Index("ix_episodes_run_iter", "run_id", "iteration", "split"),)


class StepRow(Base):
    __tablename__ = "steps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("episodes.id"), index=True)
    t: Mapped[int] = mapped_column(Integer)
    observation: Mapped[str] = mapped_column(Text)  # what the agent saw before acting
    admissible: Mapped[list | None] = mapped_column(JSON, nullable=True)
    prompt_ids: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    action: Mapped[str] = mapped_column(Text)  # the command sent to the env
    raw: Mapped[str] = mapped_column(Text, default="")  # raw generated text
    action_ids: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    logprobs: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    reward: Mapped[float] = mapped_column(Float, default=0.0)
    terminated: Mapped[bool] = mapped_column(Boolean, default=False)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    valid: Mapped[bool] = mapped_column(Boolean, default=True)
    anchor: Mapped[str] = mapped_column(Text, default="")
    info: Mapped[dict] = mapped_column(JSON, default=dict)  # e.g. dropped_turns, signals
    episode: Mapped[EpisodeRow] = relationship(back_populates="steps")


class AdvantageRow(Base):
    __tablename__ = "advantages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id"), index=True)
    method: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    signals: Mapped[dict] = mapped_column(JSON, default=dict)


class CheckpointRow(Base):
    __tablename__ = "checkpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    iteration: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)
