"""SPA's progress estimator: signals["progress"] = c_t from the policy's hidden states.

A `ProgressEstimator` head on the policy's final hidden state at each turn's last action
token gives c_t, the contribution of turn t; it is trained online on a bounded buffer of
(features, R) so that an episode's contributions sum to its return:
`loss = mean over episodes of (Σ_t c_t − R)^2` (`estimator_loss_torch`; the numpy value of
the same loss is `agentrl.credit.spa.SPA.estimator_loss`). The advantages are in
`agentrl.credit.spa`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from agentrl.credit.base import check_float, set_params
from agentrl.errors import UserError
from agentrl.learner.batch import StepSample, make_micro_batches
from agentrl.learner.samples import episode_samples
from agentrl.learner.update import autocast_for, body_and_head
from agentrl.policy.logprobs import eval_mode
from agentrl.signals.base import batch_key, check_int, episode_return, set_step_signal
from agentrl.store.records import EpisodeRecord


@dataclass(frozen=True)
class SPAParams:
    """The estimator's parameters (recipe `credit:` keys beside the method's own)."""

    method: ClassVar[str] = "spa"
    estimator_lr: float = 1e-3
    estimator_epochs: int = 20
    estimator_buffer: int = 512  # episodes kept for training
    estimator_width: int = 128

    def __post_init__(self) -> None:
        m = self.method
        set_params(
            self,
            estimator_lr=check_float(m, "estimator_lr", self.estimator_lr, 1e-12),
            estimator_epochs=check_int(m, "estimator_epochs", self.estimator_epochs),
            estimator_buffer=check_int(m, "estimator_buffer", self.estimator_buffer),
            estimator_width=check_int(m, "estimator_width", self.estimator_width),
        )


# ---------------------------------------------------------------- the estimator (plain tensors)


class ProgressEstimator(nn.Module):
    """Hidden state at a turn's last action token [..., H] -> contribution c_t [...].

    Linear -> tanh -> Linear. The output layer starts at zero, so a fresh
    estimator gives c_t = 0 (no progress signal) until it has been fitted."""

    def __init__(self, hidden_size: int, width: int = 128):
        super().__init__()
        self.hidden_size = hidden_size
        self.net = nn.Sequential(nn.Linear(hidden_size, width), nn.Tanh(), nn.Linear(width, 1))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features.to(self.net[0].weight.dtype)).squeeze(-1)


def estimator_loss_torch(contribs_per_episode: list[torch.Tensor], returns: torch.Tensor) -> torch.Tensor:
    """Mean over episodes of `(Σ_t c_t − R)^2` (contribs [T_i] per episode, returns [E])."""
    returns = torch.as_tensor(returns, dtype=torch.float32)
    if not contribs_per_episode:
        return returns.new_zeros(())
    sums = torch.stack([c.sum() for c in contribs_per_episode]).to(returns.dtype)
    return ((sums - returns.to(sums.device)) ** 2).mean()


def _segment_sums(values: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    device = values.device
    index = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))
    return values.new_zeros(len(lengths)).index_add(0, index, values)


def fit_estimator(
    estimator: ProgressEstimator,
    features: list[torch.Tensor],
    returns: torch.Tensor | Sequence[float],
    optimizer: torch.optim.Optimizer,
    epochs: int = 1,
) -> float:
    """Full-batch training of the estimator on (features [T_i, H], R) pairs.

    Features are detached (the policy is not trained through the estimator). Returns
    the loss of the last epoch, measured before its update; 0.0 with no episodes."""
    if not features:
        return 0.0
    device = next(estimator.parameters()).device
    x = torch.cat([f.detach() for f in features]).to(device)
    lengths = [int(f.shape[0]) for f in features]
    target = torch.as_tensor(returns, dtype=torch.float32, device=device)
    loss_value = 0.0
    estimator.train()
    for _ in range(epochs):
        sums = _segment_sums(estimator(x).float(), lengths)
        loss = ((sums - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_value = float(loss.detach())
    return loss_value


@torch.no_grad()
def estimate_progress(estimator: ProgressEstimator, features: list[torch.Tensor]) -> list[list[float]]:
    """Contributions c_t per episode, to put in `Step.signals["progress"]`."""
    if not features:
        return []
    device = next(estimator.parameters()).device
    lengths = [int(f.shape[0]) for f in features]
    flat = estimator(torch.cat(features).to(device)).float().cpu().tolist()
    out, start = [], 0
    for n in lengths:
        out.append(flat[start : start + n])
        start += n
    return out


class EpisodeBuffer:
    """The most recent `capacity` (features [T, H], return) pairs, for online training."""

    def __init__(self, capacity: int = 512):
        if capacity < 1:
            raise ValueError("EpisodeBuffer capacity must be >= 1")
        self.items: deque[tuple[torch.Tensor, float]] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, features: torch.Tensor, ret: float) -> None:
        """Store a detached CPU float32 copy (the policy's activations are not kept alive)."""
        self.items.append((features.detach().to("cpu", torch.float32).clone(), float(ret)))

    def features(self) -> list[torch.Tensor]:
        return [f for f, _ in self.items]

    def returns(self) -> torch.Tensor:
        return torch.tensor([r for _, r in self.items], dtype=torch.float32)

    def fit(self, estimator: ProgressEstimator, optimizer: torch.optim.Optimizer, epochs: int = 1) -> float:
        """`fit_estimator` on the buffer's contents."""
        return fit_estimator(estimator, self.features(), self.returns(), optimizer, epochs)


# ---------------------------------------------------------------- features from the policy


@torch.no_grad()
def last_action_hidden(model, samples: list[StepSample], layout: str, micro_batch_tokens: int) -> torch.Tensor:
    """[n, H] float32 CPU: the final hidden state (after the last norm) at each sample's last action token.

    Teacher-forced through the transformer body with the active adapter, batched like the
    learner (the `concat` layout gives the same states as `per_step` where prompts chain)."""
    body, _ = body_and_head(model)
    device = next(model.parameters()).device
    out: list[torch.Tensor | None] = [None] * len(samples)
    last_tok = [len(s.action_ids) - 1 for s in samples]
    with eval_mode(model):
        for mb in make_micro_batches(samples, layout, micro_batch_tokens):
            mb = mb.to(device)
            full = bool(mb.attention_mask.all())
            with autocast_for(device):
                h = body(
                    input_ids=mb.input_ids, attention_mask=None if full else mb.attention_mask, use_cache=False
                ).last_hidden_state
            sel = mb.token_index == torch.tensor(last_tok, device=device)[mb.sample_index]
            # the state AT the last action token sits one past the position that predicts it
            hs = h[mb.batch_index[sel], mb.positions[sel] + 1].float().cpu()
            for i, v in zip(mb.sample_index[sel].tolist(), hs):
                out[i] = v
    if not samples:
        return torch.zeros(0, 0)
    return torch.stack(out)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the provider


class SPAProvider:
    """Progress estimator on the policy's hidden states (signals["progress"])."""

    Params = SPAParams

    def __init__(self, model, tokenizer, recipe, params: SPAParams | None = None, method=None):
        p = params or SPAParams()
        self.model, self.tokenizer, self.recipe = model, tokenizer, recipe
        self.settings = p
        self.epochs = p.estimator_epochs
        hidden = int(model.get_base_model().config.hidden_size)
        self.estimator = ProgressEstimator(hidden, p.estimator_width)  # small: lives on the CPU
        self.optimizer = torch.optim.Adam(self.estimator.parameters(), lr=p.estimator_lr)
        self.buffer = EpisodeBuffer(p.estimator_buffer)
        self._pending: tuple[tuple[int, ...], list[EpisodeRecord], list[torch.Tensor]] | None = None

    def features(self, recs: list[EpisodeRecord]) -> list[torch.Tensor]:
        """[T_i', H] per episode: hidden states of the steps that have action tokens."""
        r = self.recipe
        samples = episode_samples(recs, None, self.tokenizer, r.rollout.action_mode, allowed=False)
        hidden = self.model.get_base_model().config.hidden_size
        h = last_action_hidden(self.model, samples, r.learner.layout, r.learner.micro_batch_tokens)
        rows: list[list[int]] = [[] for _ in recs]
        for k, s in enumerate(samples):
            rows[s.episode].append(k)
        return [h[idx] if idx else torch.zeros(0, hidden) for idx in rows]

    def compute(self, recs: list[EpisodeRecord]) -> dict:
        feats = self.features(recs)
        self.estimator.eval()
        progress = estimate_progress(self.estimator, feats)
        sq, n, total = 0.0, 0, 0.0
        for rec, _f, c in zip(recs, feats, progress):
            it = iter(c)
            for s in rec.steps:
                has = bool(s.action_ids and s.prompt_ids)
                set_step_signal(s, "progress", next(it) if has else 0.0)
            sq += (sum(c) - episode_return(rec)) ** 2
            total += sum(abs(x) for x in c)
            n += len(c)
        self._pending = (batch_key(recs), recs, feats)
        return {"estimator_batch_loss": sq / len(recs) if recs else 0.0, "progress_abs": total / n if n else 0.0}

    def update(self, recs: list[EpisodeRecord]) -> dict:
        if self._pending is not None and self._pending[0] == batch_key(recs):
            feats = self._pending[2]
        else:
            feats = self.features(recs)
        self._pending = None
        for rec, f in zip(recs, feats):
            if len(f):
                self.buffer.add(f, episode_return(rec))
        loss = self.buffer.fit(self.estimator, self.optimizer, self.epochs) if len(self.buffer) else 0.0
        return {"estimator_loss": loss, "estimator_buffer": float(len(self.buffer))}

    def state_dict(self) -> dict[str, dict]:
        feats = self.buffer.features()
        h = self.estimator.hidden_size
        return {
            "spa_estimator": self.estimator.state_dict(),
            "spa_optimizer": self.optimizer.state_dict(),
            "spa_buffer": {
                "features": torch.cat(feats) if feats else torch.zeros(0, h),
                "lengths": torch.tensor([len(f) for f in feats], dtype=torch.long),
                "returns": self.buffer.returns(),
            },
        }

    def load_state_dict(self, state: dict[str, dict]) -> None:
        if "spa_estimator" not in state:
            raise UserError("the checkpoint has no SPA progress estimator (was it trained with credit.method: spa?)")
        try:
            self.estimator.load_state_dict(state["spa_estimator"])
        except RuntimeError:
            raise UserError("the checkpoint's SPA estimator does not match this model or estimator_width") from None
        self.optimizer.load_state_dict(state["spa_optimizer"])
        buf = state.get("spa_buffer") or {}
        self.buffer.items.clear()
        start = 0
        for n, r in zip(buf.get("lengths", torch.zeros(0)).tolist(), buf.get("returns", torch.zeros(0)).tolist()):
            self.buffer.add(buf["features"][start : start + n], r)
            start += n
