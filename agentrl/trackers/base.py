"""The tracker protocol and what the trackers share: the missing-extra error, metric and param
flattening, the transcripts table, and the run folder's `trackers.json`.

A tracker is built once per training run (its library imported then, so a missing extra is a
UserError before any work), started once the run has its id, fed every stored iteration, and
finished in the trainer's `finally` path.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import secrets
import sys
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from agentrl.errors import UserError

TRANSCRIPT_EPISODES = 4  # episodes per iteration shown in the transcripts table
TRANSCRIPT_CHARS = 4000  # one episode's transcript, at most
OBSERVATION_CHARS = 600  # one observation in a transcript, at most
TABLE_COLUMNS = ["iteration", "split", "episode_id", "task_id", "won", "return", "length", "transcript"]


@runtime_checkable
class Tracker(Protocol):
    name: str  # the `train.report_to` name
    has_tables: bool  # whether `log_table` does anything

    def start(self, run_id: int, run_name: str, config: dict, key: str, resume_step: int | None = None) -> None:
        """Open (or, with `resume_step`, reopen) the tracker's run. `run_name` is `<name>-<id>` (the run
        folder's name), `config` the resolved recipe, `key` the run's key in the trackers (`RunState`);
        `resume_step`: the run is resumed and the iterations from this one on are logged again."""
        ...

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """One iteration's scalars (finite floats, '/'-separated names); step = the iteration index."""
        ...

    def log_table(self, step: int, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        """A table at `step` (a no-op where the tracker has none)."""
        ...

    def finish(self, status: str = "finished") -> None:
        """Flush and close; status: finished | failed | interrupted."""
        ...


def one_line(err: BaseException | str, limit: int = 300) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _installed(module: str) -> bool:
    top = module.split(".")[0]
    if top in sys.modules and sys.modules[top] is None:  # blocked (tests simulate a missing library so)
        return False
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def import_library(report_name: str, module: str, extra: str | None = None):
    """`module`, imported; a missing library is a one-line UserError naming the extra to install."""
    extra = extra or report_name
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if _installed(module):
            raise UserError(f"train.report_to: {report_name} is installed but fails to import: {one_line(e)}") from None
        raise UserError(
            f"train.report_to: {report_name} needs the {extra} extra: pip install 'agentrl[{extra}]'"
        ) from None


def flatten(data: dict, sep: str = "/", prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level, keys joined by `sep`."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, sep, key))
        else:
            out[key] = v
    return out


def _finite(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    return None


def iteration_scalars(metrics: dict, wall: dict) -> dict[str, float]:
    """An iteration as the trackers get it: the stored metrics as they are, the wall times as
    `time/<phase>`; nested dicts flattened with '/', only finite numbers."""
    out = {}
    for k, v in [*flatten(metrics).items(), *flatten(wall, prefix="time").items()]:
        f = _finite(v)
        if f is not None:
            out[k] = f
    return out


def flat_params(config: dict, max_value: int) -> dict[str, str]:
    """The recipe as flat string params (MLflow's): dotted keys, lists as JSON, values cut to `max_value`."""
    out = {}
    for k, v in flatten(config, sep=".").items():
        text = v if isinstance(v, str) else json.dumps(v)
        out[k] = text if len(text) <= max_value else text[: max_value - 1] + "…"
    return out


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def transcript(rec) -> str:
    """One episode as text: every turn's observation, then `→ action` (and its reward when not 0)."""
    parts = []
    for s in rec.steps:
        reward = f"  (reward {s.reward:g})" if s.reward else ""
        invalid = "  [invalid]" if not s.valid else ""
        parts.append(f"[{s.t}] {_cut(s.observation.strip(), OBSERVATION_CHARS)}\n→ {s.action}{reward}{invalid}")
    if rec.final_observation:
        parts.append(f"[end] {_cut(rec.final_observation.strip(), OBSERVATION_CHARS)}")
    return _cut("\n".join(parts), TRANSCRIPT_CHARS)


def transcript_rows(store, run_id: int, iteration: int) -> list[list[Any]]:
    """The first episodes of an iteration (train; eval for iteration 0, the before-training eval)
    as rows of TABLE_COLUMNS."""
    from agentrl.store import queries as q

    split = "eval" if iteration == 0 else "train"
    recs = next(q.iter_episodes(store, run_id, iteration=iteration, split=split, with_steps=True, page=4), [])
    return [
        [iteration, r.split, r.id, r.task_id, bool(r.won), float(r.ret), len(r.steps), transcript(r)]
        for r in recs[:TRANSCRIPT_EPISODES]
    ]


class RunState:
    """`<run folder>/trackers.json`: the key that names this agentrl run in the trackers (so a
    resumed run reopens its own tracker runs, and run 1 of another runs.db is another run)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "trackers.json"

    def key(self, run_id: int, resume: bool) -> str:
        """The stored key when resuming (and one is stored), else a new one, stored. Called once per
        start, by `Trackers.start`, for all the run's trackers."""
        if resume:
            try:
                key = json.loads(self.path.read_text(encoding="utf-8")).get("key")
                if isinstance(key, str) and key:
                    return key
            except (OSError, ValueError):
                pass
        key = f"{run_id}-{secrets.token_hex(4)}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"key": key}) + "\n", encoding="utf-8")
        return key
