"""RLOO: `A^E = R_i − mean_{j≠i} R_j` within the group (leave-one-out baseline).

No normalisation by std and no step term. A group of one episode gets 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from agentrl.credit.base import Batch, Episode, flatten, rloo_in_groups


def rloo_episode_advantages(batch: Batch) -> np.ndarray:
    """[E] leave-one-out episode advantages of a flat batch."""
    return rloo_in_groups(batch.returns, batch.group, batch.n_groups)


@dataclass(frozen=True)
class RLOO:
    name: ClassVar[str] = "rloo"
    step_signals: ClassVar[tuple[str, ...]] = ()
    episode_signals: ClassVar[tuple[str, ...]] = ()

    def advantages(self, episodes: Sequence[Episode]) -> list[list[float]]:
        b = flatten(episodes)
        return b.split(rloo_episode_advantages(b)[b.step_episode])
