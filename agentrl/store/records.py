"""Plain in-memory records of finished episodes: what the rollout produces and the store writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepRecord:
    t: int
    observation: str
    action: str
    reward: float
    terminated: bool = False
    truncated: bool = False
    valid: bool = True
    anchor: str = ""
    admissible: list[str] | None = None
    raw: str = ""
    prompt_ids: list[int] | None = None
    action_ids: list[int] | None = None
    logprobs: list[float] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    id: int | None = None  # database id, once stored


@dataclass
class EpisodeRecord:
    task_id: str
    group_id: str
    env: str
    split: str = "train"
    iteration: int = 0
    seed: int | None = None
    policy: str = ""
    status: str = "ok"  # ok | error | truncated
    won: bool = False
    ret: float = 0.0
    goal: str = ""
    final_observation: str = ""
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    steps: list[StepRecord] = field(default_factory=list)
    id: int | None = None  # database id, once stored

    @property
    def length(self) -> int:
        return len(self.steps)
