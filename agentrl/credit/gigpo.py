"""GiGPO: group-in-group policy optimisation (episode groups + anchor-state step groups).

`A_t = A^E(τ) + ω · A^S_t`:
- `A^E` as GRPO with the same `norm`;
- `G_t = Σ_k γ^k r_{t+k}` per episode (step rewards);
- step groups, within one episode group: steps with equal anchors (anchor "exact"),
  or — anchor "similarity" — clusters built by scanning the group's episodes in
  batch order, step by step, each step joining the FIRST existing cluster whose
  first member's anchor has
  `difflib.SequenceMatcher(None, anchor, first).ratio() >= similarity_threshold`
  (the NEW anchor first, as the authors' `are_similar(obs, representative)`; difflib's
  ratio is not symmetric, and for strings of 200+ characters its autojunk rule applies
  to the second argument), else starting a new cluster. Two steps of the same episode
  can share a step group.
- `A^S = (G_t − mean) / (std + ε)` (or `G_t − mean`) within the step group; a
  singleton step group gets exactly 0.
- `episode_stats` ("episode" | "step") for `A^E`, as in GRPO.

Parity with verl-agent (`gigpo/core_gigpo.py`, commit 2716b30b): equal to 1e-6 on the
known-answer cases (tests/test_credit_reference.py), exact and similarity anchors, either
`episode_stats`. Differs on purpose: a group of one episode gets `A^E = 0` (the
reference passes R through); an invalid action's penalty is part of that step's reward
(verl-agent subtracts 0.1 from the episode score and from that step's discounted return).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from agentrl.credit.base import (
    EPISODE_STATS,
    NORMS,
    Episode,
    check_choice,
    check_float,
    discounted_returns,
    episode_weights,
    flatten,
    normalize_in_groups,
    set_params,
)

ANCHORS = ("exact", "similarity")


def exact_step_groups(step_group: np.ndarray, anchors: Sequence[str]) -> np.ndarray:
    """[N] step-group ids: equal (episode group, anchor) -> equal id."""
    ids: dict[tuple[int, str], int] = {}
    return np.array([ids.setdefault(k, len(ids)) for k in zip(step_group.tolist(), anchors)], dtype=np.int64)


def similarity_clusters(anchors: Sequence[str], threshold: float) -> list[int]:
    """Cluster ids (0, 1, ...) for anchors in scan order (similarity mode).

    Each anchor joins the first cluster whose first member `f` has
    `SequenceMatcher(None, anchor, f).ratio() >= threshold` (new anchor first), else
    opens a new one. Exactly that rule, made cheaper: `real_quick_ratio` and
    `quick_ratio` are upper bounds of `ratio` in either order (they count lengths and
    shared characters, ignoring junk), so they only skip comparisons that would fail;
    each cluster keeps a matcher whose second sequence is its first member (difflib
    caches its analysis of the second sequence); and a repeated anchor gets the same
    cluster as its first occurrence (the clusters before it are unchanged and its own
    cluster's first member matches it: ratio(a, a) = 1).
    """
    heads: list[difflib.SequenceMatcher] = []
    memo: dict[str, int] = {}
    out: list[int] = []
    for anchor in anchors:
        cid = memo.get(anchor)
        if cid is None:
            for i, sm in enumerate(heads):
                sm.set_seq1(anchor)
                if sm.real_quick_ratio() >= threshold and sm.quick_ratio() >= threshold and sm.ratio() >= threshold:
                    cid = i
                    break
            if cid is None:
                cid = len(heads)
                heads.append(difflib.SequenceMatcher(None, "", anchor))
            memo[anchor] = cid
        out.append(cid)
    return out


def similarity_step_groups(step_group: np.ndarray, anchors: Sequence[str], threshold: float) -> np.ndarray:
    """[N] step-group ids, clustering each episode group's anchors in flat (scan) order."""
    members: dict[int, list[int]] = {}
    for i, g in enumerate(step_group.tolist()):
        members.setdefault(g, []).append(i)
    ids = np.empty(len(anchors), dtype=np.int64)
    offset = 0
    for idx in members.values():
        cl = similarity_clusters([anchors[i] for i in idx], threshold)
        ids[idx] = np.asarray(cl, dtype=np.int64) + offset
        offset += max(cl) + 1
    return ids


@dataclass(frozen=True)
class GiGPO:
    name: ClassVar[str] = "gigpo"
    step_signals: ClassVar[tuple[str, ...]] = ()
    episode_signals: ClassVar[tuple[str, ...]] = ()
    gamma: float = 0.95
    omega: float = 1.0
    norm: str = "mean_std"
    anchor: str = "exact"
    similarity_threshold: float = 0.95
    episode_stats: str = "episode"

    def __post_init__(self) -> None:
        set_params(
            self,
            gamma=check_float(self.name, "gamma", self.gamma, 0.0, 1.0),
            omega=check_float(self.name, "omega", self.omega),
            norm=check_choice(self.name, "norm", self.norm, NORMS),
            anchor=check_choice(self.name, "anchor", self.anchor, ANCHORS),
            similarity_threshold=check_float(self.name, "similarity_threshold", self.similarity_threshold, 0.0, 1.0),
            episode_stats=check_choice(self.name, "episode_stats", self.episode_stats, EPISODE_STATS),
        )

    def step_groups(self, episodes: Sequence[Episode]) -> list[list[int]]:
        """The step-group id of every step (for inspection and tests)."""
        b = flatten(episodes)
        sg = self._step_groups(b.step_group, [s.anchor for e in episodes for s in e.steps])
        return [[int(x) for x in ep] for ep in b.split(sg)]

    def _step_groups(self, step_group: np.ndarray, anchors: list[str]) -> np.ndarray:
        if self.anchor == "exact":
            return exact_step_groups(step_group, anchors)
        return similarity_step_groups(step_group, anchors, self.similarity_threshold)

    def advantages(self, episodes: Sequence[Episode]) -> list[list[float]]:
        b = flatten(episodes)
        a_e = normalize_in_groups(
            b.returns, b.group, b.n_groups, self.norm, weights=episode_weights(b, self.episode_stats)
        )
        if not len(b.rewards):
            return b.split(b.rewards)
        sg = self._step_groups(b.step_group, [s.anchor for e in episodes for s in e.steps])
        g = discounted_returns(b.rewards, b.lengths, self.gamma)
        a_s = normalize_in_groups(g, sg, int(sg.max()) + 1, self.norm)
        return b.split(a_e[b.step_episode] + self.omega * a_s)
