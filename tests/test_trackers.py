"""`train.report_to`: TensorBoard, W&B (offline), MLflow (local SQLite) and Trackio (local) get the
recipe, every stored iteration's metrics (step = iteration) and a transcripts table; read back with
each library's own reader and compared with runs.db. Nothing goes to the network or outside tmp_path."""

import json
import sqlite3
import struct
import sys
from pathlib import Path

import pytest
import yaml
from conftest import one_line_error, run_cli
from test_train import _pick_suite, _recipe

ITERATIONS = 2


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Every tracker local and offline, its files in tmp_path."""
    for k in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_CONSOLE", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(k, raising=False)
    for k in ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL"):
        monkeypatch.delenv(k, raising=False)
    env = {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DIR": tmp_path / "wandb-dir",
        "WANDB_CACHE_DIR": tmp_path / "wandb-cache",
        "WANDB_CONFIG_DIR": tmp_path / "wandb-config",
        "WANDB_DATA_DIR": tmp_path / "wandb-data",
        "WANDB_ARTIFACT_DIR": tmp_path / "wandb-artifacts",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TRACKIO_DIR": tmp_path / "trackio",
    }
    for k, v in env.items():
        if isinstance(v, Path):
            v.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(k, str(v))
    return tmp_path


def _train(tmp_path, suites_dir, model_dir, capsys, report_to, iterations=ITERATIONS, extra=()):
    _pick_suite(suites_dir)
    recipe = _recipe(
        tmp_path,
        model_dir,
        train={"iterations": iterations, "checkpoint_every": 1, "eval_every": 1, "report_to": list(report_to)},
        rollout={"group_size": 2, "groups_per_iteration": 2},
        eval={"episodes": 2},
    )
    db = str(tmp_path / "r.db")
    code, out, err = run_cli(["train", str(recipe), "--db", db, "--no-progress", *extra], capsys)
    assert code == 0, err[-3000:]
    return db, out, err


def _stored(db) -> dict[int, dict[str, float]]:
    """iteration -> the scalars the trackers should have: metrics, and wall times as time/<phase>."""
    con = sqlite3.connect(db)
    out = {}
    for index, metrics, wall in con.execute('SELECT "index", metrics, wall FROM iterations'):
        m = {k: float(v) for k, v in json.loads(metrics).items()}
        m.update({f"time/{k}": float(v) for k, v in json.loads(wall).items()})
        out[index] = m
    con.close()
    assert sorted(out) == list(range(ITERATIONS + 1))
    return out


def _run_dir(tmp_path) -> Path:
    return tmp_path / "ckpt" / "train-1"  # <train.output_dir>/<name>-<id>


def test_tensorboard_scalars_and_transcripts(tmp_path, offline, suites_dir, tiny_model_dir, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    db, out, err = _train(tmp_path, suites_dir, tiny_model_dir, capsys, ["tensorboard"])
    stored = _stored(db)
    ea = EventAccumulator(str(_run_dir(tmp_path) / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    for it, metrics in stored.items():
        for k, v in metrics.items():
            assert any(e.step == it and e.value == pytest.approx(v, rel=1e-6) for e in ea.Scalars(k)), (it, k)
    assert [e.step for e in ea.Scalars("loss")] == list(range(1, ITERATIONS + 1))
    assert [e.step for e in ea.Scalars("eval_success")] == list(range(ITERATIONS + 1))
    text = [e for e in ea.Tensors("transcripts/text_summary")]
    assert [e.step for e in text] == list(range(ITERATIONS + 1))
    md = text[1].tensor_proto.string_val[0].decode()
    assert "toy/pick\\-4/seed\\-" in md and "→ " in md  # escaped task ids in the table, turns as code
    recipe = ea.Tensors("recipe/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "report_to:" in recipe and "tensorboard" in recipe
    assert not (tmp_path / "wandb-dir" / "wandb").exists()  # only the tracker asked for


def _wandb_records(path: Path):
    """The protobuf records of a `.wandb` file: W&B's 7-byte header (':W&B', magic, version), then
    LevelDB-log blocks of 32 KiB, each record chunk with a 7-byte header (crc32, length, type:
    1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def _wandb_history(run_dir: Path) -> tuple[dict[int, dict], dict, str]:
    """(step -> logged values, config, run id) of an offline run folder."""
    (file,) = run_dir.glob("run-*.wandb")
    history: dict[int, dict] = {}
    config: dict = {}
    run_id = ""
    for rec in _wandb_records(file):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
            history.setdefault(int(row["_step"]), {}).update(row)
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "run":
            run_id = rec.run.run_id
            config.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
    return history, config, run_id


def test_wandb_offline_history(tmp_path, offline, suites_dir, tiny_model_dir, capsys):
    pytest.importorskip("wandb")
    db, out, err = _train(tmp_path, suites_dir, tiny_model_dir, capsys, ["wandb"])
    stored = _stored(db)
    (run_dir,) = (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*")
    history, config, run_id = _wandb_history(run_dir)
    key = json.loads((_run_dir(tmp_path) / "trackers.json").read_text())["key"]
    assert run_id == f"agentrl-{key}" and key.startswith("1-")
    assert sorted(history) == sorted(stored)
    for it, metrics in stored.items():
        for k, v in metrics.items():
            assert history[it][k] == pytest.approx(v, rel=1e-6), (it, k)
        assert history[it]["transcripts/_type"] == "table-file" and history[it]["transcripts/nrows"] == (
            2 if it == 0 else 4
        )
    assert config["train"]["report_to"] == ["wandb"] and config["rollout"]["group_size"] == 2
    (table,) = run_dir.glob("files/media/table/transcripts_1_*.table.json")
    t = json.loads(table.read_text())
    assert t["columns"][:4] == ["iteration", "split", "episode_id", "task_id"]
    assert t["data"][0][1] == "train" and "→ " in t["data"][0][-1]
    assert out.count("training run 1") == 1  # stdout: agentrl's summary, nothing of wandb's


def test_mlflow_local_store(tmp_path, offline, suites_dir, tiny_model_dir, capsys):
    mlflow = pytest.importorskip("mlflow")
    db, out, err = _train(tmp_path, suites_dir, tiny_model_dir, capsys, ["mlflow"])
    stored = _stored(db)
    store = _run_dir(tmp_path) / "mlflow" / "mlflow.db"
    assert store.exists()
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    exp = client.get_experiment_by_name("agentrl")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "train-1" and run.info.status == "FINISHED"
    assert run.data.params["rollout.group_size"] == "2" and run.data.params["train.report_to"] == '["mlflow"]'
    for k in stored[1]:
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, k)}
        assert history == {it: pytest.approx(m[k], rel=1e-6) for it, m in stored.items() if k in m}, k
    arts = [a.path for a in client.list_artifacts(run.info.run_id, "transcripts")]
    assert arts == [f"transcripts/iter-{i:04d}.json" for i in range(ITERATIONS + 1)]
    (path,) = (_run_dir(tmp_path) / "mlflow" / "artifacts").glob("*/artifacts/transcripts/iter-0001.json")
    table = json.loads(path.read_text())
    assert table["columns"][3] == "task_id" and len(table["data"]) == 4  # the first 4 episodes
    assert "Creating initial MLflow database tables" not in err


