"""Turn-level environment adapters (ARCHITECTURE.md §3; the contract for adapter authors:
docs/env-contract.md).

Importing this package registers the gymnasium ids `agentrl/TextWorld-v0`, `agentrl/ALFWorld-v0`,
`agentrl/Toy-v0`, `agentrl/ToyText-v0` and `agentrl/<name>-v0` of every third-party adapter.
"""

from agentrl.envs.base import META_COMMANDS, Observation, TextAdventureEnv, TextEnv, Transition, clean_action
from agentrl.envs.gymnasium_api import register_gymnasium_envs
from agentrl.envs.registry import env_name_of, list_envs, make_env, register_env, unregister_env

register_gymnasium_envs()

__all__ = [
    "META_COMMANDS",
    "Observation",
    "TextAdventureEnv",
    "TextEnv",
    "Transition",
    "clean_action",
    "env_name_of",
    "list_envs",
    "make_env",
    "register_env",
    "register_gymnasium_envs",
    "unregister_env",
]
