"""Experiment trackers (`train.report_to`): TensorBoard, Weights & Biases, MLflow, Trackio.

Each gets the resolved recipe as its config (MLflow: flat dotted params), every stored iteration's
numeric metrics and wall times (`time/<phase>`) with step = the iteration index, and the first few
episodes of each iteration as a transcripts table (TensorBoard: markdown text). Their files go under
the run folder `<train.output_dir>/<name>-<id>/` unless the tracker's own environment says otherwise
(WANDB_DIR, MLFLOW_TRACKING_URI; Trackio always uses its own store, $TRACKIO_DIR). One file per tracker,
each importing its library only when the recipe names it (README "Experiment trackers").

A tracker that fails while logging is switched off with one warning (training goes on); one that
fails to start is a UserError before the first rollout.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from rich.console import Console

from agentrl.errors import AgentRLError, UserError
from agentrl.trackers.base import TABLE_COLUMNS, RunState, Tracker, iteration_scalars, one_line, transcript_rows

# report_to name -> "module:class" (imported only when named)
TRACKERS = {
    "tensorboard": "agentrl.trackers.tensorboard:TensorBoardTracker",
    "wandb": "agentrl.trackers.wandb:WandbTracker",
    "mlflow": "agentrl.trackers.mlflow:MlflowTracker",
    "trackio": "agentrl.trackers.trackio:TrackioTracker",
}
NAMES = tuple(TRACKERS)

__all__ = ["NAMES", "Tracker", "Trackers", "make_trackers"]


class Trackers:
    """The run's trackers as one: started together, fed each stored iteration, finished together."""

    def __init__(self, trackers: list[Tracker], output_dir: str | Path, console: Console | None = None):
        self.trackers = list(trackers)
        self.output_dir = Path(output_dir)
        self.console = console or Console(stderr=True)
        self.started: list[Tracker] = []

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def start(self, run_id: int, run_name: str, config: dict, resume_step: int | None = None) -> None:
        """Start every tracker; a failure finishes those started and is a UserError naming the tracker."""
        if not self.trackers:
            return
        key = RunState(self.output_dir / run_name).key(run_id, resume=resume_step is not None)
        for t in self.trackers:
            try:
                t.start(run_id, run_name, config, key, resume_step)
            except AgentRLError:
                self.finish("failed")
                raise
            except Exception as e:
                self.finish("failed")
                raise UserError(f"train.report_to: {t.name} could not start: {one_line(e)}") from e
            self.started.append(t)

    def log_iteration(self, store, run_id: int, iteration: int, metrics: dict, wall: dict) -> None:
        """One stored iteration: its scalars, and its first episodes as the `transcripts` table."""
        if not self.started:
            return
        scalars = iteration_scalars(metrics, wall)
        for t in list(self.started):
            self._call(t, t.log, iteration, scalars)
        if any(t.has_tables for t in self.started):
            try:
                rows = transcript_rows(store, run_id, iteration)
            except Exception as e:  # the store is read only for this; training goes on
                self.console.print(
                    f"warning: no transcripts table for iteration {iteration}: {one_line(e)}",
                    markup=False,
                    highlight=False,
                )
                return
            if rows:
                for t in list(self.started):
                    if t.has_tables:
                        self._call(t, t.log_table, iteration, "transcripts", TABLE_COLUMNS, rows)

    def finish(self, status: str = "finished") -> None:
        """Finish every started tracker; a failure here is a warning."""
        started, self.started = self.started, []
        for t in started:
            try:
                t.finish(status)
            except Exception as e:
                self._warn(t, "finishing", e)

    def _call(self, t: Tracker, fn, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:  # a tracker must not end the training run: warn once, switch it off
            self.started.remove(t)
            self._warn(t, "logging", e, off=True)
            try:
                t.finish("failed")
            except Exception:
                pass

    def _warn(self, t: Tracker, what: str, e: BaseException, off: bool = False) -> None:
        tail = "; it is off for the rest of this run" if off else ""
        self.console.print(
            f"warning: train.report_to: {t.name} failed {what} ({one_line(e)}){tail}", markup=False, highlight=False
        )


def make_trackers(
    names: list[str] | tuple[str, ...], output_dir: str | Path, console: Console | None = None
) -> Trackers:
    """The trackers `names` (train.report_to), their libraries imported now: a missing one is a
    one-line UserError naming the extra to install. `output_dir` is `train.output_dir`: each run's
    files go to `<output_dir>/<run name>/`, the run folder its checkpoints share."""
    built = []
    for name in names:
        if name not in TRACKERS:
            raise UserError(f"train.report_to: unknown tracker '{name}' (known: {', '.join(NAMES)})")
        module, _, cls = TRACKERS[name].partition(":")
        built.append(getattr(importlib.import_module(module), cls)(output_dir))
    return Trackers(built, output_dir, console)
