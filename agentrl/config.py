"""Recipe schema (DESIGN §8): typed, validated on load, with dotted `--set` overrides.

A recipe is YAML. Every section is a pydantic model that forbids unknown keys, so a
typo is a one-line error naming the key. Credit-method parameters live beside
`method` in the `credit` section and are checked by the method itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentrl.errors import UserError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EnvConfig(_Section):
    suite: str  # a suite name (file envs/<name>.yaml) - defines train/eval task ids
    max_steps: int = Field(20, ge=1)
    workers: int = Field(4, ge=0)  # env worker processes; 0 = step in this process
    step_timeout: float = Field(30.0, gt=0)  # seconds before a hung env is killed
    invalid_penalty: float = 0.0  # reward added on an invalid / unparseable action


class ModelConfig(_Section):
    path: str = "smollm2-135m-instruct"  # HF dir, GGUF file, or the default name
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = Field(0, ge=0)  # torch CPU threads; 0 = $AGENTRL_THREADS if set, else torch's default


class RolloutConfig(_Section):
    group_size: int = Field(4, ge=1)
    groups_per_iteration: int = Field(8, ge=1)
    action_mode: Literal["admissible", "free"] = "admissible"
    history: int = Field(2, ge=-1)  # turns of history in the prompt; -1 = all
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(32, ge=1)
    max_prompt_tokens: int = Field(2048, ge=64)
    action_parser: Literal["tag", "last_line"] = "tag"  # free mode: <action>..</action>, else last line
    system_prompt: str | None = None  # None = built-in default
    batch_size: int = Field(32, ge=1)  # max episodes generated together


class CreditConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    method: str = "grpo"

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LearnerConfig(_Section):
    lora_rank: int = Field(16, ge=1)
    lora_alpha: float = 32.0
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    layers: list[int] | None = None  # None = all layers; negative indices count from the top
    lr: float = Field(1.0e-4, gt=0)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = 0.0
    layout: Literal["concat", "per_step"] = "concat"
    clip_eps: float = Field(0.2, gt=0)
    dual_clip: float | None = 3.0
    kl_coef: float = Field(0.0, ge=0)
    entropy_coef: float = 0.0
    epochs: int = Field(1, ge=1)  # passes over each iteration's batch
    tokens_per_step: int = Field(4096, ge=1)  # gradient accumulation target per optimiser step
    micro_batch_tokens: int = Field(2048, ge=1)
    max_grad_norm: float = Field(1.0, gt=0)
    # Leave out of the update the episodes whose advantage is 0 at every step (e.g. grpo groups
    # that all won or all lost): with kl_coef and entropy_coef at 0 they carry no gradient, only
    # cost a forward/backward and dilute the token mean. Ignored when kl_coef or entropy_coef > 0.
    drop_zero_advantage: bool = True


class TrainConfig(_Section):
    iterations: int = Field(10, ge=1)
    eval_every: int = Field(5, ge=0)  # 0 = only before and after
    checkpoint_every: int = Field(1, ge=1)
    output_dir: str = "runs"  # checkpoints go to <output_dir>/<run name>-<run id>/


class EvalConfig(_Section):
    episodes: int | None = Field(None, ge=1)  # None = the whole eval split
    greedy: bool = True
    group_size: int = Field(1, ge=1)


class Recipe(_Section):
    name: str = "run"
    seed: int = 0
    env: EnvConfig
    policy: Literal["llm", "random", "expert"] = "llm"
    model: ModelConfig = ModelConfig()
    rollout: RolloutConfig = RolloutConfig()
    credit: CreditConfig = CreditConfig()
    learner: LearnerConfig = LearnerConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise UserError(f"--set {dotted}: '{k}' is not a section")
        node = nxt
    node[keys[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """`a.b=c` -> ("a.b", parsed YAML scalar of c)."""
    if "=" not in item:
        raise UserError(f"--set expects key=value, got '{item}'")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key:
        raise UserError(f"--set expects key=value, got '{item}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _format_error(err: ValidationError) -> str:
    e = err.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "recipe"
    if e["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    if e["type"] == "missing":
        return f"missing key '{where}'"
    return f"bad value for '{where}': {e['msg']}"


def recipe_from_dict(data: dict, overrides: list[str] | tuple[str, ...] = (), source: str = "recipe") -> Recipe:
    data = dict(data)
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise UserError(f"{source}: {_format_error(err)}") from None


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"recipe not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UserError(f"{p}: malformed YAML{where}") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: a recipe must be a YAML mapping")
    return recipe_from_dict(data, overrides, source=str(p))


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
