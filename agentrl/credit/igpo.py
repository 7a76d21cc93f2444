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

`variant: reference` is the IGPO authors' code (commit 745078b) instead of the
adaptation above. For an episode of T turns: T−1 gains `IG_t = v_{t+1} − v_t`
(v = log p or p, p_t = `answer_prob` before turn t; `final_answer_prob` is not used);
an IG of exactly 0 becomes 1e-10; within each group the IGs, and separately the
outcomes R, are normalised as `(x − μ) / (σ + 1e-6)` with the population std
`σ = sqrt(mean((x − μ)²) + 1e-8)` (σ = 1 when there is at most one value); the turn
rewards are `[ĨG_0 … ĨG_{T−2}, R̃]`; `A_t = r_t + γ·A_next` over the turns whose reward is
non-zero, and a turn whose reward is zero takes the A of the next non-zero turn. `omega`
is not used.

Parity: `variant: reference` equals the authors' code to 1e-6 on the known-answer cases
(tests/test_credit_reference.py). The default `agentrl` variant differs on purpose: it
uses T gains (the last one to `final_answer_prob`), normalises over non-zero gains with
the unbiased std, and adds the GRPO episode advantage; groups of one episode get
`A^E = 0` (the reference passes R through).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

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
VARIANTS = ("agentrl", "reference")


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
    variant: str = "agentrl"

    def __post_init__(self) -> None:
        set_params(
            self,
            gamma=check_float(self.name, "gamma", self.gamma, 0.0, 1.0),
            omega=check_float(self.name, "omega", self.omega),
            ig=check_choice(self.name, "ig", self.ig, IG_KINDS),
            variant=check_choice(self.name, "variant", self.variant, VARIANTS),
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
        if self.variant == "reference":
            return reference_advantages(episodes, self.ig, self.gamma)
        b = flatten(episodes)
        ig = information_gain(*self._probs(episodes), self.ig)
        ig_tilde = normalize_nonzero_in_groups(ig, b.step_group, b.n_groups)
        a_s = discounted_returns(ig_tilde, b.lengths, self.gamma)
        a_e = normalize_in_groups(b.returns, b.group, b.n_groups, "mean_std")
        return b.split(a_e[b.step_episode] + self.omega * a_s)


# ---------------------------------------------------------------- variant "reference"

REF_ZERO_IG = 1e-10
REF_STD_FLOOR = 1e-8


def population_normalize(values: np.ndarray, gid: np.ndarray, n_groups: int, eps: float = EPS) -> np.ndarray:
    """`(x − μ_g) / (σ_g + ε)`, σ_g = sqrt(mean_g((x − μ_g)²) + 1e-8), σ_g = 1 for ≤ 1 value."""
    count = np.bincount(gid, minlength=n_groups)
    mean = np.bincount(gid, weights=values, minlength=n_groups) / np.maximum(count, 1)
    dev = values - mean[gid]
    var = np.bincount(gid, weights=dev * dev, minlength=n_groups) / np.maximum(count, 1)
    std = np.where(count > 1, np.sqrt(var + REF_STD_FLOOR), 1.0)
    return dev / (std[gid] + eps)


def reference_advantages(episodes: Sequence[Episode], kind: str, gamma: float) -> list[list[float]]:
    """Per-step advantages as the IGPO authors' code computes them (see the module docstring)."""
    b = flatten(episodes)
    p = step_signal(episodes, "answer_prob", "igpo")
    if kind == "log_prob_diff" and len(p) and p.min() <= 0:
        raise CreditError("credit method 'igpo' with ig=log_prob_diff needs answer probabilities > 0")
    v = p if kind == "prob_diff" else np.log(p) if len(p) else p
    # the T−1 gains of each episode: v[t+1] − v[t] within the episode (not across episodes)
    last = np.zeros(len(v), dtype=bool)
    last[np.cumsum(b.lengths)[b.lengths > 0] - 1] = True
    gain_at = np.flatnonzero(~last)  # flat index t of every step that has a gain
    ig = v[gain_at + 1] - v[gain_at]
    ig = np.where(ig == 0.0, REF_ZERO_IG, ig)
    ig_tilde = population_normalize(ig, b.step_group[gain_at], b.n_groups)
    r_tilde = population_normalize(b.returns, b.group, b.n_groups)
    turn_reward = np.empty(len(v), dtype=np.float64)
    turn_reward[gain_at] = ig_tilde
    turn_reward[last] = r_tilde[b.step_episode[last]]
    # backward over each episode's turns: non-zero turns accumulate, zero turns copy
    r = turn_reward.tolist()
    out = [0.0] * len(r)
    end = len(r)
    for n in reversed(b.lengths.tolist()):
        a = 0.0
        for i in range(end - 1, end - n - 1, -1):
            if r[i] != 0.0:
                a = r[i] + gamma * a
            out[i] = a
        end -= n
    return b.split(np.array(out, dtype=np.float64))
