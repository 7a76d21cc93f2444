"""MLflow (`train.report_to: [mlflow]`, the `mlflow` extra). The tracking URI is MLFLOW_TRACKING_URI
when set (a server, a database), else a SQLite store of the run's own: `sqlite:///<run folder>/mlflow/mlflow.db`
with artifacts in `<run folder>/mlflow/artifacts/` (MLflow 3 refuses its old `file:` store unless
MLFLOW_ALLOW_FILE_STORE is set; SQLite needs no server: `mlflow ui --backend-store-uri sqlite:///...`).
Experiment: MLFLOW_EXPERIMENT_NAME, default `agentrl`. Params: the recipe, flattened to dotted keys,
values cut to MLflow's limit. The run is tagged `agentrl.key` (trackers.json); `--resume` finds it by that
tag, reopens it and logs only the iterations after the last one it has (tag `agentrl.last_step`)."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from agentrl.quiet import debug
from agentrl.trackers.base import flat_params, import_library

_BAD_KEY = re.compile(r"[^\w./\- ]")


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i : i + n]


class MlflowTracker:
    name = "mlflow"
    has_tables = True

    def __init__(self, output_dir: str | Path):
        self.mlflow = import_library(self.name, "mlflow")
        self.output_dir = Path(output_dir)
        self.client = None
        self.run_id: str | None = None
        self.tracking_uri: str | None = None
        self.skip_below = 0

    def start(self, run_id: int, run_name: str, config: dict, key: str, resume_step: int | None = None) -> None:
        from mlflow.entities import Param, RunStatus

        if not debug():  # "Creating initial MLflow database tables..." on every new store
            for name in ("mlflow.store.db.utils", "alembic"):
                logging.getLogger(name).setLevel(logging.WARNING)
        folder = self.output_dir / run_name / "mlflow"
        own_store = not os.environ.get("MLFLOW_TRACKING_URI")
        if own_store:
            folder.mkdir(parents=True, exist_ok=True)
            self.tracking_uri = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
        else:
            self.tracking_uri = os.environ["MLFLOW_TRACKING_URI"]
        c = self.client = self.mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        exp_name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "agentrl"
        exp = c.get_experiment_by_name(exp_name)
        if exp is not None:
            exp_id = exp.experiment_id
        else:
            where = (folder / "artifacts").resolve().as_uri() if own_store else None
            exp_id = c.create_experiment(exp_name, artifact_location=where)
        found = []
        if resume_step is not None:
            found = c.search_runs([exp_id], filter_string=f"tags.`agentrl.key` = '{key}'", max_results=1)
        if found:
            run = found[0]
            self.run_id = run.info.run_id
            c.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            last = run.data.tags.get("agentrl.last_step")
            self.skip_below = int(last) + 1 if last is not None and last.lstrip("-").isdigit() else 0
            have = set(run.data.params)
        else:
            tags = {"agentrl.key": key, "agentrl.run_id": str(run_id)}
            self.run_id = c.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
            have = set()
        from mlflow.utils import validation

        limit = getattr(validation, "MAX_PARAM_VAL_LENGTH", 500)
        key_limit = getattr(validation, "MAX_ENTITY_KEY_LENGTH", 250)
        params = [
            Param(k[:key_limit], v)
            for k, v in flat_params(config, limit).items()
            if k[:key_limit] not in have  # a param's value cannot change: a resumed run adds only new keys
        ]
        for part in _chunks(params, 100):
            c.log_batch(self.run_id, params=part)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric, RunTag

        if step < self.skip_below:
            return
        ts = int(time.time() * 1000)
        items = [Metric(_BAD_KEY.sub("_", k)[:250], v, ts, step) for k, v in metrics.items()]
        for part in _chunks(items, 900):
            self.client.log_batch(self.run_id, metrics=part)
        self.client.log_batch(self.run_id, tags=[RunTag("agentrl.last_step", str(step))])

    def log_table(self, step: int, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        if step < self.skip_below:
            return
        data = {c: [r[i] for r in rows] for i, c in enumerate(columns)}
        self.client.log_table(self.run_id, data=data, artifact_file=f"{name}/iter-{step:04d}.json")

    def finish(self, status: str = "finished") -> None:
        if self.client is not None and self.run_id is not None:
            mlflow_status = {"finished": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
            run_id, self.run_id = self.run_id, None
            self.client.set_terminated(run_id, status=mlflow_status)
