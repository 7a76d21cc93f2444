"""RLOO: `A^E = R_i − mean_{j≠i} R_j` within the group (leave-one-out baseline).

No normalisation by std and no step term. `episode_stats` as in GRPO: "episode"
(default; the baseline is the mean of the other episodes) or "step" (verl-agent's
default: the baseline is the mean of the group's other step rows, an episode counting
once per step).

Parity with verl-agent (`core_algos.compute_rloo_outcome_advantage`): equal to 1e-6 with
`episode_stats: step`. Differs on purpose: a group of one episode gets 0 (the reference
passes R through).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from agentrl.credit.base import (
    EPISODE_STATS,
    Batch,
    Episode,
    check_choice,
    episode_weights,
    flatten,
    rloo_in_groups,
    set_params,
)


def rloo_episode_advantages(batch: Batch, episode_stats: str = "episode") -> np.ndarray:
    """[E] leave-one-out episode advantages of a flat batch."""
    return rloo_in_groups(batch.returns, batch.group, batch.n_groups, episode_weights(batch, episode_stats))


@dataclass(frozen=True)
class RLOO:
    name: ClassVar[str] = "rloo"
    step_signals: ClassVar[tuple[str, ...]] = ()
    episode_signals: ClassVar[tuple[str, ...]] = ()
    episode_stats: str = "episode"

    def __post_init__(self) -> None:
        set_params(self, episode_stats=check_choice(self.name, "episode_stats", self.episode_stats, EPISODE_STATS))

    def advantages(self, episodes: Sequence[Episode]) -> list[list[float]]:
        b = flatten(episodes)
        return b.split(rloo_episode_advantages(b, self.episode_stats)[b.step_episode])
