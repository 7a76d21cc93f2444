"""Learner: LoRA via peft, PPO-clip, sequence layouts, checkpoints (ARCHITECTURE.md §7)."""

from agentrl.learner.batch import MicroBatch, StepSample, build_sequences, count_tokens, make_micro_batches, pack
from agentrl.learner.checkpoint import LoadedCheckpoint, load_adapter_for_eval, load_checkpoint, save_checkpoint
from agentrl.learner.lora import (
    POLICY,
    adapter_parameters,
    adapters_disabled,
    add_adapter,
    add_lora,
    set_trainable,
    use_adapter,
)
from agentrl.learner.ppo import ppo_loss
from agentrl.learner.update import Learner, compute_logprobs, sample_logprobs

__all__ = [
    "POLICY",
    "Learner",
    "LoadedCheckpoint",
    "MicroBatch",
    "StepSample",
    "adapter_parameters",
    "adapters_disabled",
    "add_adapter",
    "add_lora",
    "build_sequences",
    "compute_logprobs",
    "count_tokens",
    "load_adapter_for_eval",
    "load_checkpoint",
    "make_micro_batches",
    "pack",
    "ppo_loss",
    "sample_logprobs",
    "save_checkpoint",
    "set_trainable",
    "use_adapter",
]
