"""Trackio (`train.report_to: [trackio]`, the `trackio` extra), in its local mode: a SQLite store in
trackio's own folder, $TRACKIO_DIR (default `$HF_HOME/trackio`; trackio reads it once, when imported),
project `agentrl`, run `<name>-<id>`; `trackio show --project agentrl` is the dashboard. With
TRACKIO_SPACE_ID / TRACKIO_SERVER_URL set, trackio sends there instead (its choice, not agentrl's).
`--resume` reopens the run of that name (resume="allow"; trackio picks the latest run so named) and logs
only the iterations after its last step. In local mode trackio's own messages (printed on stdout, which
is agentrl's output) are replaced by one line on stderr saying where the run is; remote, they go to stderr."""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any

from agentrl.quiet import debug
from agentrl.trackers.base import import_library

PROJECT = "agentrl"


class TrackioTracker:
    name = "trackio"
    has_tables = True

    def __init__(self, output_dir: str | Path):
        self.trackio = import_library(self.name, "trackio")
        self.has_tables = hasattr(self.trackio, "Table")  # older trackio versions have no tables
        self.run = None
        self.skip_below = 0
        self.local = not (os.environ.get("TRACKIO_SPACE_ID") or os.environ.get("TRACKIO_SERVER_URL"))
        self._null = None

    def _quiet(self):
        if self.local and not debug():
            if self._null is None:
                self._null = open(os.devnull, "w")  # closed by finish
            return contextlib.redirect_stdout(self._null)
        return contextlib.redirect_stdout(sys.stderr)

    def start(self, run_id: int, run_name: str, config: dict, key: str, resume_step: int | None = None) -> None:
        kwargs = {"resume": "allow" if resume_step is not None else "never", "embed": False}
        accepted = inspect.signature(self.trackio.init).parameters  # older trackio lacks some of them
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        with self._quiet():
            self.run = self.trackio.init(
                project=PROJECT, name=run_name, config={**config, "agentrl_key": key}, **kwargs
            )
        self.skip_below = int(getattr(self.run, "_next_step", 0) or 0) if resume_step is not None else 0
        if self.local and not debug():
            from trackio.utils import TRACKIO_DIR

            print(
                f"trackio: run {run_name} of project {PROJECT} in {TRACKIO_DIR} (trackio show --project {PROJECT})",
                file=sys.stderr,
            )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if step >= self.skip_below:
            with self._quiet():
                self.run.log(dict(metrics), step=step)

    def log_table(self, step: int, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        if step >= self.skip_below:
            with self._quiet():
                self.run.log({name: self.trackio.Table(columns=list(columns), data=[list(r) for r in rows])}, step=step)

    def finish(self, status: str = "finished") -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        try:
            with self._quiet():
                run.finish()
        finally:
            if self._null is not None:
                self._null.close()
                self._null = None
        try:  # else trackio's exit hook finishes it a second time
            from trackio import context_vars

            if context_vars.current_run.get() is run:
                context_vars.current_run.set(None)
        except (ImportError, AttributeError):
            pass
