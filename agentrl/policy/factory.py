"""Build the policy a recipe names: `random`, `expert` or `llm` (optionally with a LoRA checkpoint).

The LLM modules are imported only when an `llm` policy is built: `agentrl.evaluate` imports this
module, and an eval of a scripted policy should not spend seconds loading torch, transformers and peft.
"""

from __future__ import annotations

from agentrl.config import Recipe
from agentrl.policy.scripted import ExpertPolicy, RandomPolicy


def make_policy(recipe: Recipe, greedy: bool, adapter_path: str | None = None, seed: int | None = None):
    """Returns (policy, name). `adapter_path` is a LoRA adapter dir from a checkpoint."""
    seed = recipe.seed if seed is None else seed
    if recipe.policy == "random":
        return RandomPolicy(seed), "random"
    if recipe.policy == "expert":
        return ExpertPolicy(), "expert"
    from agentrl.policy.hf import HFPolicy
    from agentrl.policy.model import load_model

    model, tokenizer = load_model(recipe.model)
    name = f"llm:{recipe.model.path}"
    if adapter_path:
        from agentrl.learner.checkpoint import load_adapter_for_eval

        model = load_adapter_for_eval(model, adapter_path)
        name += f"+{adapter_path}"
    return HFPolicy(model, tokenizer, recipe.rollout, greedy=greedy, seed=seed), name
