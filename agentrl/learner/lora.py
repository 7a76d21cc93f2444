"""LoRA adapters on the policy model via peft (ARCHITECTURE.md §7).

The policy trains one LoRA adapter named `POLICY` ("policy"). More adapters can live
on the same base weights (peft multi-adapter), e.g. an implicit PRM for `oprl`:
`add_adapter(model, "prm", cfg)`, then run it with `with use_adapter(model, "prm"):`.
The KL reference is the same model with every adapter switched off
(`with adapters_disabled(model):`), so there is never a second copy of the weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from agentrl.config import LearnerConfig
from agentrl.errors import UserError

POLICY = "policy"


def num_layers(model: torch.nn.Module) -> int:
    """Number of transformer blocks of a HF causal LM (or of the model under a PeftModel)."""
    config = model.get_base_model().config if isinstance(model, PeftModel) else model.config
    n = getattr(config, "num_hidden_layers", None)
    if n is None:
        raise UserError("cannot tell the model's number of layers (config has no num_hidden_layers)")
    return int(n)


def resolve_layers(layers: list[int] | None, n_layers: int) -> list[int] | None:
    """`learner.layers` -> sorted absolute layer indices; negative indices count from the top.

    `[-8, -7, ..., -1]` on a 30-layer model is `[22, ..., 29]`; None means every layer.
    """
    if layers is None:
        return None
    out = set()
    for i in layers:
        j = i + n_layers if i < 0 else i
        if not 0 <= j < n_layers:
            raise UserError(f"learner.layers: layer {i} is out of range for a model with {n_layers} layers")
        out.add(j)
    if not out:
        raise UserError("learner.layers: empty list (use null for all layers)")
    return sorted(out)


def lora_config(model: torch.nn.Module, cfg: LearnerConfig) -> LoraConfig:
    """The peft LoraConfig for `cfg` on `model` (layer indices resolved)."""
    return LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        layers_to_transform=resolve_layers(cfg.layers, num_layers(model)),
        bias="none",
        task_type="CAUSAL_LM",
    )


def add_lora(model: torch.nn.Module, cfg: LearnerConfig, name: str = POLICY) -> PeftModel:
    """Wrap a HF causal LM in a PeftModel with one trainable LoRA adapter `name`.

    Base weights are frozen; only the adapter's LoRA matrices require grad.
    """
    if isinstance(model, PeftModel):  # already wrapped: add `name` if missing, make it the trained one
        if name not in model.peft_config:
            add_adapter(model, name, cfg)
        model.set_adapter(name)
        set_trainable(model, name)
        return model
    try:
        peft_model = get_peft_model(model, lora_config(model, cfg), adapter_name=name)
    except ValueError as e:  # e.g. target modules not found in the model
        raise UserError(f"learner: cannot add LoRA to this model: {str(e).splitlines()[0]}") from None
    set_trainable(peft_model, name)
    return peft_model


def add_adapter(model: PeftModel, name: str, cfg: LearnerConfig) -> None:
    """Add a second (third, ...) LoRA adapter `name` on the same base weights.

    The active adapter and which parameters require grad are left unchanged; use
    `use_adapter` to run with it and `set_trainable` to train it.
    """
    if name in model.peft_config:
        raise ValueError(f"adapter '{name}' already exists")
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    model.add_adapter(name, lora_config(model, cfg))
    for n, p in model.named_parameters():
        p.requires_grad_(before.get(n, False))


def adapter_parameters(model: PeftModel, name: str = POLICY) -> list[torch.nn.Parameter]:
    """The LoRA parameters of adapter `name` (in a stable order)."""
    if name not in model.peft_config:
        raise ValueError(f"no adapter named '{name}' (have: {', '.join(model.peft_config)})")
    tag = f".{name}."
    params = [p for n, p in model.named_parameters() if "lora_" in n and tag in n]
    if not params:
        raise ValueError(f"adapter '{name}' has no parameters")
    return params


def set_trainable(model: PeftModel, names: str | list[str] = POLICY) -> None:
    """Make exactly the LoRA parameters of adapter(s) `names` require grad; freeze all else."""
    names = [names] if isinstance(names, str) else list(names)
    keep = {id(p) for name in names for p in adapter_parameters(model, name)}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


@contextmanager
def use_adapter(model: PeftModel, name: str) -> Iterator[PeftModel]:
    """Run with adapter `name` active; restores the previous adapter and requires_grad flags."""
    previous = model.active_adapter
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.set_adapter(name)
    try:
        yield model
    finally:
        model.set_adapter(previous)
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def adapters_disabled(model: PeftModel) -> Iterator[PeftModel]:
    """Run the bare base model (the KL reference): every adapter switched off."""
    with model.disable_adapter():
        yield model
