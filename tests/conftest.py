import os
import sys
from pathlib import Path

import pytest

# One torch thread per process: the suite runs beside env workers and subprocesses on 2 cores,
# where oversubscribed OpenMP threads made small models ~8x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models on a shared 2-core machine: one torch thread was ~10x faster than two. Applied to every
    test module (OMP_NUM_THREADS above covers processes that import torch later)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Games are generated into one cache per test session, never the user's ~/.cache."""
    if "AGENTRL_CACHE" not in os.environ:
        monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path_factory.getbasetemp() / "agentrl-cache"))


@pytest.fixture
def suites_dir(tmp_path, monkeypatch):
    """A private envs/ folder for suites a test defines."""
    d = tmp_path / "envs"
    d.mkdir()
    monkeypatch.setenv("AGENTRL_ENVS_DIR", str(d))
    return d


def write_recipe(path: Path, suite: str, policy: str = "random", **sections) -> Path:
    import yaml

    data = {"name": path.stem, "seed": 0, "env": {"suite": suite, "max_steps": 10, "workers": 0}, "policy": policy}
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k].update(v)
        else:
            data[k] = v
    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `agentrl ARGS` in-process through main(); returns (exit code, stdout, stderr)."""
    from agentrl.cli import main

    old = sys.argv
    sys.argv = ["agentrl", *args]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err


AGENTRL = [sys.executable, "-m", "agentrl.cli"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny randomly initialised Llama saved as a local HF model directory (no download)."""
    from agentrl.policy.model import tiny_model

    d = tmp_path_factory.mktemp("tiny-model")
    import torch

    # seed 1: its untrained sampled policy wins toy/pick-4 at chance (25% measured on 128 episodes)
    model, tok = tiny_model(hidden=64, layers=2, heads=4, seed=1)
    # With the default init (std 0.02) and hidden 64, tied embeddings bound every logit gap to ~2 nats
    # after the final RMSNorm, so no adapter can make the policy confident. Real models' embeddings are
    # larger; scale them so a tiny model can express a learned preference.
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(4.0)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def one_line_error(code, err, needle="", expected_code=2):
    """An input error: exit `expected_code`, exactly one line starting `error:`, no traceback."""
    assert code == expected_code, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    assert "Traceback" not in err and "unexpected" not in err, err
    assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]
