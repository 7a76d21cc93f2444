"""Defect 16 (issue 11): no library noise on model load, rollout and checkpoint; AGENTRL_DEBUG=1
shows it."""

import os
import subprocess
import sys

import pytest
import yaml
from conftest import AGENTRL


def _run(tmp_path, tiny_model_dir, debug: bool) -> str:
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "toy",
                "env": {"suite": "toy-chain", "max_steps": 3, "workers": 0},
                "policy": "llm",
                "model": {"path": str(tiny_model_dir)},
                "rollout": {"group_size": 2, "groups_per_iteration": 1, "max_new_tokens": 4},
                "train": {"iterations": 1, "checkpoint_every": 1, "output_dir": str(tmp_path / "runs")},
                "eval": {"episodes": 1},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTRL_DEBUG", "AGENTRL_ENVS_DIR")}
    if debug:
        env["AGENTRL_DEBUG"] = "1"
    p = subprocess.run(
        [*AGENTRL, "train", str(recipe), "--db", str(tmp_path / f"r{debug}.db"), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stderr


def test_no_library_noise(tmp_path, tiny_model_dir):
    """Defect 16: "Loading weights" bars, FutureWarnings (`is_gradient_checkpointing`,
    `past_key_values`) and `[transformers] past_key_values … deprecated` on every run."""
    err = _run(tmp_path, tiny_model_dir, debug=False)
    for noise in ("Loading weights", "FutureWarning", "past_key_values", "[transformers]", "Could not find a config"):
        assert noise not in err, (noise, err)
    shown = _run(tmp_path, tiny_model_dir, debug=True)
    assert "Loading weights" in shown


@pytest.mark.slow
def test_default_gguf_loads_without_progress_bars():
    """Defect 16: the GGUF "Converting and de-quantizing" bar on every load of the default model."""
    code = (
        "from agentrl.config import ModelConfig; from agentrl.policy.model import load_model; load_model(ModelConfig())"
    )
    env = {k: v for k, v in os.environ.items() if k != "AGENTRL_DEBUG"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "de-quantizing" not in p.stderr and "Loading weights" not in p.stderr, p.stderr[-2000:]