def test_trackio_local(tmp_path, offline, suites_dir, tiny_model_dir, capsys):
    if "trackio" in sys.modules and sys.modules["trackio"] is not None:
        import trackio.utils

        if Path(trackio.utils.TRACKIO_DIR) != tmp_path / "trackio":  # it reads TRACKIO_DIR once, at import
            pytest.skip("trackio was imported earlier in this process with another TRACKIO_DIR")
    pytest.importorskip("trackio")
    from trackio.sqlite_storage import SQLiteStorage

    db, out, err = _train(tmp_path, suites_dir, tiny_model_dir, capsys, ["trackio"])
    stored = _stored(db)
    assert (tmp_path / "trackio" / "agentrl.db").exists()
    logs = SQLiteStorage.get_logs("agentrl", "train-1")
    metrics: dict[int, dict] = {}
    tables = {}
    for row in logs:
        if "transcripts" in row:
            tables[row["step"]] = row["transcripts"]
        metrics.setdefault(row["step"], {}).update({k: v for k, v in row.items() if k not in ("timestamp", "step")})
    for it, m in stored.items():
        for k, v in m.items():
            assert metrics[it][k] == pytest.approx(v, rel=1e-6), (it, k)
    assert sorted(tables) == list(range(ITERATIONS + 1))
    assert tables[1]["_type"] == "trackio.table" and tables[1]["_value"][0]["split"] == "train"
    config = SQLiteStorage.get_run_config("agentrl", "train-1")
    assert config["train"]["report_to"] == ["trackio"]
    assert "Trackio" not in out and "Trackio" not in err  # trackio's messages replaced by one line of ours:
    assert f"trackio: run train-1 of project agentrl in {tmp_path / 'trackio'} (trackio show --project agentrl)" in err


