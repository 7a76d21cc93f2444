"""The engine contract (ARCHITECTURE.md §7): what the LLM policy asks of a generation engine.

An engine takes a batch of token-id prompts with the sampling settings and, in admissible mode,
each prompt's admissible commands, and returns for each the generated token ids and their
log-probs. The log-prob is `agentrl.policy.logprobs`' quantity: the temperature-scaled
distribution, renormalised over the command trie's allowed tokens when constrained, before any
top-p cut — the quantity the learner recomputes. How an engine reuses earlier turns (a per-episode
KV cache, vLLM's prefix cache) is its own business; `key` names the episode so it can.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32  # free mode only: a constrained command ends where its trie path ends
    greedy: bool = False
    stop_ids: tuple[int, ...] = ()  # free mode: generation ends after one of these (it is kept)


@dataclass
class Request:
    key: int  # the episode (per-episode engine state, e.g. its KV cache)
    prompt_ids: list[int]
    commands: list[str] | None = None  # admissible mode: only these commands' canonical tokens
    seed: int | None = None  # this turn's sampling stream; None: the engine's own stream
    new_episode: bool = False  # the first turn of an episode: nothing earlier may be reused
    group: str = ""  # the episode's group (episodes sharing an initial state): an engine may co-locate them


@dataclass
class Generation:
    ids: list[int]
    logprobs: list[float]
    command: str | None = None  # constrained: the admissible command the ids spell


@dataclass
class EngineStats:
    turns: int = 0
    forward_passes: int = 0
    prompt_tokens: int = 0  # tokens of all prompts
    prefilled_tokens: int = 0  # prompt tokens actually run through the model (the rest came from a cache)
    generated_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    generate_s: float = 0.0  # wall time inside `generate`, all of it
    extra: dict = field(default_factory=dict)


class Engine(Protocol):
    name: str
    stats: EngineStats
    weights_version: int  # which weights generate now (0 = the base model; the trainer bumps it per update)

    def generate(self, requests: list[Request], sampling: Sampling) -> list[Generation]: ...

    def end(self, key: int) -> None:
        """The episode `key` finished: release what the engine keeps for it."""
        ...

    def reset(self) -> None:
        """Forget every episode's state (e.g. after the weights changed)."""
        ...

    def load_weights(self, model, version: int) -> float:
        """Generate with `model`'s current weights (base + LoRA adapter) from now on, as weights version
        `version`; returns the seconds it took."""
        ...
