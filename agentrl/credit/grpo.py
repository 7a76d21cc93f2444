"""GRPO: one episode-level advantage per episode, normalised within its group.

`A^E = (R − mean_G R) / (std_G R + ε)` (norm "mean_std") or `R − mean_G R` (norm
"mean"). Every step of an episode gets its episode's advantage.

`episode_stats` says what one value of the group statistics is: "episode" (default;
each episode counts once, as the GRPO/GiGPO papers write it) or "step" (each step row
counts, so an episode counts once per step it has — verl-agent's default
`compute_mean_std_cross_steps=True`).

Parity with verl-agent (`core_algos.compute_grpo_outcome_advantage`): equal to 1e-6 with
`episode_stats: step` (known-answer cases in tests/test_credit_reference.py). Differs on
purpose: a group of one episode gets 0 (the reference passes R through).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from agentrl.credit.base import (
    EPISODE_STATS,
    EPS,
    NORMS,
    Batch,
    Episode,
    check_choice,
    episode_weights,
    flatten,
    normalize_in_groups,
    set_params,
)


def grpo_episode_advantages(
    batch: Batch, norm: str = "mean_std", eps: float = EPS, episode_stats: str = "episode"
) -> np.ndarray:
    """[E] episode advantages of a flat batch."""
    w = episode_weights(batch, episode_stats)
    return normalize_in_groups(batch.returns, batch.group, batch.n_groups, norm, eps, weights=w)


@dataclass(frozen=True)
class GRPO:
    name: ClassVar[str] = "grpo"
    step_signals: ClassVar[tuple[str, ...]] = ()
    episode_signals: ClassVar[tuple[str, ...]] = ()
    norm: str = "mean_std"
    episode_stats: str = "episode"

    def __post_init__(self) -> None:
        set_params(
            self,
            norm=check_choice(self.name, "norm", self.norm, NORMS),
            episode_stats=check_choice(self.name, "episode_stats", self.episode_stats, EPISODE_STATS),
        )

    def advantages(self, episodes: Sequence[Episode]) -> list[list[float]]:
        b = flatten(episodes)
        return b.split(grpo_episode_advantages(b, self.norm, episode_stats=self.episode_stats)[b.step_episode])
