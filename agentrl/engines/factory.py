"""Build the engine a recipe names (`rollout.engine`: hf | vllm) for a model loaded in this process.

The HF engine generates with that very model (the learner's updates are live at once); the vllm
engine loads the model's HF folder (a GGUF is converted once) and is handed new weights after
every update (`VLLMEngine.load_weights`).
"""

from __future__ import annotations

from agentrl.config import Recipe


def max_model_len(recipe: Recipe, limit: int | None) -> int:
    """The longest sequence one turn can need: a full prompt plus the longest generation (free mode's
    max_new_tokens, or a long admissible command), within the model's own limit."""
    r = recipe.rollout
    need = r.max_prompt_tokens + max(r.max_new_tokens, 64) + 16
    return min(need, int(limit)) if limit else need


def make_engine(recipe: Recipe, model, tokenizer, seed: int | None = None):
    """The engine of `recipe.rollout.engine` for `model` (a transformers or peft model; the vllm
    engine needs none) and `tokenizer`."""
    seed = recipe.seed if seed is None else seed
    if recipe.rollout.engine == "vllm":
        import json

        from agentrl.engines.vllm import VLLMEngine
        from agentrl.policy.convert import hf_folder

        folder = hf_folder(recipe.model.path)
        limit = json.loads((folder / "config.json").read_text()).get("max_position_embeddings")
        return VLLMEngine(
            folder,
            tokenizer,
            recipe.rollout.vllm,
            seed=seed,
            max_model_len=max_model_len(recipe, limit),
            lora_rank=recipe.learner.lora_rank,
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
