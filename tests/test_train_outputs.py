"""What a finished tiny training run leaves for others: checkpoints that plain peft loads
(issue 11, defect 13) and an export with everything stored (defect 12)."""

import json
import sqlite3
from pathlib import Path

import torch
from conftest import run_cli
from test_train import _pick_suite, _recipe


def test_checkpoint_adapter_loads_with_plain_peft(tmp_path, suites_dir, tiny_model_dir, capsys):
    """Defect 13: `PeftModel.from_pretrained(base, <ckpt>/adapter/policy)` and
    `AutoPeftModelForCausalLM.from_pretrained(<ckpt>/adapter/policy)` work; the model card is
    filled (base model, recipe, metrics), not peft's blank template."""
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    _pick_suite(suites_dir)
    recipe = _recipe(
        tmp_path,
        tiny_model_dir,
        train={"iterations": 1, "checkpoint_every": 1},
        rollout={"groups_per_iteration": 2},
        eval={"episodes": 2},
    )
    db = str(tmp_path / "r.db")
    code, out, err = run_cli(["train", str(recipe), "--db", db, "--no-progress"], capsys)
    assert code == 0, err[-2000:]
    _check_export(db, capsys)
    stored = Path(sqlite3.connect(db).execute("SELECT path FROM checkpoints").fetchone()[0])
    ckpt = stored if stored.is_absolute() else Path(db).parent / stored  # relative to the database's folder
    adapter = ckpt / "adapter" / "policy"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(Path(tiny_model_dir).resolve())
    card = (adapter / "README.md").read_text()
    assert "[More Information Needed]" not in card
    assert str(Path(tiny_model_dir).resolve()) in card and "credit:" in card and "loss" in card

    ids = torch.tensor([[1, 5, 9, 13, 2]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        base_logits = base(ids).logits
    plain = PeftModel.from_pretrained(base, str(adapter)).eval()
    auto = AutoPeftModelForCausalLM.from_pretrained(str(adapter)).eval()
    with torch.no_grad():
        a, b = plain(ids).logits, auto(ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, base_logits, atol=1e-4)  # the adapter is really applied


def test_default_model_names_its_hub_id():
    """Defect 13: for the embedded default model the adapter names the hub id it came from."""
    from agentrl.policy.model import DEFAULT_MODEL, base_model_reference

    assert base_model_reference(DEFAULT_MODEL)[0] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def _check_export(db, capsys):
    """Defect 12: export had no advantages, signals, recipe or iteration metrics, and the
    return was under `ret`. Now: a run header, then episodes with per-step advantages."""
    code, out, err = run_cli(["export", "1", "--db", db], capsys)
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    head, eps = lines[0], lines[1:]
    assert head["type"] == "run" and head["recipe"]["credit"]["method"] == "grpo"
    assert [it["index"] for it in head["iterations"]] == [0, 1]
    assert "loss" in head["iterations"][1]["metrics"] and len(head["checkpoints"]) == 1
    train = [e for e in eps if e["split"] == "train"]
    assert train and all(e["type"] == "episode" and "return" in e and "ret" not in e for e in eps)
    steps = [st for e in train for st in e["steps"]]
    assert steps and all(set(st["advantages"]) == {"grpo"} for st in steps)
    assert any(st["advantages"]["grpo"] != 0 for st in steps) or all(e["won"] == train[0]["won"] for e in train)
    assert all(isinstance(st["action_ids"], list) and isinstance(st["logprobs"], list) for st in steps)
