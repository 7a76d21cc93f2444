"""The PPO-clip loss with dual clip, k3 KL and entropy bonus (ARCHITECTURE.md §7). Pure torch.

Per token i (with ratio r = exp(logp - old_logp), advantage A, weight w, 1 by default):

    pg_i = max(-r*A, -clip(r, 1-eps, 1+eps)*A)            # PPO-clip (Schulman et al. 2017)
    pg_i = min(pg_i, -c*A)          if A < 0 and c set     # dual clip (Ye et al. 2020), c > 1
    pg_i = w_i * pg_i                                      # per-token weight (detached), pg term only
    kl_i = exp(ref - logp) - (ref - logp) - 1              # k3 estimator of KL(pi || ref), >= 0
    loss = sum_i m_i * (pg_i + kl_coef*kl_i - entropy_coef*H_i) / N

The learner's weight is the truncated importance ratio (TIS) w_i = min(exp(old_i - engine_i), C)
between its own recomputed old log-probs and the rollout engine's (`LearnerConfig.old_logprobs`).

The sum runs over every loss token of the batch and N is the number of loss tokens
(token-mean: a long action weighs more than a short one, no per-sequence mean). When
gradients are accumulated over micro-batches, pass the optimiser step's total loss
tokens as `num_tokens` so the summed micro-batch losses are the step's token-mean.
"""

from __future__ import annotations

import torch


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum()


def ppo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    dual_clip: float | None = 3.0,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    num_tokens: float | None = None,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip loss over loss tokens (all tensors the same shape; `mask` 1 on loss tokens).

    `weight`: per-token factor of the policy-gradient term only (detached; None = 1), e.g. TIS weights.

    Returns (loss, metrics). Metrics are plain floats, token-means over `mask`
    (`tokens` is the count, for weighting means across micro-batches):
    pg_loss (weighted), kl (k3 to the reference, 0 without ref_logp), entropy, clip_frac (tokens
    whose clipped term was chosen, i.e. with zero PPO gradient), dual_clip_frac,
    ratio_mean/min/max, approx_kl (k3 estimate of KL(old || new)).
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (got {dual_clip})")
    mask = mask.to(torch.float32)
    logp = logp.float()
    old_logp = old_logp.float()
    adv = adv.float()
    n = mask.sum()
    denom = n.clamp(min=1.0) if num_tokens is None else torch.as_tensor(float(num_tokens))

    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    pg = torch.maximum(pg1, pg2)
    clipped = (pg2 > pg1).float()
    dual = torch.zeros_like(pg)
    if dual_clip is not None:
        pg3 = -adv * dual_clip
        dual = ((adv < 0) & (pg > pg3)).float()
        pg = torch.where(adv < 0, torch.minimum(pg, pg3), pg)
    if weight is not None:
        pg = pg * weight.detach().float()

    per_token = pg
    kl = torch.zeros_like(pg)
    if ref_logp is not None:
        d = ref_logp.float() - logp
        kl = torch.exp(d) - d - 1.0
        if kl_coef:
            per_token = per_token + kl_coef * kl
    ent = torch.zeros_like(pg) if entropy is None else entropy.float()
    if entropy is not None and entropy_coef:
        per_token = per_token - entropy_coef * ent
    loss = masked_sum(per_token, mask) / denom

    with torch.no_grad():
        cnt = n.clamp(min=1.0)
        on = mask > 0
        r_on = ratio[on]
        metrics = {
            "pg_loss": float(masked_sum(pg, mask) / cnt),
            "kl": float(masked_sum(kl, mask) / cnt),
            "entropy": float(masked_sum(ent, mask) / cnt),
            "clip_frac": float(masked_sum(clipped, mask) / cnt),
            "dual_clip_frac": float(masked_sum(dual, mask) / cnt),
            "ratio_mean": float(masked_sum(ratio, mask) / cnt),
            "ratio_min": float(r_on.min()) if r_on.numel() else 1.0,
            "ratio_max": float(r_on.max()) if r_on.numel() else 1.0,
            "approx_kl": float(masked_sum(ratio - 1.0 - log_ratio, mask) / cnt),
            "tokens": float(n),
        }
    return loss, metrics
