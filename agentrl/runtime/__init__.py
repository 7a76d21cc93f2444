"""Where env steps and generation run (ARCHITECTURE.md §10): `runtime.backend: local | ray`.

`make_pool` builds the env pool a recipe's runtime names: `local` = `agentrl.envs.pool.EnvPool`
(worker processes on this machine), `ray` = `agentrl.runtime.ray_envs.RayEnvPool` (env actors on
the cluster). The rollout engines' side is `agentrl.engines.factory.make_engine`, which builds
`agentrl.runtime.ray_engines.RayEngine` under `ray`.
"""

from __future__ import annotations

from agentrl.config import Recipe


def make_pool(recipe: Recipe):
    """The env pool of `recipe.runtime` (a context manager; `close()` ends its workers or actors), making
    its adapters with the recipe's env options (`agentrl.envs.suites.env_options`)."""
    from agentrl.envs.suites import env_options

    options = env_options(recipe.env)
    if recipe.runtime.backend == "ray":
        from agentrl.runtime.cluster import connect
        from agentrl.runtime.ray_envs import RayEnvPool

        connect(recipe.runtime)
        rt = recipe.runtime
        return RayEnvPool(
            rt.env_workers, recipe.env.step_timeout, dict(rt.env_resources), spread=rt.spread, env_options=options
        )
    from agentrl.envs.pool import EnvPool

    return EnvPool(recipe.env.workers, recipe.env.step_timeout, env_options=options)
