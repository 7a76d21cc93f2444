"""Log-probs at loss positions and the PPO optimisation step (DESIGN §6).

`compute_logprobs` is `agentrl.policy.logprobs.forward_logprobs` on a micro-batch (the
same code that defines the sampler's stored log-probs): it runs the transformer body
(LoRA layers live inside it) and applies the LM head only at the positions that predict
action tokens, since the full-vocabulary projection at every position is the dominant cost
of a naive loop on a small model (FACTS: ~40 vs ~238 tokens/s on CPU for SmolLM2-135M).

`Learner.update` does `epochs` passes over one iteration's steps: micro-batches by
token budget, gradient accumulation to `tokens_per_step`, token-mean PPO-clip loss,
grad-norm clip, AdamW on the adapter's parameters with linear warm-up.

Numerics: every forward runs under `autocast_for(device, compute_dtype)` (the model config's
`compute_dtype`, resolved by `agentrl.policy.model.resolve_compute_dtype`). The PPO ratio's old
log-probs are the engine's stored ones, or (`recompute_old`, `LearnerConfig.old_logprobs`) the
learner's own, computed before the passes (no grad, eval mode, the adapter as it is before the
update), with the pg term of each token weighted by the truncated importance ratio
w = min(exp(learner_old - engine), tis_cap) (TIS: the rollout engine's sampling distribution differs
from the learner's by its numerics, e.g. vLLM in bf16 vs the learner in fp32).
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch
from peft import PeftModel

from agentrl.config import LearnerConfig
from agentrl.learner.batch import MicroBatch, StepSample, build_sequences, count_tokens, pack
from agentrl.learner.lora import POLICY, adapter_parameters, adapters_disabled, add_lora, set_trainable
from agentrl.learner.ppo import ppo_loss
from agentrl.policy.logprobs import (  # noqa: F401 (re-exported)
    autocast_for,
    body_and_head,
    eval_mode,
    forward_logprobs,
)


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
    compute_dtype: torch.dtype | None = None,
) -> list[list[float]]:
    """Per-sample, per-action-token log-probs under the model's active adapter (no grad), the
    forwards under `autocast_for(device, compute_dtype)`.

    E.g. `with use_adapter(model, "prm"): sample_logprobs(...)` for an implicit PRM.
    """
    device = next(model.parameters()).device
    out = [[0.0] * len(s.action_ids) for s in samples]
    for mb in pack(build_sequences(samples, layout), micro_batch_tokens):
        mb = mb.to(device)
        with autocast_for(device, compute_dtype):
            logp, _ = compute_logprobs(model, mb, temperature)
        for i, j, v in zip(mb.sample_index.tolist(), mb.token_index.tolist(), logp.float().tolist()):
            out[i][j] = v
    return out


def warmup_lambda(warmup_steps: int):
    """LR multiplier at optimiser step s (0-based): linear warm-up to 1 over `warmup_steps`."""

    def f(step: int) -> float:
        return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)

    return f


def optimiser_steps(order: list[int], batches: list[MicroBatch], tokens_per_step: int) -> list[list[int]]:
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


def optimiser_step(params, optimizer, scheduler, max_grad_norm: float) -> float:
    """Clip the accumulated gradients, step the optimiser and the LR schedule, zero the gradients;
    returns the gradient norm before clipping."""
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def resolve_old_logprobs(cfg: LearnerConfig, engine: str, same_numerics: bool) -> bool:
    """Whether the learner recomputes the old log-probs (`Learner(recompute_old=...)`).

    `cfg.old_logprobs`: engine -> False, recompute -> True; auto -> False only for the HF engine
    (`engine == "hf"`) running with the learner's own compute dtype (`same_numerics`: its stored
    log-probs are then the learner's numbers, to float tolerance), True for any other engine.
    """
    if cfg.old_logprobs == "engine":
        return False
    if cfg.old_logprobs == "recompute":
        return True
    return not (engine == "hf" and same_numerics)


_MEAN_KEYS = ("pg_loss", "kl", "entropy", "clip_frac", "dual_clip_frac", "ratio_mean", "approx_kl")


class Learner:
    """PPO-clip on a LoRA adapter of `model` (wrapped with `add_lora` if it is not a PeftModel yet).

    `compute_dtype`: the autocast dtype of every forward (`autocast_for`; None = bf16 on CUDA, fp32 on
    CPU). `recompute_old`: the PPO ratio's old log-probs are the learner's own, with TIS weights (see
    the module docstring); False = the engine's stored ones (`resolve_old_logprobs` decides).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: LearnerConfig,
        temperature: float = 1.0,
        device: torch.device | str | None = None,
        adapter: str = POLICY,
        compute_dtype: torch.dtype | None = None,
        recompute_old: bool = False,
    ):
        if not isinstance(model, PeftModel) or adapter not in model.peft_config:
            model = add_lora(model, cfg, adapter)
        set_trainable(model, adapter)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device)
        self.cfg = cfg
        self.temperature = float(temperature)
        self.adapter = adapter
        self.compute_dtype = compute_dtype
        self.recompute_old = bool(recompute_old)
        self.params = adapter_parameters(model, adapter)
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_lambda(cfg.warmup_steps))

    def _forward(self, mb: MicroBatch) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast_for(self.device, self.compute_dtype):
            return compute_logprobs(self.model, mb, self.temperature, entropy_grad=self.cfg.entropy_coef > 0)

    @torch.no_grad()
    def _reference(self, mb: MicroBatch) -> torch.Tensor:
        with adapters_disabled(self.model), autocast_for(self.device, self.compute_dtype):
            return compute_logprobs(self.model, mb, self.temperature)[0].float()

    @torch.no_grad()
    def _old_logprobs(self, batches: list[MicroBatch]) -> tuple[list[MicroBatch], list[torch.Tensor], dict]:
        """Recompute pass: (batches with the learner's old log-probs, TIS weights, mismatch metrics).

        No grad, eval mode, the adapter as it is now (before the update), the same forward as the
        PPO passes. Metrics over all loss tokens, with d = learner_old - engine and r = exp(d):
        mismatch_abs = mean |d|, mismatch_kl = mean (r - 1 - d) (k3 estimate of KL(engine || learner)),
        tis_clip_frac = share of tokens with r > tis_cap, old_logprobs_s = the pass's seconds.
        """
        t0 = time.perf_counter()
        cap = float(self.cfg.tis_cap)
        out, weights, d_all = [], [], []
        with eval_mode(self.model), autocast_for(self.device, self.compute_dtype):
            for mb in batches:
                old = compute_logprobs(self.model, mb, self.temperature)[0].float()
                d = old - mb.old_logp.float()
                weights.append(torch.exp(d).clamp(max=cap))
                d_all.append(d)
                out.append(replace(mb, old_logp=old))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        d = torch.cat(d_all).double()
        r = torch.exp(d)
        metrics = {
            "mismatch_abs": float(d.abs().mean()),
            "mismatch_kl": float((r - 1.0 - d).mean()),
            "tis_clip_frac": float((r > cap).double().mean()),
            "old_logprobs_s": time.perf_counter() - t0,
        }
        return out, weights, metrics

    def update(self, samples: list[StepSample]) -> dict[str, float]:
        """`epochs` PPO passes over `samples` (micro-batch order reshuffled each pass).

        Returns: loss, pg_loss, kl, entropy, clip_frac, dual_clip_frac, ratio_mean,
        approx_kl (token-means over all passes), ratio_min/max, grad_norm (mean over
        optimiser steps), grad_norm_max, lr, steps (optimiser steps), micro_batches,
        tokens / loss_tokens / padded_tokens (processed, all passes), time_s, tokens_per_s.
        With `recompute_old` also mismatch_abs, mismatch_kl, tis_clip_frac, old_logprobs_s
        (`_old_logprobs`; time_s includes the recompute pass).
        """
        cfg = self.cfg
        t0 = time.perf_counter()
        batches = [b.to(self.device) for b in pack(build_sequences(samples, cfg.layout), cfg.micro_batch_tokens)]
        counts = count_tokens(batches)
        if not batches:
            return {"steps": 0, "tokens": 0, "loss_tokens": 0}
        refs = [self._reference(b) for b in batches] if cfg.kl_coef > 0 else [None] * len(batches)
        weights: list[torch.Tensor | None] = [None] * len(batches)
        old_metrics: dict[str, float] = {}
        if self.recompute_old:
            batches, weights, old_metrics = self._old_logprobs(batches)

        sums = dict.fromkeys(_MEAN_KEYS, 0.0)
        loss_sum, n_tok, ratio_min, ratio_max, norms = 0.0, 0.0, float("inf"), float("-inf"), []
        was_training = self.model.training
        self.model.train()
        try:
            for _ in range(cfg.epochs):
                order = torch.randperm(len(batches)).tolist()
                for step in optimiser_steps(order, batches, cfg.tokens_per_step):
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
                            weight=weights[i],
                        )
                        loss.backward()
                        loss_sum += float(loss.detach()) * step_tokens
                        n_tok += m["tokens"]
                        for k in _MEAN_KEYS:
                            sums[k] += m[k] * m["tokens"]
                        ratio_min, ratio_max = min(ratio_min, m["ratio_min"]), max(ratio_max, m["ratio_max"])
                    norms.append(optimiser_step(self.params, self.optimizer, self.scheduler, cfg.max_grad_norm))
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
            **old_metrics,
        )
        return metrics
