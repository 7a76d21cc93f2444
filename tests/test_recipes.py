"""The shipped recipes load and are consistent with each other."""

import yaml

from agentrl.config import recipe_from_dict
from agentrl.recipe_files import RECIPES_DIR as RECIPES


def _load(name: str):
    return recipe_from_dict(yaml.safe_load((RECIPES / f"{name}.yaml").read_text()), (), source=name)


def test_reference_points_use_the_quickstart_budget():
    """Defect 11 (issue 11): tw-quick-random/-expert used max_steps 12 while the quickstart
    they are compared with uses 8 (random play wins 31.2% at 12 steps, 12.5% at 8)."""
    quick = _load("quickstart")
    for name in ("tw-quick-random", "tw-quick-expert", "tw-quick-llm"):
        r = _load(name)
        assert r.env.suite == quick.env.suite
        assert r.env.max_steps == quick.env.max_steps, name
