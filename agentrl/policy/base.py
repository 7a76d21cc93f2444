"""The policy protocol used by the rollout loop (ARCHITECTURE.md §7).

At each turn the rollout hands the policy one `TurnContext` per live episode and
gets back one `Action` per context, in order. Scripted policies leave the token
fields empty; LLM policies fill them (token-in-token-out: the learner trains on
exactly these ids and log-probs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from agentrl.envs.base import Observation


@dataclass
class TurnContext:
    key: int  # stable id of the episode within this rollout batch (for per-episode caches)
    task_id: str
    t: int  # turn index, 0-based
    observation: Observation  # current observation (goal and admissible commands inside)
    history: list[tuple[str, str]] = field(default_factory=list)  # earlier (observation text, action text)
    # Identity of the episode for sampling: a sampling policy draws this episode's tokens from a
    # generator seeded by (its seed, sample_key, t), so an episode's samples do not depend on which
    # other episodes share its batch — a resumed rollout redraws exactly what was lost. None:
    # the policy's own stream.
    sample_key: int | None = None
    group_id: str = ""  # the episode's group (G episodes from one initial state)


@dataclass
class Action:
    text: str  # the command sent to the env (after parsing, before hygiene)
    raw: str = ""  # raw generated text (== text for scripted policies)
    prompt_ids: list[int] | None = None
    action_ids: list[int] | None = None  # generated token ids, exactly as sampled
    logprobs: list[float] | None = None  # log-prob of each generated id under the sampling distribution
    parsed: bool = True  # False when free-text output could not be parsed into an action
    info: dict = field(default_factory=dict)  # e.g. {"dropped_turns": 1}
    # the policy could not act in this episode (e.g. its prompt cannot fit max_prompt_tokens): the
    # rollout ends that episode with status error and this reason (task and step added), the run goes on
    error: str | None = None


class Policy(Protocol):
    def act(self, contexts: list[TurnContext]) -> list[Action]: ...

    def end_episode(self, key: int) -> None:
        """Called when an episode finishes (release per-episode state such as KV caches)."""
        ...
