"""New weights as plain data (ARCHITECTURE.md §7): what an engine that does not run the learner's own
model needs after an update, in a form that can be written to disk or travel through Ray's object
store: the LoRA adapter's tensors and config, or the adapter merged into the base weights.
"""

from __future__ import annotations

from pathlib import Path


def export_weights(model, weights: str, dtype: str, adapter: str = "policy") -> dict:
    """What a vllm engine needs of `model` (a peft model) to serve its current weights: `merged`
    tensors in the engine's dtype, or (`lora`) the adapter's tensors and config. Plain tensors and
    dicts, so the payload can travel (the Ray runtime puts it in the object store once for all engines)."""
    if weights == "merged":
        import torch

        from agentrl.policy.convert import merged_state_dict

        torch_dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[dtype]
        return {"kind": "merged", "state": merged_state_dict(model, adapter, dtype=torch_dtype)}
    return adapter_payload(model, adapter)


def adapter_payload(model, adapter: str = "policy") -> dict:
    """A peft model's LoRA adapter `adapter` as plain data: its tensors (CPU) and its config."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=adapter)
    config = model.peft_config[adapter].to_dict()
    return {
        "kind": "adapter",
        "state": {k: v.detach().to("cpu").contiguous() for k, v in state.items()},
        "config": {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()},
    }


def write_adapter(payload: dict, path: Path) -> None:
    """An `adapter_payload` as a peft adapter folder (what `LoRARequest` and `PeftModel` load)."""
    import json

    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file(payload["state"], str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps(payload["config"], indent=2, default=str))
