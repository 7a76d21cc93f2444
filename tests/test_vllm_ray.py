"""The vllm engine as a Ray engine actor (`runtime.backend: ray`, `rollout.engine: vllm`).

Runs where both vLLM and Ray are installed (CI's vllm step); skipped otherwise. One local vLLM
engine and one engine actor (each start costs 15-50 s here).
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm")
ray = pytest.importorskip("ray")

from test_ray_runtime import _play, _same  # noqa: E402
from test_vllm_engine import tiny  # noqa: E402, F401  (the module's tiny model fixture)

pytestmark = [pytest.mark.vllm, pytest.mark.ray]


def test_vllm_engine_actor_generates_and_reloads_like_a_local_one(tiny):  # noqa: F811
    import torch

    from agentrl.config import recipe_from_dict
    from agentrl.engines.factory import make_engine
    from agentrl.learner.lora import add_lora
    from agentrl.policy.llm import LLMPolicy

    model, tok, d = tiny
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="agentrl")
    data = {
        "env": {"suite": "toy-pick", "workers": 0},
        "model": {"path": str(d)},
        "rollout": {
            "engine": "vllm",
            "temperature": 1.0,
            "history": -1,
            "max_prompt_tokens": 1024,
            "vllm": {"dtype": "float32", "kv_cache_gib": 0.5},
        },
        "learner": {"lora_rank": 8, "target_modules": ["q_proj", "v_proj"]},
    }
    local_recipe = recipe_from_dict(data)
    ray_recipe = recipe_from_dict({**data, "runtime": {"backend": "ray", "engines": 1, "engine_resources": {"CPU": 1}}})
    peft = add_lora(model, local_recipe.learner)
    local_engine = make_engine(local_recipe, None, tok)
    remote_engine = make_engine(ray_recipe, None, tok)
    try:
        assert remote_engine.name == "vllm" and remote_engine.weights == "merged"
        local, remote = (
            LLMPolicy(local_engine, tok, local_recipe.rollout, seed=3),
            LLMPolicy(remote_engine, tok, ray_recipe.rollout, seed=3),
        )
        _same(_play(local, groups=2), _play(remote, groups=2), tol=1e-4)
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            for n, p in peft.named_parameters():
                if "lora_B" in n:
                    p.add_(0.5 * torch.randn(p.shape, generator=g))
        local_engine.load_weights(peft, 1)
        remote_engine.load_weights(peft, 1)
        assert remote.weights_version == 1
        _same(_play(local, groups=2), _play(remote, groups=2), tol=1e-4)
    finally:
        remote_engine.close()
        local_engine.close()
        if started:
            ray.shutdown()
