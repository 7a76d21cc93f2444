"""Checkpoints: peft adapter dir + optimizer/scheduler/RNG state + iteration (ARCHITECTURE.md §7).

Layout of a checkpoint directory:

    adapter/<name>/adapter_model.safetensors, adapter_config.json   (model.save_pretrained)
    trainer_state.pt   optimizer, scheduler, RNG states, extra state dicts (torch.save, loaded weights_only)
    state.json         {"format": 1, "iteration": N, "adapters": [...], "extra": {...}}

Each `adapter/<name>/` is a plain peft adapter folder: with a `ModelCard` its
`adapter_config.json` names a base model others can resolve (`base_model_name_or_path`:
the hub id of the default model, else the path the recipe gave) and its `README.md` is a
filled model card (base model, recipe, metrics) instead of peft's blank template, so

    base = AutoModelForCausalLM.from_pretrained(<base model>)
    model = PeftModel.from_pretrained(base, "<checkpoint>/adapter/policy")

loads the trained policy with plain transformers + peft.

`save_checkpoint` writes into a hidden temp dir beside the target and renames it into
place, so a SIGKILL mid-save never leaves a half-written checkpoint under the
target name. Replacing an existing checkpoint moves the old one aside to
`.<name>.old` first; `load_checkpoint` falls back to it if the kill came between the
two renames.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file

from agentrl.errors import UserError
from agentrl.learner.lora import POLICY
from agentrl.quiet import quiet_libraries

FORMAT = 1
STATE_JSON = "state.json"
TRAINER_STATE = "trainer_state.pt"
ADAPTER_DIR = "adapter"


@dataclass(frozen=True)
class ModelCard:
    """What a checkpoint's adapters say about themselves (adapter_config.json, README.md)."""

    base_model: str  # a hub id or a path others can resolve
    base_model_note: str = ""  # e.g. how the default model was loaded (GGUF)
    recipe_yaml: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


def _card_text(card: ModelCard, adapter: str, iteration: int) -> str:
    metrics = "\n".join(
        f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in sorted(card.metrics.items())
    )
    base = json.dumps(card.base_model)
    return f"""---
base_model: {base}
library_name: peft
tags: [agentrl, lora, reinforcement-learning]
---
# agentrl adapter `{adapter}` — iteration {iteration}

A LoRA adapter trained by agentrl (PPO on multi-turn text environments).

- base model: `{card.base_model}`{(" — " + card.base_model_note) if card.base_model_note else ""}
- adapter: `{adapter}` (`policy` is the trained policy)

Load it with plain transformers + peft:

```python
from transformers import AutoModelForCausalLM
from peft import PeftModel
base = AutoModelForCausalLM.from_pretrained({base})
model = PeftModel.from_pretrained(base, "<this folder>")
```

## Metrics at this checkpoint

| metric | value |
|---|---|
{metrics or "| (none) | |"}

## Recipe

```yaml
{card.recipe_yaml.rstrip()}
```
"""


def _write_cards(adapter_root: Path, names: list[str], card: ModelCard, iteration: int) -> None:
    for name in names:
        d = _adapter_path(adapter_root, name)
        cfg_path = d / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = card.base_model
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
        (d / "README.md").write_text(_card_text(card, name, iteration))


class LoadedCheckpoint(NamedTuple):
    iteration: int
    extra: dict[str, Any]
    extra_state_dicts: dict[str, dict]


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states, in weights_only-loadable types."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _adapter_path(root: Path, name: str) -> Path:
    # peft's save_pretrained puts adapter "default" at the root, any other name in a subfolder
    return root if name == "default" else root / name


