"""Turn-level environment adapters (DESIGN §2)."""

from agentrl.envs.base import META_COMMANDS, Observation, TextEnv, Transition, clean_action
from agentrl.envs.registry import env_name_of, list_envs, make_env, register_env

__all__ = [
    "META_COMMANDS", "Observation", "TextEnv", "Transition", "clean_action",
    "env_name_of", "list_envs", "make_env", "register_env",
]
