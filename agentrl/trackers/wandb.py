"""Weights & Biases (`train.report_to: [wandb]`, the `wandb` extra). wandb's own settings apply:
WANDB_MODE (offline: nothing leaves the machine; `wandb sync` uploads later), WANDB_PROJECT (default
`agentrl`), WANDB_ENTITY, WANDB_DIR (default: the run folder, so `<run folder>/wandb/`). The W&B run id
is `agentrl-<key>` (the run folder's trackers.json), opened with resume="allow": `--resume` continues the
same W&B run; online, iterations W&B already has (below its step) are not sent again. Console capture is
off unless WANDB_CONSOLE says otherwise (agentrl's progress bars are not worth keeping)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agentrl.trackers.base import import_library


class WandbTracker:
    name = "wandb"
    has_tables = True

    def __init__(self, output_dir: str | Path):
        self.wandb = import_library(self.name, "wandb")
        self.output_dir = Path(output_dir)
        self.run = None
        self.skip_below = 0

    def start(self, run_id: int, run_name: str, config: dict, key: str, resume_step: int | None = None) -> None:
        wandb = self.wandb
        # read from the environment now, passed explicitly: wandb reads it once per process (wandb.setup)
        where = Path(os.environ.get("WANDB_DIR") or self.output_dir / run_name)
        where.mkdir(parents=True, exist_ok=True)
        settings = {} if os.environ.get("WANDB_CONSOLE") else {"console": "off"}
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "agentrl",
            id=f"agentrl-{key}",
            name=run_name,
            dir=str(where),
            mode=os.environ.get("WANDB_MODE") or None,
            resume="allow",
            settings=wandb.Settings(**settings),
            tags=["agentrl"],
        )
        self.run.config.update(config, allow_val_change=True)
        self.skip_below = int(getattr(self.run, "step", 0) or 0) if resume_step is not None else 0

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if step >= self.skip_below:
            self.run.log(dict(metrics), step=step)

    def log_table(self, step: int, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        if step >= self.skip_below:
            self.run.log({name: self.wandb.Table(columns=list(columns), data=[list(r) for r in rows])}, step=step)

    def finish(self, status: str = "finished") -> None:
        if self.run is not None:
            run, self.run = self.run, None
            run.finish(exit_code=0 if status == "finished" else 1)
