"""Build the policy a recipe names: `random`, `expert` or `llm` on the recipe's engine (optionally with a checkpoint).

The LLM modules are imported only when an `llm` policy is built: `agentrl.evaluate` imports this
module, and an eval of a scripted policy should not spend seconds loading torch, transformers and peft.
"""

from __future__ import annotations

from agentrl.config import Recipe
from agentrl.policy.scripted import ExpertPolicy, RandomPolicy


def make_policy(recipe: Recipe, greedy: bool, adapter_path: str | None = None, seed: int | None = None):
    """Returns (policy, name). `adapter_path` is a LoRA adapter dir from a checkpoint."""
    from agentrl.envs.suites import env_options

    seed = recipe.seed if seed is None else seed
    options = env_options(recipe.env)  # the adapter's attributes (fallback, system_intro) may depend on them
    if recipe.policy == "random":
        return RandomPolicy(seed, env_options=options), "random"
    if recipe.policy == "expert":
        return ExpertPolicy(env_options=options), "expert"
    from agentrl.engines.factory import make_engine, model_config, resolve_engine
    from agentrl.policy.llm import LLMPolicy
    from agentrl.policy.model import load_model, load_tokenizer

    name = f"llm:{recipe.model.path}"
    engine_name = recipe.rollout.engine
    if engine_name == "auto":
        engine_name = resolve_engine(recipe, model_config(recipe))
    if engine_name == "vllm" and not adapter_path:  # vLLM loads the weights itself
        tokenizer = load_tokenizer(recipe.model.path)
        engine = make_engine(recipe, None, tokenizer, seed=seed)
        return LLMPolicy(engine, tokenizer, recipe.rollout, greedy=greedy, seed=seed, env_options=options), name
    model, tokenizer = load_model(recipe.model)
    if adapter_path:
        from agentrl.learner.checkpoint import load_adapter_for_eval

        model = load_adapter_for_eval(model, adapter_path)
        name += f"+{adapter_path}"
    engine = make_engine(recipe, model, tokenizer, seed=seed)
    if adapter_path:
        engine.load_weights(model, version=1)  # "not the base model"; the run's episodes name the checkpoint
    return LLMPolicy(engine, tokenizer, recipe.rollout, greedy=greedy, seed=seed, env_options=options), name
