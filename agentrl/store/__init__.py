"""Trajectory store: SQLite via SQLAlchemy (ARCHITECTURE.md §4)."""

from agentrl.store.db import DEFAULT_DB, Store, default_db_path, open_store
from agentrl.store.records import EpisodeRecord, StepRecord

__all__ = ["DEFAULT_DB", "EpisodeRecord", "StepRecord", "Store", "default_db_path", "open_store"]
