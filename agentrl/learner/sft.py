"""Supervised fine-tuning of the LoRA policy on demonstrations (`agentrl sft`, DESIGN warm start).

The loss is the token-mean negative log-likelihood of the demonstrated action tokens given the
prompt; prompt tokens carry no loss. The log-prob is `compute_logprobs`' (the one definition the
sampler and the PPO learner share): in admissible mode renormalised over the command trie's allowed
ids, i.e. the probability the constrained sampler gives the demonstrated command; in free mode over
the whole vocabulary. Temperature 1: SFT shapes the model's own distribution.

One `epoch` is a pass over every demonstration: micro-batches by token budget (the learner's
`layout`, `micro_batch_tokens`), in an order drawn from a seeded generator (so a resumed run
redoes an epoch exactly), gradient accumulation to `tokens_per_step`, grad-norm clip, AdamW on the
adapter with linear warm-up.
"""

from __future__ import annotations

import time

import torch
from peft import PeftModel

from agentrl.config import LearnerConfig
from agentrl.learner.batch import StepSample, build_sequences, count_tokens, pack
from agentrl.learner.lora import POLICY, adapter_parameters, add_lora, set_trainable
from agentrl.learner.update import autocast_for, compute_logprobs, optimiser_step, optimiser_steps, warmup_lambda
from agentrl.policy.teacher import Demonstration


def demo_samples(demos: list[Demonstration]) -> list[StepSample]:
    """Demonstrations as the learner's step samples (advantage and old log-probs unused: 0)."""
    return [
        StepSample(d.episode, d.t, d.prompt_ids, d.action_ids, [0.0] * len(d.action_ids), 0.0, d.allowed) for d in demos
    ]


class SFTLearner:
    """NLL of the demonstrated actions on a LoRA adapter of `model` (see the module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: LearnerConfig,
        lr: float | None = None,
        compute_dtype: torch.dtype | None = None,
        adapter: str = POLICY,
    ):
        if not isinstance(model, PeftModel) or adapter not in model.peft_config:
            model = add_lora(model, cfg, adapter)
        set_trainable(model, adapter)
        self.model, self.cfg, self.compute_dtype = model, cfg, compute_dtype
        self.device = next(model.parameters()).device
        self.params = adapter_parameters(model, adapter)
        self.optimizer = torch.optim.AdamW(self.params, lr=lr or cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_lambda(cfg.warmup_steps))

    def epoch(self, samples: list[StepSample], seed: int) -> dict[str, float]:
        """One pass over `samples`; returns loss (mean NLL per action token), action_prob (mean
        probability of a whole demonstrated action), grad_norm (mean over steps), lr, steps,
        micro_batches, tokens, loss_tokens, time_s, tokens_per_s."""
        cfg = self.cfg
        t0 = time.perf_counter()
        batches = pack(build_sequences(samples, cfg.layout), cfg.micro_batch_tokens)
        if not batches:
            return {"steps": 0, "tokens": 0, "loss_tokens": 0}
        counts = count_tokens(batches)
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(batches), generator=gen).tolist()
        nll_sum, n_tok, norms = 0.0, 0, []
        action_logp = torch.zeros(len(samples), dtype=torch.float64)
        was_training = self.model.training
        self.model.train()
        try:
            for step in optimiser_steps(order, batches, cfg.tokens_per_step):
                step_tokens = sum(batches[i].num_loss_tokens for i in step)
                for i in step:
                    mb = batches[i].to(self.device)
                    with autocast_for(self.device, self.compute_dtype):
                        logp, _ = compute_logprobs(self.model, mb, 1.0)
                    logp = logp.float()
                    loss = -logp.sum() / step_tokens
                    loss.backward()
                    nll_sum -= float(logp.detach().sum())
                    n_tok += int(logp.numel())
                    action_logp.index_add_(0, mb.sample_index.cpu(), logp.detach().cpu().double())
                norms.append(optimiser_step(self.params, self.optimizer, self.scheduler, cfg.max_grad_norm))
        finally:
            self.model.train(was_training)
        elapsed = time.perf_counter() - t0
        return {
            "loss": nll_sum / max(1, n_tok),
            "action_prob": float(action_logp.exp().mean()),
            "grad_norm": sum(norms) / len(norms),
            "lr": self.scheduler.get_last_lr()[0],
            "steps": len(norms),
            "micro_batches": len(batches),
            "tokens": counts["tokens"],
            "loss_tokens": counts["loss_tokens"],
            "time_s": elapsed,
            "tokens_per_s": counts["tokens"] / elapsed if elapsed > 0 else 0.0,
        }
