"""Every agentrl adapter as a standard `gymnasium.Env`.

    import gymnasium, agentrl.envs
    env = gymnasium.make("agentrl/TextWorld-v0", task="textworld/w2-o3-q4/seed-17")
    text, info = env.reset()
    text, reward, terminated, truncated, info = env.step(info["admissible"][0])

Registered ids: agentrl/TextWorld-v0, agentrl/ALFWorld-v0, agentrl/Toy-v0 (adapters,
through one generic `AdapterEnv`), `agentrl/<name>-v0` for every third-party adapter installed
through the `agentrl.envs` entry points (e.g. agentrl/lights-v0), and agentrl/ToyText-v0 (a plain
gymnasium text env used to test the `gym:` wrapper). `gymnasium.make(id, task=..., env_options={...})`
passes adapter options. The task can also be chosen per episode with
`env.reset(options={"task": ...})`. Observations and actions are `gymnasium.spaces.Text`;
`info` carries admissible, goal, anchor, won, valid and the adapter's own info
(expert_plan, score, ...). Registration is lazy (entry-point strings): nothing heavy is
imported until an env is made.
"""

from __future__ import annotations

import re
from typing import Any

import gymnasium
from gymnasium.spaces import Text

from agentrl.envs.base import MAX_ACTION_CHARS, Observation
from agentrl.envs.registry import env_name_of, make_env, third_party_envs
from agentrl.errors import UserError

# Printable ASCII, tab/newline, Latin-1 letters and common typographic punctuation:
# covers TextWorld/ALFWorld texts; anything else is shown as "?" (never raises).
TEXT_CHARSET = (
    "\t\n"
    + "".join(chr(i) for i in range(32, 127))
    + "".join(chr(i) for i in range(160, 256))
    + "\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u2022"
)
_CHARSET_SET = frozenset(TEXT_CHARSET)
MAX_OBS_CHARS = 65536

ADAPTER_IDS = {"agentrl/TextWorld-v0": "textworld", "agentrl/ALFWorld-v0": "alfworld", "agentrl/Toy-v0": "toy"}
DEFAULT_TASKS = {"toy": "toy/chain-3/seed-0"}
_GYM_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # adapter names usable in a gymnasium id


def adapter_gym_id(adapter: str) -> str | None:
    """The gymnasium id of a third-party adapter: `agentrl/<name>-v0` (None if the name cannot be one)."""
    return f"agentrl/{adapter}-v0" if _GYM_NAME.fullmatch(adapter) else None


def fit_text(text: str, max_length: int = MAX_OBS_CHARS) -> str:
    """Make `text` a member of the Text space: unknown characters -> '?', cut to max_length."""
    if not _CHARSET_SET.issuperset(text):
        text = "".join(c if c in _CHARSET_SET else "?" for c in text)
    return text[:max_length]


class AdapterEnv(gymnasium.Env):
    """A gymnasium view of one agentrl adapter (`adapter` = registry name)."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        adapter: str,
        task: str | None = None,
        max_length: int = MAX_OBS_CHARS,
        env_options: dict[str, Any] | None = None,
    ) -> None:
        self.adapter = adapter
        self.task = task or DEFAULT_TASKS.get(adapter)
        self.max_length = max_length
        self.observation_space = Text(max_length=max_length, min_length=0, charset=TEXT_CHARSET)
        self.action_space = Text(max_length=MAX_ACTION_CHARS, min_length=0, charset=TEXT_CHARSET)
        self._env = make_env(adapter, env_options)

    def _info(self, obs: Observation, won: bool = False, valid: bool = True) -> dict[str, Any]:
        return {
            **obs.info,
            "admissible": None if obs.admissible is None else list(obs.admissible),
            "goal": obs.goal,
            "anchor": obs.anchor,
            "won": won,
            "valid": valid,
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        task = (options or {}).get("task") or self.task
        if not task:
            raise UserError(
                f"no task: use gymnasium.make(..., task='{self.adapter}/...') or reset(options={{'task': ...}})"
            )
        if env_name_of(task) != self.adapter:
            raise UserError(f"task '{task}' is not a '{self.adapter}' task")
        self.task = task
        obs = self._env.reset(task, seed=seed)
        return fit_text(obs.text, self.max_length), self._info(obs)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        tr = self._env.step(action)
        info = self._info(tr.observation, tr.won, tr.valid)
        return fit_text(tr.observation.text, self.max_length), float(tr.reward), tr.terminated, tr.truncated, info

    def close(self) -> None:
        self._env.close()
        super().close()


def register_gymnasium_envs() -> None:
    """Register the agentrl/* ids with gymnasium, third-party adapters' included (idempotent; called on
    `import agentrl.envs`)."""
    for env_id, adapter in ADAPTER_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id, entry_point="agentrl.envs.gymnasium_api:AdapterEnv", kwargs={"adapter": adapter}
            )
    for adapter in third_party_envs():
        env_id = adapter_gym_id(adapter)
        if env_id is not None and env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id, entry_point="agentrl.envs.gymnasium_api:AdapterEnv", kwargs={"adapter": adapter}
            )
    if "agentrl/ToyText-v0" not in gymnasium.registry:
        gymnasium.register(id="agentrl/ToyText-v0", entry_point="agentrl.envs.toy:ToyTextEnv")
