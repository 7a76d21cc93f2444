"""Log-probs at loss positions and the PPO optimisation step (DESIGN §6).

`compute_logprobs` is `agentrl.policy.logprobs.forward_logprobs` on a micro-batch (the
same code that defines the sampler's stored log-probs): it runs the transformer body
(LoRA layers live inside it) and applies the LM head only at the positions that predict
action tokens, since the full-vocabulary projection at every position is the dominant cost
of a naive loop on a small model (FACTS: ~40 vs ~238 tokens/s on CPU for SmolLM2-135M).

`Learner.update` does `epochs` passes over one iteration's steps: micro-batches by
token budget, gradient accumulation to `tokens_per_step`, token-mean PPO-clip loss,
grad-norm clip, AdamW on the adapter's parameters with linear warm-up.
"""

from __future__ import annotations

import time

import torch
from peft import PeftModel

from agentrl.config import LearnerConfig
from agentrl.learner.batch import MicroBatch, StepSample, build_sequences, count_tokens, pack
from agentrl.learner.lora import POLICY, adapter_parameters, adapters_disabled, add_lora, set_trainable
from agentrl.learner.ppo import ppo_loss
from agentrl.policy.logprobs import autocast_for, body_and_head, forward_logprobs  # noqa: F401 (re-exported)


