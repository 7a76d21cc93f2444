"""The LLM policy on the HF engine: `HFPolicy(model, tokenizer, rollout_cfg, ...)`.

A convenience for code and tests that hold a transformers model in this process: it is
`LLMPolicy(HFEngine(model, ...), ...)` (`agentrl.policy.llm`, `agentrl.engines.hf`).
"""

from __future__ import annotations

import torch

from agentrl.config import RolloutConfig
from agentrl.engines.hf import HFEngine
from agentrl.policy.llm import LLMPolicy


def HFPolicy(  # noqa: N802 (a constructor by use)
    model,
    tokenizer,
    rollout_cfg: RolloutConfig,
    greedy: bool = False,
    seed: int = 0,
    kv_reuse: bool = True,
    compute_dtype: torch.dtype | None = None,
) -> LLMPolicy:
    engine = HFEngine(
        model, tokenizer, rollout_cfg.batch_size, kv_reuse=kv_reuse, seed=seed, compute_dtype=compute_dtype
    )
    return LLMPolicy(engine, tokenizer, rollout_cfg, greedy=greedy, seed=seed)
