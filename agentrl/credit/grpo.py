"""GRPO: one episode-level advantage per episode, normalised within its group.

`A^E = (R − mean_G R) / (std_G R + ε)` (norm "mean_std") or `R − mean_G R` (norm
"mean"), statistics over the group's episodes, each counted once. Every step of an
episode gets its episode's advantage. A group of one episode gets 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from agentrl.credit.base import EPS, NORMS, Batch, Episode, check_choice, flatten, normalize_in_groups, set_params


def grpo_episode_advantages(batch: Batch, norm: str = "mean_std", eps: float = EPS) -> np.ndarray:
    """[E] episode advantages of a flat batch."""
    return normalize_in_groups(batch.returns, batch.group, batch.n_groups, norm, eps)


@dataclass(frozen=True)
class GRPO:
    name: ClassVar[str] = "grpo"
    step_signals: ClassVar[tuple[str, ...]] = ()
    episode_signals: ClassVar[tuple[str, ...]] = ()
    norm: str = "mean_std"

    def __post_init__(self) -> None:
        set_params(self, norm=check_choice(self.name, "norm", self.norm, NORMS))

    def advantages(self, episodes: Sequence[Episode]) -> list[list[float]]:
        b = flatten(episodes)
        return b.split(grpo_episode_advantages(b, self.norm)[b.step_episode])