def compute_logprobs(
    model: torch.nn.Module, mb: MicroBatch, temperature: float = 1.0, entropy_grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each target token and the entropy of its distribution, both [N].

    `forward_logprobs`: logits `lm_head(hidden[b, pos]) / temperature` at the loss positions
    only; in admissible mode (mb.allowed_ids set) renormalised over the allowed ids, the same
    quantity the constrained sampler stored. The entropy is detached unless `entropy_grad`.
    """
    allowed = (mb.allowed_ids, mb.has_allowed) if mb.allowed_ids is not None else None
    logp, logp_all = forward_logprobs(
        model, mb.input_ids, mb.attention_mask, mb.batch_index, mb.positions, mb.targets, allowed, temperature
    )
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        finite = torch.where(torch.isfinite(logp_all), logp_all, torch.zeros_like(logp_all))
        entropy = -(finite.exp() * finite).sum(-1)
    return logp, entropy


@torch.no_grad()
def sample_logprobs(
    model: torch.nn.Module,
    samples: list[StepSample],
    temperature: float = 1.0,
    layout: str = "concat",
    micro_batch_tokens: int = 2048,
) -> list[list[float]]:
    """Per-sample, per-action-token log-probs under the model's active adapter (no grad).

    E.g. `with use_adapter(model, "prm"): sample_logprobs(...)` for an implicit PRM.
    """
    device = next(model.parameters()).device
    out = [[0.0] * len(s.action_ids) for s in samples]
    for mb in pack(build_sequences(samples, layout), micro_batch_tokens):
        mb = mb.to(device)
        with autocast_for(device):
            logp, _ = compute_logprobs(model, mb, temperature)
        for i, j, v in zip(mb.sample_index.tolist(), mb.token_index.tolist(), logp.float().tolist()):
            out[i][j] = v
    return out


def warmup_lambda(warmup_steps: int):
    """LR multiplier at optimiser step s (0-based): linear warm-up to 1 over `warmup_steps`."""

    def f(step: int) -> float:
        return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)

    return f


def _steps(order: list[int], batches: list[MicroBatch], tokens_per_step: int) -> list[list[int]]:
    """Group micro-batch indices into optimiser steps of at least `tokens_per_step` tokens (the last may be short)."""
    steps, cur, n = [], [], 0
    for i in order:
        cur.append(i)
        n += batches[i].num_tokens
        if n >= tokens_per_step:
            steps.append(cur)
            cur, n = [], 0
    if cur:
        steps.append(cur)
    return steps


_MEAN_KEYS = ("pg_loss", "kl", "entropy", "clip_frac", "dual_clip_frac", "ratio_mean", "approx_kl")


class Learner:
    """PPO-clip on a LoRA adapter of `model` (wrapped with `add_lora` if it is not a PeftModel yet)."""

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: LearnerConfig,
        temperature: float = 1.0,
        device: torch.device | str | None = None,
        adapter: str = POLICY,
    ):
        if not isinstance(model, PeftModel) or adapter not in model.peft_config:
            model = add_lora(model, cfg, adapter)
        set_trainable(model, adapter)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device)
        self.cfg = cfg
        self.temperature = float(temperature)
        self.adapter = adapter
        self.params = adapter_parameters(model, adapter)
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_lambda(cfg.warmup_steps))

    def _forward(self, mb: MicroBatch) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast_for(self.device):
            return compute_logprobs(self.model, mb, self.temperature, entropy_grad=self.cfg.entropy_coef > 0)

    @torch.no_grad()
    def _reference(self, mb: MicroBatch) -> torch.Tensor:
        with adapters_disabled(self.model), autocast_for(self.device):
            return compute_logprobs(self.model, mb, self.temperature)[0].float()

    def update(self, samples: list[StepSample]) -> dict[str, float]:
        """`epochs` PPO passes over `samples` (micro-batch order reshuffled each pass).

        Returns: loss, pg_loss, kl, entropy, clip_frac, dual_clip_frac, ratio_mean,
        approx_kl (token-means over all passes), ratio_min/max, grad_norm (mean over
        optimiser steps), grad_norm_max, lr, steps (optimiser steps), micro_batches,
        tokens / loss_tokens / padded_tokens (processed, all passes), time_s, tokens_per_s.
        """
        cfg = self.cfg
        t0 = time.perf_counter()
        batches = [b.to(self.device) for b in pack(build_sequences(samples, cfg.layout), cfg.micro_batch_tokens)]
        counts = count_tokens(batches)
        if not batches:
            return {"steps": 0, "tokens": 0, "loss_tokens": 0}
        refs = [self._reference(b) for b in batches] if cfg.kl_coef > 0 else [None] * len(batches)

        sums = dict.fromkeys(_MEAN_KEYS, 0.0)
        loss_sum, n_tok, ratio_min, ratio_max, norms = 0.0, 0.0, float("inf"), float("-inf"), []
        was_training = self.model.training
        self.model.train()
        try:
            for _ in range(cfg.epochs):
                order = torch.randperm(len(batches)).tolist()
                for step in _steps(order, batches, cfg.tokens_per_step):
                    step_tokens = sum(batches[i].num_loss_tokens for i in step)
                    for i in step:
                        mb = batches[i]
                        logp, ent = self._forward(mb)
                        loss, m = ppo_loss(
                            logp,
                            mb.old_logp,
                            mb.adv,
                            torch.ones_like(mb.old_logp),
                            clip_eps=cfg.clip_eps,
                            dual_clip=cfg.dual_clip,
                            ref_logp=refs[i],
                            kl_coef=cfg.kl_coef,
                            entropy=ent,
                            entropy_coef=cfg.entropy_coef,
                            num_tokens=step_tokens,
                        )
                        loss.backward()
                        loss_sum += float(loss.detach()) * step_tokens
                        n_tok += m["tokens"]
                        for k in _MEAN_KEYS:
                            sums[k] += m[k] * m["tokens"]
                        ratio_min, ratio_max = min(ratio_min, m["ratio_min"]), max(ratio_max, m["ratio_max"])
                    norms.append(float(torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)))
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
        finally:
            self.model.train(was_training)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - t0
        tokens = counts["tokens"] * cfg.epochs
        metrics = {k: v / n_tok for k, v in sums.items()}
        metrics.update(
            loss=loss_sum / n_tok,
            ratio_min=ratio_min,
            ratio_max=ratio_max,
            grad_norm=sum(norms) / len(norms),
            grad_norm_max=max(norms),
            lr=self.scheduler.get_last_lr()[0],
            steps=len(norms),
            micro_batches=len(batches) * cfg.epochs,
            tokens=tokens,
            loss_tokens=counts["loss_tokens"] * cfg.epochs,
            padded_tokens=counts["padded_tokens"] * cfg.epochs,
            time_s=elapsed,
            tokens_per_s=tokens / elapsed if elapsed > 0 else 0.0,
        )
        return metrics
