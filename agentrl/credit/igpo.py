"""IGPO: information-gain turn rewards.

Needs `Step.signals["answer_prob"]` = p_t (the policy's length-normalised
probability of the task's ground-truth string, teacher-forced after the context
before turn t) and `Episode.signals["final_answer_prob"]` = p_T (after the last turn).
- `IG_t = log p_{t+1} − log p_t` (ig "log_prob_diff"; needs p > 0) or `p_{t+1} − p_t`
  (ig "prob_diff"), t = 0..T−1.
- Normalisation over the group's NON-ZERO IG values (of all its episodes):
  `ĨG = (IG − mean_nz) / (std_nz + ε)`; zero IG values stay exactly 0.
  Our choice when a group has fewer than 2 non-zero values: the std term is 0, so
  `ĨG = (IG − mean_nz) / (0 + ε)`; with one non-zero value IG = mean_nz, so it is 0
  (reading the rule as `IG − mean_nz` without division gives the same 0). Hence a
  group with < 2 non-zero gains has all ĨG = 0.
- `A^S_t = Σ_{k≥t} γ^{k−t} ĨG_k`; `A^E` as GRPO "mean_std"; `A_t = A^E + ω · A^S_t`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from agentrl.credit.base import (
    EPS,
    CreditError,
    Episode,
    check_choice,
    check_float,
    discounted_returns,
    episode_signal,
    flatten,
    group_stats,
    normalize_in_groups,
    set_params,
    step_signal,
)

IG_KINDS = ("log_prob_diff", "prob_diff")


def information_gain(p: np.ndarray, p_next: np.ndarray, kind: str) -> np.ndarray:
    """[N] IG_t from p_t and p_{t+1}."""
    if kind == "prob_diff":
        return p_next - p
    return np.log(p_next) - np.log(p)


def normalize_nonzero_in_groups(ig: np.ndarray, gid: np.ndarray, n_groups: int, eps: float = EPS) -> np.ndarray:
    """`(IG − mean) / (std + ε)` with mean/std over each group's non-zero values; zeros stay 0.

    Groups with fewer than 2 non-zero values get all 0 (see the module docstring)."""
    nz = ig != 0
    out = np.zeros_like(ig)
    if nz.any():
        _, mean, std = group_stats(ig[nz], gid[nz], n_groups)
        out[nz] = (ig[nz] - mean[gid[nz]]) / (std[gid[nz]] + eps)
    return out


@dataclass(frozen=True)
class IGPO:
    name: ClassVar[str] = "igpo"
    step_signals: ClassVar[tuple[str, ...]] = ("answer_prob",)
    episode_signals: ClassVar[tuple[str, ...]] = ("final_answer_prob",)
    gamma: float = 1.0
    omega: float = 1.0
    ig: str = "log_prob_diff"

    def __post_init__(self) -> None:
        set_params(
            self,
            gamma=check_float(self.name, "gamma", self.gamma, 0.0, 1.0),
            omega=check_float(self.name, "omega", self.omega),
            ig=check_choice(self.name, "ig", self.ig, IG_KINDS),
        )

    def _probs(self, episodes: Sequence[Episode]) -> tuple[np.ndarray, np.ndarray]:
        """[N] p_t and p_{t+1} (the next step's p, or the episode's final p)."""
        p = step_signal(episodes, "answer_prob", self.name)
        nxt: list[float] = []
        for i, e in enumerate(episodes):
            if e.steps:
                nxt.extend(s.signals["answer_prob"] for s in e.steps[1:])
                nxt.append(episode_signal(e, i, "final_answer_prob", self.name))
        p_next = np.array(nxt, dtype=np.float64)
        if self.ig == "log_prob_diff" and len(p) and (min(p.min(), p_next.min()) <= 0):
            raise CreditError("credit method 'igpo' with ig=log_prob_diff needs answer probabilities > 0")
        return p, p_next

    def information_gains(self, episodes: Sequence[Episode]) -> list[list[float]]:
        """IG_t per step (unnormalised), for inspection."""
        b = flatten(episodes)
        return b.split(information_gain(*self._probs(episodes), self.ig))

    def advantages(self, episodes: Sequence[Episode]) -> list[list[float]]:
        b = flatten(episodes)
        ig = information_gain(*self._probs(episodes), self.ig)
        ig_tilde = normalize_nonzero_in_groups(ig, b.step_group, b.n_groups)
        a_s = discounted_returns(ig_tilde, b.lengths, self.gamma)
        a_e = normalize_in_groups(b.returns, b.group, b.n_groups, "mean_std")
        return b.split(a_e[b.step_episode] + self.omega * a_s)
