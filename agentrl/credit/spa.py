"""SPA: stepwise progress attribution with a learned progress estimator.

Advantages (ARCHITECTURE.md §5), needing `Step.signals["progress"]` = c_t, the estimator's
contribution of turn t:
- dense reward `r̂_t = c_t + grounding_weight · [valid_t]`;
- `Ĝ_t = Σ_k γ^k r̂_{t+k}` per episode;
- `A^S = (Ĝ_t − mean) / (std + ε)` over ALL steps of the episode group (each step once);
- `A^E` as GRPO "mean_std"; `A_t = A^E + ω · A^S_t`.

The estimator is a small head on the policy's hidden state at each turn's last
action token, trained online so that an episode's contributions sum to its return:
`loss = mean over episodes of (Σ_t c_t − R)^2` (`SPA.estimator_loss` gives its value from
the signals). The estimator and its training are `agentrl.signals.spa`; this module is
pure numpy.

Parity: SPA here is agentrl's group-normalised adaptation: no critic; the discounted
dense returns are normalised over the steps of the episode group and added to the GRPO
episode advantage. The released SPA code trains a critic and uses GAE instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

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
