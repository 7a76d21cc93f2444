"""Teacher forcing through the LLM policy: a stored episode's prompts, rendered exactly as at rollout.

`agentrl sft` trains on (prompt, action) pairs. The prompts must be what the policy would have
been prompted with under the recipe it is trained for: its chat template, system prompt and goal,
history window, admissible lists and the turns it drops to fit `max_prompt_tokens`. Rather than a
second copy of that logic, the stored episode is played back through `LLMPolicy` itself on a
`TeacherEngine`, an engine that "generates" the demonstrated action's token ids. So the prompt ids
of a demonstration come from the same `build_prompt` call, with the same per-episode memory, as a
rollout's (`tests/test_sft.py` checks them against stored rollout prompts, token for token).

The demonstrated action's ids (`demo_action_ids`):
- a step the LLM policy generated, in a run with the recipe's action mode and parser: the stored
  generated ids, exactly;
- otherwise (scripted policies such as `expert`, or another action format) the command as the
  policy must write it, followed by the end-of-turn token: admissible mode, the trie's sequence
  `encode(command) + [eot]`; free mode with the `tag` parser, `encode("<action>command</action>")
  + [eot]`; with `last_line`, `encode(command) + [eot]`.
Steps whose action is not valid (the env refused it, or in admissible mode it is not one of the
listed commands) are kept as context for later turns but give no demonstration.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from agentrl.config import RolloutConfig
from agentrl.engines.base import EngineStats, Generation, Request, Sampling
from agentrl.envs.base import Observation
from agentrl.policy.base import TurnContext
from agentrl.policy.constrained import allowed_token_ids
from agentrl.policy.llm import LLMPolicy
from agentrl.policy.prompt import chat_format
from agentrl.store.records import EpisodeRecord, StepRecord


class TeacherEngine:
    """An engine that returns the ids it is told to (`force`), for `LLMPolicy` to render prompts."""

    name = "teacher"

    def __init__(self):
        self.stats = EngineStats()
        self.weights_version = 0
        self._next: dict[int, list[int]] = {}

    def force(self, key: int, ids: list[int]) -> None:
        self._next[key] = list(ids)

    def generate(self, requests: list[Request], sampling: Sampling) -> list[Generation]:
        out = []
        for r in requests:
            ids = self._next.pop(r.key)
            out.append(Generation(ids, [0.0] * len(ids), command=None))
        return out

    def end(self, key: int) -> None:
        self._next.pop(key, None)

    def reset(self) -> None:
        self._next.clear()

    def load_weights(self, model, version: int) -> float:
        return 0.0


@dataclass
class Demonstration:
    """One demonstrated turn: the prompt the policy would see, the action ids to learn, and in
    admissible mode the allowed ids at each action position (the constrained sampler's support)."""

    episode: int  # index of the episode in the input
    t: int
    prompt_ids: list[int]
    action_ids: list[int]
    allowed: list[list[int]] | None


def same_action_format(a: RolloutConfig, b: RolloutConfig) -> bool:
    """Whether generated ids of a run under `a` are what a policy under `b` would write."""
    return a.action_mode == b.action_mode and (a.action_mode == "admissible" or a.action_parser == b.action_parser)


def written_ids(step: StepRecord, rollout: RolloutConfig, tokenizer, reuse_generated: bool) -> list[int]:
    """The token ids of `step`'s action as a policy under `rollout` writes it (module docstring)."""
    if reuse_generated and step.action_ids:
        return list(step.action_ids)
    fmt = chat_format(tokenizer)
    if rollout.action_mode == "admissible" and step.admissible:
        return fmt.encode(step.action) + [fmt.eot_id]
    text = f"<action>{step.action}</action>" if rollout.action_parser == "tag" else step.action
    return fmt.encode(text) + [fmt.eot_id]


def demo_action_ids(step: StepRecord, rollout: RolloutConfig, tokenizer, reuse_generated: bool) -> list[int] | None:
    """`written_ids` of a step that demonstrates something; None for an invalid step, an empty
    action, or (admissible mode) a command that is not in the step's list."""
    if not step.valid or not step.action.strip():
        return None
    if rollout.action_mode == "admissible" and step.admissible and step.action not in step.admissible:
        return None
    return written_ids(step, rollout, tokenizer, reuse_generated)


def demonstrations(
    episodes: list[EpisodeRecord],
    tokenizer,
    rollout: RolloutConfig,
    source: RolloutConfig | None = None,
    env_options: dict | None = None,
) -> Iterator[Demonstration]:
    """The demonstrated turns of `episodes` as a policy under `rollout` would be prompted for them.
    `source`: the rollout config of the run that played them (None: the same as `rollout`); its
    generated ids are reused only when its action format is the recipe's (`same_action_format`).
    `env_options`: the recipe's adapter options (its system prompt may depend on them). A turn
    whose prompt cannot fit `max_prompt_tokens` ends that episode's demonstrations, as it ends the
    episode at rollout."""
    reuse = same_action_format(source or rollout, rollout)
    engine = TeacherEngine()
    policy = LLMPolicy(engine, tokenizer, rollout, greedy=True, env_options=env_options)
    for e, ep in enumerate(episodes):
        key = 0
        history: list[tuple[str, str]] = []
        for t, st in enumerate(ep.steps):
            ids = demo_action_ids(st, rollout, tokenizer, reuse)
            # a step without a demonstration is still played back: later prompts show it
            engine.force(key, ids if ids is not None else written_ids(st, rollout, tokenizer, reuse))
            obs = Observation(text=st.observation, admissible=st.admissible, goal=ep.goal, anchor=st.anchor)
            ctx = TurnContext(key=key, task_id=ep.task_id, t=t, observation=obs, history=list(history))
            act = policy.act([ctx])[0]
            if act.error:  # the prompt cannot fit: the policy would have ended the episode here
                break
            if ids is not None:
                allowed = None
                if rollout.action_mode == "admissible" and st.admissible:
                    allowed = allowed_token_ids(tokenizer, st.admissible, ids)
                yield Demonstration(e, t, list(act.prompt_ids or []), ids, allowed)
            history.append((st.observation, st.action))
        policy.end_episode(key)