def test_resume_continues_the_tracker_runs(tmp_path, offline, suites_dir, tiny_model_dir, capsys):
    """--resume: TensorBoard writes to the same folder, MLflow reopens its run (found by tag), W&B uses the same id."""
    pytest.importorskip("tensorboard")
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    db, _, _ = _train(tmp_path, suites_dir, tiny_model_dir, capsys, ["tensorboard", "mlflow", "wandb"], iterations=1)
    code, _, err = run_cli(
        ["train", "--resume", "1", "--set", "train.iterations=2", "--db", db, "--no-progress"], capsys
    )
    assert code == 0, err[-3000:]
    stored = _stored(db)
    ea = EventAccumulator(str(_run_dir(tmp_path) / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    assert [e.step for e in ea.Scalars("eval_success")] == [0, 1, 2]
    assert ea.Scalars("loss")[-1].value == pytest.approx(stored[2]["loss"], rel=1e-6)
    client = mlflow.MlflowClient(f"sqlite:///{_run_dir(tmp_path) / 'mlflow' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("agentrl").experiment_id])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval_success")] == [0, 1, 2]
    ids = {_wandb_history(d)[2] for d in (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*")}
    assert len(ids) == 1  # two offline sessions of one W&B run (`wandb sync` joins them)


@pytest.mark.parametrize("name", ["tensorboard", "wandb", "mlflow", "trackio"])
def test_missing_extra_is_one_line_before_any_work(
    name, tmp_path, offline, suites_dir, tiny_model_dir, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, name, None)  # `import <name>` fails as if it were not installed
    _pick_suite(suites_dir)
    recipe = _recipe(tmp_path, tiny_model_dir, train={"report_to": [name]})
    db = tmp_path / "r.db"
    code, out, err = run_cli(["train", str(recipe), "--db", str(db), "--no-progress"], capsys)
    line = one_line_error(code, err, f"pip install 'agentrl[{name}]'")
    assert line == f"error: train.report_to: {name} needs the {name} extra: pip install 'agentrl[{name}]'"
    # before any work: no run was recorded, no run folder made
    assert sqlite3.connect(db).execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    assert not (tmp_path / "ckpt").exists()


def test_a_tracker_that_cannot_start_is_an_error_before_the_first_rollout(
    tmp_path, offline, suites_dir, tiny_model_dir, capsys, monkeypatch
):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus-scheme://nowhere")
    _pick_suite(suites_dir)
    recipe = _recipe(tmp_path, tiny_model_dir, train={"report_to": ["mlflow"]})
    db = tmp_path / "r.db"
    code, out, err = run_cli(["train", str(recipe), "--db", str(db), "--no-progress"], capsys)
    one_line_error(code, err, "train.report_to: mlflow could not start: ")
    con = sqlite3.connect(db)
    assert con.execute("SELECT status FROM runs").fetchone()[0] == "failed"
    assert con.execute("SELECT count(*) FROM episodes").fetchone()[0] == 0


def test_a_tracker_failing_while_logging_does_not_stop_training(
    tmp_path, offline, suites_dir, tiny_model_dir, capsys, monkeypatch
):
    pytest.importorskip("tensorboard")
    from agentrl.trackers.tensorboard import TensorBoardTracker

    def broken(self, step, metrics):
        raise OSError("disk full")

    monkeypatch.setattr(TensorBoardTracker, "log", broken)
    db, out, err = _train(tmp_path, suites_dir, tiny_model_dir, capsys, ["tensorboard"])
    warnings = [line for line in err.splitlines() if "train.report_to" in line]
    assert warnings == [
        "warning: train.report_to: tensorboard failed logging (disk full); it is off for the rest of this run"
    ]
    assert sqlite3.connect(db).execute("SELECT status FROM runs").fetchone()[0] == "finished"


def test_report_to_validation(tmp_path):
    from agentrl.config import recipe_from_dict
    from agentrl.errors import UserError

    base = {"env": {"suite": "x"}}
    assert recipe_from_dict(base).train.report_to == []
    assert recipe_from_dict(base, ["train.report_to=[wandb, mlflow]"]).train.report_to == ["wandb", "mlflow"]
    assert recipe_from_dict(base, ["train.report_to=tensorboard"]).train.report_to == ["tensorboard"]
    assert recipe_from_dict({**base, "train": {"report_to": "wandb,trackio"}}).train.report_to == ["wandb", "trackio"]
    with pytest.raises(UserError, match=r"train\.report_to\.1.*'tensorboard', 'wandb', 'mlflow' or 'trackio'"):
        recipe_from_dict({**base, "train": {"report_to": ["wandb", "neptune"]}})
    with pytest.raises(UserError, match="wandb named more than once"):
        recipe_from_dict(base, ["train.report_to=[wandb, mlflow, wandb]"])
    # the resolved recipe round-trips through YAML (what runs.db keeps, what --resume reads)
    r = recipe_from_dict(base, ["train.report_to=[mlflow]"])
    from agentrl.config import recipe_to_yaml

    assert recipe_from_dict(yaml.safe_load(recipe_to_yaml(r))).train.report_to == ["mlflow"]


def test_cli_refuses_an_unknown_tracker(tmp_path, suites_dir, capsys):
    _pick_suite(suites_dir)
    recipe = _recipe(tmp_path, "unused", train={"report_to": ["neptune"]})
    code, out, err = run_cli(["train", str(recipe), "--db", str(tmp_path / "r.db")], capsys)
    one_line_error(code, err, "train.report_to")


def test_helpers():
    from agentrl.trackers.base import flat_params, iteration_scalars
    from agentrl.trackers.tensorboard import md_code, md_escape

    assert iteration_scalars({"a": 1, "b": float("nan"), "c": {"d": 2.5}, "s": "x"}, {"eval": 3}) == {
        "a": 1.0,
        "c/d": 2.5,
        "time/eval": 3.0,
    }
    p = flat_params({"train": {"report_to": ["wandb"], "n": 2}, "long": "x" * 50}, max_value=10)
    assert p == {"train.report_to": '["wandb"]', "train.n": "2", "long": "x" * 9 + "…"}
    cell = md_escape("<script>a|b</script>\n*x*")
    assert "<" not in cell and "\n" not in cell and "\\|" in cell and "\\*x\\*" in cell
    assert md_code("```\n</pre>") == "    ```\n    </pre>"
