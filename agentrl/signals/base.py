"""The signal-provider protocol and helpers shared by the providers.

A provider is the learned (or model-computed) part of a credit method: it runs on the policy
model during training and writes the inputs the method reads (`Step.signals`,
`Episode.signals`) into the stored episodes before the advantages are computed.
`episodes` is the list of `EpisodeRecord`s of one training iteration, as stored.

Besides the protocol, a provider class that the credit registry names has:
- `Params`: a frozen dataclass of its own parameters (defaults and checks); the recipe's
  `credit:` keys that are its fields go to it, the method's fields to the method;
- a constructor `(model, tokenizer, recipe, params: Params | None = None, method=None)`,
  `method` being the credit method instance built from the same recipe section.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from agentrl.credit.base import CreditError
from agentrl.store.records import EpisodeRecord


@runtime_checkable
class SignalProvider(Protocol):
    def compute(self, episodes: list[EpisodeRecord]) -> dict:
        """BEFORE the advantages: fill step.info["signals"] / episode.info["signals"]; returns metrics."""
        ...

    def update(self, episodes: list[EpisodeRecord]) -> dict:
        """AFTER the policy update: train the learned part on this batch; returns metrics."""
        ...

    def state_dict(self) -> dict:
        """What a checkpoint saves ({name: state dict}, for torch.save)."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Restore from a checkpoint's saved states."""
        ...


def check_int(method: str, name: str, value: Any, lo: int = 1) -> int:
    """An integer >= lo (not a bool), else CreditError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise CreditError(f"credit method '{method}': parameter '{name}' must be an integer >= {lo}, got {value!r}")
    return value


def episode_return(rec: EpisodeRecord) -> float:
    """R(τ) as the credit methods see it from `train.credit_episodes` (no outcome: the reward sum)."""
    return float(sum(s.reward for s in rec.steps))


def set_step_signal(step, key: str, value: float) -> None:
    step.info.setdefault("signals", {})[key] = float(value)


def set_episode_signal(rec: EpisodeRecord, key: str, value: float) -> None:
    rec.info.setdefault("signals", {})[key] = float(value)


def batch_key(recs: list[EpisodeRecord]) -> tuple[int, ...]:
    """Identity of a batch (the same record objects): lets update() reuse what compute() computed."""
    return tuple(id(r) for r in recs)
