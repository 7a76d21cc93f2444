"""SPA: stepwise progress attribution with a learned progress estimator.

Advantages (DESIGN §5), needing `Step.signals["progress"]` = c_t, the estimator's
contribution of turn t:
- dense reward `r̂_t = c_t + grounding_weight · [valid_t]`;
- `Ĝ_t = Σ_k γ^k r̂_{t+k}` per episode;
- `A^S = (Ĝ_t − mean) / (std + ε)` over ALL steps of the episode group (each step once);
- `A^E` as GRPO "mean_std"; `A_t = A^E + ω · A^S_t`.

The estimator is a small head on the policy's hidden state at each turn's last
action token, trained online so that an episode's contributions sum to its return:
`loss = mean over episodes of (Σ_t c_t − R)^2`. The torch parts here take plain
tensors (features [T_i, H] per episode) and know nothing of the policy model.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from agentrl.credit.base import (
    Episode,
    check_float,
    discounted_returns,
    flatten,
    normalize_in_groups,
    set_params,
    step_signal,
)


def dense_rewards(progress: np.ndarray, valid: np.ndarray, grounding_weight: float) -> np.ndarray:
    """[N] `c_t + grounding_weight · [valid_t]`."""
    return progress + grounding_weight * valid.astype(np.float64)


def estimator_loss_np(progress: np.ndarray, step_episode: np.ndarray, returns: np.ndarray) -> float:
    """Mean over episodes of `(Σ_t c_t − R)^2`; 0.0 for an empty batch."""
    if not len(returns):
        return 0.0
    sums = np.bincount(step_episode, weights=progress, minlength=len(returns))
    return float(np.mean((sums - returns) ** 2))


@dataclass(frozen=True)
class SPA:
    name: ClassVar[str] = "spa"
    step_signals: ClassVar[tuple[str, ...]] = ("progress",)
    episode_signals: ClassVar[tuple[str, ...]] = ()
    gamma: float = 1.0
    omega: float = 1.0
    grounding_weight: float = 0.5

    def __post_init__(self) -> None:
        set_params(
            self,
            gamma=check_float(self.name, "gamma", self.gamma, 0.0, 1.0),
            omega=check_float(self.name, "omega", self.omega),
            grounding_weight=check_float(self.name, "grounding_weight", self.grounding_weight),
        )

    def advantages(self, episodes: Sequence[Episode]) -> list[list[float]]:
        b = flatten(episodes)
        c = step_signal(episodes, "progress", self.name)
        valid = np.array([bool(s.valid) for e in episodes for s in e.steps], dtype=bool)
        g = discounted_returns(dense_rewards(c, valid, self.grounding_weight), b.lengths, self.gamma)
        a_s = normalize_in_groups(g, b.step_group, b.n_groups, "mean_std")
        a_e = normalize_in_groups(b.returns, b.group, b.n_groups, "mean_std")
        return b.split(a_e[b.step_episode] + self.omega * a_s)

    def estimator_loss(self, episodes: Sequence[Episode]) -> float:
        """Mean over episodes of `(Σ_t c_t − R)^2`, c_t = signals["progress"]."""
        b = flatten(episodes)
        return estimator_loss_np(step_signal(episodes, "progress", self.name), b.step_episode, b.returns)


# ---------------------------------------------------------------- learned estimator (torch)


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
    index = torch.repeat_interleave(torch.arange(len(lengths), device=values.device), torch.tensor(lengths, device=values.device))
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
