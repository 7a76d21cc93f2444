"""OPRL's implicit PRM: signals["logratio"] from a second LoRA adapter "prm".

The PRM is a second LoRA adapter "prm" on the policy's frozen base model (same shape as the
policy's). signals["logratio"] = Σ_tokens log π_prm − stored rollout log-prob per step,
computed at the rollout temperature and, in admissible mode, renormalised over the allowed
tokens exactly like the learner. It is trained with the pairwise `prm_loss_torch` (its own
AdamW on the prm adapter only; the numpy value of the same loss is
`agentrl.credit.oprl.OPRL.prm_loss`). Its weights travel in the checkpoint's adapter dir
(every adapter is saved); `state_dict` holds its optimizer. The advantages are in
`agentrl.credit.oprl`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from agentrl.credit.base import check_float, set_params
from agentrl.credit.oprl import OPRL, preference_pairs
from agentrl.errors import UserError
from agentrl.learner.batch import StepSample, make_micro_batches
from agentrl.learner.lora import adapter_parameters, add_adapter, set_trainable, use_adapter
from agentrl.learner.samples import episode_samples
from agentrl.learner.update import autocast_for, compute_logprobs, sample_logprobs
from agentrl.policy.logprobs import eval_mode
from agentrl.signals.base import batch_key, check_int, episode_return, set_step_signal
from agentrl.store.records import EpisodeRecord

PRM = "prm"


@dataclass(frozen=True)
class OPRLParams:
    """The PRM's parameters (recipe `credit:` keys beside the method's own)."""

    method: ClassVar[str] = "oprl"
    prm_lr: float | None = None  # None: the learner's lr
    prm_epochs: int = 1

    def __post_init__(self) -> None:
        m = self.method
        set_params(
            self,
            prm_lr=None if self.prm_lr is None else check_float(m, "prm_lr", self.prm_lr, 1e-12),
            prm_epochs=check_int(m, "prm_epochs", self.prm_epochs),
        )


def prm_loss_torch(
    step_logratios: list[torch.Tensor], groups: list[str], returns: Sequence[float], beta: float
) -> torch.Tensor:
    """The PRM loss from per-episode tensors of step logratios ([T_i] each).

    `Q(τ) = β · mean_t logratio_t`; mean over (won, lost) pairs of a group of `−log σ(Q⁺ − Q⁻)`
    (as `agentrl.credit.oprl.prm_loss_np`). Differentiable in the logratios (i.e. in log π_prm).
    With no (won, lost) pair it returns a zero that is still connected to the inputs, so
    backward() works."""
    if len(step_logratios) != len(groups) or len(groups) != len(returns):
        raise ValueError("prm_loss_torch: step_logratios, groups and returns must have the same length")
    if not step_logratios:
        return torch.zeros(())
    q = torch.stack([beta * x.mean() if x.numel() else x.sum() * 0.0 for x in step_logratios])
    won, lost = preference_pairs(groups, [float(r) for r in returns])
    if not won:
        return q.sum() * 0.0
    w = torch.tensor(won, device=q.device)
    l = torch.tensor(lost, device=q.device)  # noqa: E741
    return -F.logsigmoid(q[w] - q[l]).mean()


# ---------------------------------------------------------------- the provider


class OPRLProvider:
    """Implicit PRM as a second LoRA adapter "prm" (signals["logratio"])."""

    Params = OPRLParams

    def __init__(self, model, tokenizer, recipe, params: OPRLParams | None = None, method: OPRL | None = None):
        p = params or OPRLParams()
        self.model, self.tokenizer, self.recipe = model, tokenizer, recipe
        self.settings = p
        self.beta = (method if method is not None else OPRL()).beta  # the method's beta: Q(τ) = β · mean logratio
        self.epochs = p.prm_epochs
        lr = recipe.learner.lr if p.prm_lr is None else p.prm_lr
        if PRM not in model.peft_config:  # same LoRA shape as the policy; requires_grad flags unchanged
            add_adapter(model, PRM, recipe.learner)
        self.params = adapter_parameters(model, PRM)
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=recipe.learner.weight_decay)
        self._pending: tuple | None = None  # (batch key, recs, samples, where, logratios) of the last compute()

    def _samples(self, recs) -> tuple[list[StepSample], list[tuple[int, int]]]:
        """The steps' samples (as the learner's, advantage 0) and their (episode index, step index)."""
        samples = episode_samples(recs, None, self.tokenizer, self.recipe.rollout.action_mode)
        return samples, [(s.episode, s.t) for s in samples]

    @torch.no_grad()
    def logratios(self, recs: list[EpisodeRecord], samples=None, where=None) -> list[list[float]]:
        """Per episode, per step: Σ_tokens log π_prm − stored log-prob (0 for a step without action tokens)."""
        if samples is None:
            samples, where = self._samples(recs)
        r = self.recipe
        with use_adapter(self.model, PRM), eval_mode(self.model):
            lp = sample_logprobs(
                self.model, samples, r.rollout.temperature, r.learner.layout, r.learner.micro_batch_tokens
            )
        out = [[0.0] * len(rec.steps) for rec in recs]
        for s, v, (e, t) in zip(samples, lp, where):
            out[e][t] = math.fsum(v) - math.fsum(s.old_logprobs)
        return out

    def compute(self, recs: list[EpisodeRecord]) -> dict:
        samples, where = self._samples(recs)
        lr = self.logratios(recs, samples, where)
        for rec, row in zip(recs, lr):
            for s, x in zip(rec.steps, row):
                set_step_signal(s, "logratio", x)
        self._pending = (batch_key(recs), recs, samples, where, lr)
        flat = [abs(x) for row in lr for x in row]
        return {"logratio_abs": sum(flat) / len(flat) if flat else 0.0}

    def update(self, recs: list[EpisodeRecord]) -> dict:
        """`epochs` full-batch AdamW steps on the PRM loss; the "policy" adapter stays the active one."""
        if self._pending is not None and self._pending[0] == batch_key(recs):
            _, _, samples, where, lr = self._pending  # the PRM has not changed since compute()
        else:
            samples, where = self._samples(recs)
            lr = None
        self._pending = None
        groups = [r.group_id for r in recs]
        returns = [episode_return(r) for r in recs]
        won, _ = preference_pairs(groups, returns)
        metrics = {"prm_loss": 0.0, "prm_pairs": float(len(won))}
        if not won or not samples:
            return metrics
        cfg = self.recipe.learner
        for epoch in range(self.epochs):
            if lr is None or epoch > 0:
                lr = self.logratios(recs, samples, where)
            # dLoss/dlogratio per step from the exact loss, then a surrogate per micro-batch:
            # Σ_tokens g_step · log π_prm(token) has the same gradient in the PRM's weights, with
            # memory bounded by one micro-batch instead of the whole batch's graph.
            leaves = [torch.tensor(row, dtype=torch.float32, requires_grad=True) for row in lr]
            loss = prm_loss_torch(leaves, groups, returns, self.beta)
            loss.backward()
            if epoch == 0:
                metrics["prm_loss"] = float(loss.detach())
            g = [leaf.grad.tolist() for leaf in leaves]
            step_grad = [g[e][t] for e, t in where]
            keep = [i for i, x in enumerate(step_grad) if x != 0.0]
            if not keep:
                break
            self._step([samples[i] for i in keep], [step_grad[i] for i in keep], cfg)
        return metrics

    def _step(self, samples: list[StepSample], grads: list[float], cfg) -> None:
        device = next(self.model.parameters()).device
        weights = torch.tensor(grads, dtype=torch.float32, device=device)
        was = self.model.training
        with use_adapter(self.model, PRM):  # restores the active adapter and requires_grad flags
            set_trainable(self.model, PRM)
            self.model.train()
            try:
                for mb in make_micro_batches(samples, cfg.layout, cfg.micro_batch_tokens):
                    mb = mb.to(device)
                    with autocast_for(device):
                        logp, _ = compute_logprobs(self.model, mb, self.recipe.rollout.temperature)
                    (weights[mb.sample_index] * logp.float()).sum().backward()
                torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
            finally:
                self.optimizer.zero_grad(set_to_none=True)
                self.model.train(was)

    def state_dict(self) -> dict[str, dict]:
        # the PRM adapter's weights are saved with the model's adapters (checkpoint adapter/prm/)
        return {"prm_optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        if "prm_optimizer" not in state:
            raise UserError("the checkpoint has no OPRL PRM optimizer state (was it trained with credit.method: oprl?)")
        self.optimizer.load_state_dict(state["prm_optimizer"])