def _fsync(p: Path) -> None:
    """fsync a file or a folder (a folder so that renames inside it are durable)."""
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under `root` to disk before the rename publishes it."""
    for p in sorted(root.rglob("*")) + [root]:
        _fsync(p)


def save_checkpoint(
    dir: str | Path,
    model: PeftModel,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    iteration: int,
    extra: dict[str, Any] | None = None,
    extra_state_dicts: dict[str, dict] | None = None,
    card: ModelCard | None = None,
) -> Path:
    """Write a checkpoint atomically to `dir` (replacing one already there); returns the path.

    `extra` must be JSON-serialisable (e.g. run metadata); `extra_state_dicts` holds
    tensors (e.g. a SPA estimator's state_dict) and is saved with torch.save.
    """
    quiet_libraries()
    final = Path(dir)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{final.name}.tmp-*"):  # left by a killed save
        shutil.rmtree(stale, ignore_errors=True)
    tmp = parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        model.save_pretrained(str(tmp / ADAPTER_DIR))
        if card is not None:
            _write_cards(tmp / ADAPTER_DIR, list(model.peft_config), card, iteration)
        torch.save(
            {
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": rng_state(),
                "extra_state_dicts": extra_state_dicts or {},
            },
            tmp / TRAINER_STATE,
        )
        meta = {
            "format": FORMAT,
            "iteration": int(iteration),
            "adapters": list(model.peft_config),
            "extra": extra or {},
        }
        (tmp / STATE_JSON).write_text(json.dumps(meta, indent=1))
        _fsync_tree(tmp)
        old = parent / f".{final.name}.old"
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        _fsync(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _resolve(dir: str | Path) -> Path:
    path = Path(dir)
    if (path / STATE_JSON).is_file():
        return path
    old = path.parent / f".{path.name}.old"
    if not path.exists() and (old / STATE_JSON).is_file():  # killed between the two renames of a save
        return old
    raise UserError(f"not a checkpoint: {path}")


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / STATE_JSON).read_text())
    except (OSError, json.JSONDecodeError):
        raise UserError(f"unreadable checkpoint: {path}") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} has format {meta.get('format')!r}; this agentrl reads format {FORMAT}")
    return meta


def checkpoint_iteration(dir: str | Path) -> int:
    """The iteration a checkpoint holds, read from its state.json (no model needed);
    UserError if `dir` is not a readable checkpoint."""
    path = _resolve(dir)
    return int(_read_meta(path)["iteration"])


def checkpoint_extra(dir: str | Path) -> dict[str, Any]:
    """The `extra` dict a checkpoint was saved with (state.json; no model needed)."""
    return dict(_read_meta(_resolve(dir)).get("extra") or {})


def _load_adapter_weights(model: PeftModel, src: Path, name: str) -> None:
    """Copy the adapter saved in `src` into the model's existing adapter `name` (in place)."""
    saved = json.loads((src / "adapter_config.json").read_text())
    cur = model.peft_config[name]
    for key in ("r", "lora_alpha", "layers_to_transform"):
        if saved.get(key) != getattr(cur, key):
            raise UserError(
                f"checkpoint adapter '{name}' has {key}={saved.get(key)}, the model has {getattr(cur, key)}"
            )
    if set(saved.get("target_modules") or []) != set(cur.target_modules or []):
        raise UserError(
            f"checkpoint adapter '{name}' targets {saved.get('target_modules')}, the model {cur.target_modules}"
        )
    weights = load_file(str(src / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, weights, adapter_name=name)
    missing = [k for k in result.missing_keys if "lora_" in k and f".{name}." in k]
    if result.unexpected_keys or missing:
        raise UserError(
            f"checkpoint adapter '{name}' does not match the model ({len(missing)} missing, {len(result.unexpected_keys)} unexpected weights)"  # noqa: E501
        )


def load_checkpoint(
    dir: str | Path,
    model: PeftModel,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    restore_rng: bool = True,
) -> LoadedCheckpoint:
    """Restore adapter weights (every adapter in the checkpoint), optimizer, scheduler and RNG.

    The model must already carry the same adapters (same config); weights are copied
    into the existing parameters so an optimizer built on them stays valid.
    """
    path = _resolve(dir)
    meta = _read_meta(path)
    for name in meta["adapters"]:
        if name not in model.peft_config:
            raise UserError(f"checkpoint {path} has adapter '{name}' that the model lacks")
        _load_adapter_weights(model, _adapter_path(path / ADAPTER_DIR, name), name)
    state = torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=True)
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return LoadedCheckpoint(int(meta["iteration"]), dict(meta.get("extra") or {}), dict(state["extra_state_dicts"]))


def load_adapter_weights(dir: str | Path, model: PeftModel, adapter: str = POLICY) -> int:
    """Copy adapter `adapter` of checkpoint `dir` into the model's own adapter of that name (a warm
    start: no optimiser, scheduler or RNG state); returns the checkpoint's iteration."""
    path = _resolve(dir)
    meta = _read_meta(path)
    if adapter not in meta["adapters"]:
        raise UserError(f"checkpoint {path} has no adapter '{adapter}'")
    _load_adapter_weights(model, _adapter_path(path / ADAPTER_DIR, adapter), adapter)
    return int(meta["iteration"])


def load_adapter_for_eval(base_model: torch.nn.Module, dir: str | Path, adapter: str = POLICY) -> PeftModel:
    """The base model with adapter `adapter` of checkpoint `dir` (or a bare peft adapter dir), in eval mode.

    A PeftModel that already has that adapter gets its weights replaced in place.
    """
    path = Path(dir)
    if (path / "adapter_config.json").is_file():
        src = path
    else:
        src = _adapter_path(_resolve(path) / ADAPTER_DIR, adapter)
        if not (src / "adapter_config.json").is_file():
            raise UserError(f"checkpoint {path} has no adapter '{adapter}'")
    if isinstance(base_model, PeftModel):
        if adapter in base_model.peft_config:
            _load_adapter_weights(base_model, src, adapter)
        else:
            base_model.load_adapter(str(src), adapter_name=adapter)
        base_model.set_adapter(adapter)
        model = base_model
    else:
        model = PeftModel.from_pretrained(base_model, str(src), adapter_name=adapter)
    return model.eval()
