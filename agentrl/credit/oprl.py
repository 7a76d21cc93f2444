"""OPRL: online process reward learning with an implicit PRM.

Advantages (ARCHITECTURE.md §5), needing `Step.signals["logratio"]` = Σ over the step's
action tokens of `log π_prm − log π_ref`:
- `r_t = β · logratio_t`;  `r̃_t = r_t / (max |r| over the whole batch + ε)`;
- `A^E` = RLOO: `R_i − mean_{j≠i} R_j`;
- `A^S = n/(n−1) · (r̃_t − mean of r̃ over all steps of the group)`, n = episodes
  in the group. For a group of one episode n/(n−1) is undefined: we set A^S = 0
  (like A^E, so a lone episode gets all-zero advantages).
- `A_t = A^E + ω · A^S_t`.

PRM loss: `Q(τ) = mean_t r_t` (0 for an episode without steps); pairs = every
(won, lost) pair within a group, won meaning R > 0; loss = mean over pairs of
`−log σ(Q⁺ − Q⁻)`, 0 if there is no pair. `OPRL.prm_loss` computes it as a float
from the signals; `agentrl.signals.oprl.prm_loss_torch` computes the same from tensors
for training (the PRM itself is `agentrl.signals.oprl`; this module is pure numpy).

Parity: the step baseline is the mean of r̃ over ALL steps of the group, as the iStar
docstring states (its code takes the first row of each trajectory instead). Groups of
one episode get 0 (A^E and A^S; the reference passes R through).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from agentrl.credit.base import EPS, Episode, check_float, flatten, rloo_in_groups, set_params, step_signal


def normalized_step_rewards(logratio: np.ndarray, beta: float, eps: float = EPS) -> np.ndarray:
    """[N] `r̃_t = β·logratio_t / (max |β·logratio| over the batch + ε)`."""
    r = beta * logratio
    if not len(r):
        return r
    return r / (np.abs(r).max() + eps)


def oprl_step_advantages(r_tilde: np.ndarray, step_group: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """[N] `n/(n−1) · (r̃_t − mean_group r̃)`; 0 in groups of one episode."""
    n = np.bincount(group, minlength=n_groups)[step_group]
    steps = np.bincount(step_group, minlength=n_groups)
    mean = np.bincount(step_group, weights=r_tilde, minlength=n_groups) / np.maximum(steps, 1)
    scale = np.where(n > 1, n / np.maximum(n - 1, 1), 0.0)
    return scale * (r_tilde - mean[step_group])


def preference_pairs(groups: Sequence[str], returns: Sequence[float]) -> tuple[list[int], list[int]]:
    """Indices (won, lost) of every pair of episodes in one group with R_won > 0 >= R_lost."""
    by_group: dict[str, tuple[list[int], list[int]]] = {}
    for i, (g, r) in enumerate(zip(groups, returns)):
        by_group.setdefault(g, ([], []))[0 if r > 0 else 1].append(i)
    won, lost = [], []
    for w, l in by_group.values():  # noqa: E741
        for i in w:
            for j in l:
                won.append(i)
                lost.append(j)
    return won, lost


def prm_loss_np(q: np.ndarray, groups: Sequence[str], returns: Sequence[float]) -> float:
    """Mean over (won, lost) pairs of `−log σ(Q⁺ − Q⁻)` = softplus(Q⁻ − Q⁺); 0.0 without pairs."""
    won, lost = preference_pairs(groups, returns)
    if not won:
        return 0.0
    return float(np.mean(np.logaddexp(0.0, q[lost] - q[won])))


@dataclass(frozen=True)
class OPRL:
    name: ClassVar[str] = "oprl"
    step_signals: ClassVar[tuple[str, ...]] = ("logratio",)
    episode_signals: ClassVar[tuple[str, ...]] = ()
    beta: float = 0.05
    omega: float = 1.0

    def __post_init__(self) -> None:
        set_params(
            self,
            beta=check_float(self.name, "beta", self.beta, 0.0),
            omega=check_float(self.name, "omega", self.omega),
        )

    def advantages(self, episodes: Sequence[Episode]) -> list[list[float]]:
        b = flatten(episodes)
        r_tilde = normalized_step_rewards(step_signal(episodes, "logratio", self.name), self.beta)
        a_s = oprl_step_advantages(r_tilde, b.step_group, b.group, b.n_groups)
        a_e = rloo_in_groups(b.returns, b.group, b.n_groups)
        return b.split(a_e[b.step_episode] + self.omega * a_s)

    def prm_loss(self, episodes: Sequence[Episode]) -> float:
        """The PRM's pairwise loss on this batch, from signals["logratio"] (a float)."""
        b = flatten(episodes)
        r = self.beta * step_signal(episodes, "logratio", self.name)
        q = np.bincount(b.step_episode, weights=r, minlength=len(episodes)) / np.maximum(b.lengths, 1)
        return prm_loss_np(q, [e.group for e in episodes], b.returns.tolist())
