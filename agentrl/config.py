"""Recipe schema (ARCHITECTURE.md §9): typed, validated on load, with dotted `--set` overrides.

A recipe is YAML. Every section is a pydantic model that forbids unknown keys, so a
typo is a one-line error naming the key. Credit-method parameters live beside
`method` in the `credit` section and are checked by the method itself.
"""

from __future__ import annotations

import copy
import math
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from agentrl.errors import UserError
from agentrl.recipe_files import resolve_recipe

MAX_NAME_CHARS = 100  # a run name becomes a folder name (<output_dir>/<name>-<id>/)
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # incl. line and paragraph separators


def _union_args(ann: Any) -> tuple[Any, ...] | None:
    return get_args(ann) if get_origin(ann) in (Union, types.UnionType) else None


def _takes(ann: Any, kinds: tuple[type, ...]) -> bool:
    """Whether annotation `ann` accepts one of `kinds` as a plain value (through Optional/Union/Annotated)."""
    if ann is Any:
        return True
    if get_origin(ann) is Annotated:
        return _takes(get_args(ann)[0], kinds)
    if (args := _union_args(ann)) is not None:
        return any(_takes(a, kinds) for a in args)
    if get_origin(ann) is Literal:
        return any(type(a) in kinds for a in get_args(ann))
    return ann in kinds


def _bool_for_number(ann: Any, value: Any) -> bool:
    """True when `value` is (or holds) a boolean where `ann` wants a number: pydantic's lax mode
    would read `true` as 1, so `--set seed=true` would silently become `seed: 1`."""
    if isinstance(value, bool):
        return _takes(ann, (int, float)) and not _takes(ann, (bool,))
    if isinstance(value, list):
        for a in _union_args(ann) or (ann,):
            if get_origin(a) is list and get_args(a):
                return any(_bool_for_number(get_args(a)[0], v) for v in value)
    return False


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    return False


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a run name (it becomes a folder name), or None if it can."""
    if not name:
        return "a run name must not be empty"
    if len(name) > MAX_NAME_CHARS:
        return f"a run name must be at most {MAX_NAME_CHARS} characters (got {len(name)})"
    if "/" in name or "\\" in name:
        return "a run name must not contain a path separator ('/' or '\\')"
    if _CONTROL_CHARS.search(name):
        return "a run name must not contain control characters or newlines"
    if name in (".", ".."):
        return f"a run name must not be '{name}'"
    return None


class _Section(BaseModel):
    # allow_inf_nan=False: `.inf` / `.nan` are refused for every float (a timeout of .inf, a lr of .nan);
    # coerce_numbers_to_str: `name: 123` is the text "123".
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, coerce_numbers_to_str=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _bool_for_number(field.annotation, value):
            raise ValueError(f"expected a number, got a boolean ({str(value).lower()})")
        return value


class EnvConfig(_Section):
    suite: str  # a suite name (agentrl/suites/<name>.yaml, or $AGENTRL_ENVS_DIR) or a .yaml path
    max_steps: int = Field(20, ge=1)
    workers: int = Field(4, ge=0)  # env worker processes; 0 = step in this process
    step_timeout: float = Field(30.0, gt=0)  # seconds before a hung env is killed
    invalid_penalty: float = 0.0  # reward added on an invalid / unparseable action
    # keyword arguments of the adapter's factory, over the suite's `options` (docs/env-contract.md);
    # an option the adapter does not take is an error before any work
    options: dict[str, Any] = Field(default_factory=dict)


class ModelConfig(_Section):
    path: str = "smollm2-135m-instruct"  # HF dir, GGUF file, or the default name
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = Field(0, ge=0)  # torch CPU threads; 0 = $AGENTRL_THREADS if set, else torch's default
    # dtype of the matmuls (torch.autocast) for the sampler's and the learner's forwards; `dtype` stays the
    # weights' dtype. auto = bfloat16 on CUDA, float32 elsewhere; bfloat16 on a CPU needs native bf16 (AVX512-BF16/AMX);
    # bfloat16_if_native = bfloat16 where it is native (CUDA, such CPUs), float32 elsewhere
    compute_dtype: Literal["auto", "float32", "bfloat16", "bfloat16_if_native"] = "auto"


class VLLMConfig(_Section):
    """`rollout.vllm`: settings of the vllm engine (ignored by hf)."""

    # auto = bfloat16 on a GPU or a CPU with native bf16 (AVX512-BF16/AMX), float32 on other CPUs (where vLLM's
    # bf16 was 3.2x slower than its float32: README, "Engines")
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = "auto"
    # how new weights reach the engine after each update: lora = hot-swap the adapter (a new LoRARequest);
    # merged = merge the adapter into the base weights and reload them in place; auto = merged on CPU, lora on GPU
    weights: Literal["auto", "lora", "merged"] = "auto"
    enforce_eager: bool = True  # no torch.compile / graphs: start-up 15-30 s instead of 1-2 min on CPU
    # CPU: KV-cache space in GiB (VLLM_CPU_KVCACHE_SPACE); auto = room for rollout.batch_size full-length sequences
    # at the engine's dtype (at least 2, at most half the memory; whole GiB, rounded up): a smaller cache thrashes
    kv_cache_gib: float | Literal["auto"] = "auto"
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)  # GPU: the share of its memory vLLM may take
    threads_bind: str = "auto"  # CPU: cores its OpenMP threads bind to (VLLM_CPU_OMP_THREADS_BIND); auto = all

    @field_validator("kv_cache_gib", mode="before")
    @classmethod
    def _gib_or_auto(cls, value: Any) -> Any:
        # one message for both arms of the union (pydantic would name its arm, 'constrained-float')
        if value == "auto":
            return value
        try:
            gib = None if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            gib = None
        if gib is None or not math.isfinite(gib) or gib <= 0:
            raise ValueError(f"expected a size in GiB > 0 or auto, got {value!r}")
        return gib


class RolloutConfig(_Section):
    # the generation engine: hf (agentrl's decoding loop on transformers) | vllm (pip install 'agentrl[vllm]') |
    # auto = vllm where vLLM is installed and can serve the recipe, else hf (`agentrl.engines.factory`)
    engine: Literal["auto", "hf", "vllm"] = "auto"
    vllm: VLLMConfig = VLLMConfig()
    group_size: int = Field(4, ge=1)
    groups_per_iteration: int = Field(8, ge=1)
    action_mode: Literal["admissible", "free"] = "admissible"
    history: int = Field(2, ge=-1)  # turns of history in the prompt; -1 = all
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(32, ge=1)
    max_prompt_tokens: int = Field(2048, ge=64)
    action_parser: Literal["tag", "last_line"] = "tag"  # free mode: <action>..</action>, else last line
    system_prompt: str | None = None  # None = built-in default (its first sentence: the adapter's system_intro)
    # the valid commands listed in each user message: all | none | K (the first K, then "(N more not shown)");
    # admissible mode still constrains decoding to the full list
    show_admissible: str | int = "all"
    batch_size: int = Field(32, ge=1)  # max episodes generated together

    @field_validator("show_admissible")
    @classmethod
    def _show_admissible(cls, value: str | int) -> str | int:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if value in ("all", "none") or (isinstance(value, int) and value >= 1):
            return value
        raise ValueError(f"expected all, none or a number K >= 1 of commands to list, got {value!r}")


class CreditConfig(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False, coerce_numbers_to_str=True)
    method: str = "grpo"

    @model_validator(mode="after")
    def _finite_params(self) -> CreditConfig:
        # the method checks its own parameters; non-finite numbers are refused here for all of them
        for key, value in (self.model_extra or {}).items():
            if _non_finite(value):
                raise ValueError(f"credit.{key} must be a finite number, got {value}")
        return self

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
    # The PPO ratio's old log-probs: `engine` = those the rollout engine stored; `recompute` = the learner's own
    # (no grad, before the update), with each token's policy-gradient term weighted by the truncated importance
    # ratio min(exp(learner_old - engine), tis_cap) (TIS); `auto` = engine for the HF engine running at the
    # learner's compute dtype, recompute otherwise (`agentrl.learner.update.resolve_old_logprobs`).
    old_logprobs: Literal["auto", "engine", "recompute"] = "auto"
    tis_cap: float = Field(2.0, ge=1.0)  # C of the TIS weight min(exp(learner_old - engine), C)


class TrainConfig(_Section):
    iterations: int = Field(10, ge=1)
    eval_every: int = Field(5, ge=0)  # 0 = only before and after
    checkpoint_every: int = Field(1, ge=1)
    output_dir: str = "runs"  # checkpoints go to <output_dir>/<run name>-<run id>/
    # bounded-staleness asynchronous training: 0 = roll out, then update (exact resume); 1 | 2 = the
    # rollout of iteration k+1 (k+2) runs while the learner updates on k, with weights at most this many
    # updates old, corrected by truncated importance sampling (needs an engine with its own weights:
    # rollout.engine vllm or runtime.backend ray)
    max_staleness: int = Field(0, ge=0, le=2)
    # experiment trackers that get the recipe, every iteration's metrics and a few transcripts, each with
    # its extra (pip install 'agentrl[wandb]'); files under the run folder (agentrl/trackers/, README)
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "trackio"]] = []
    # warm start: `RUN` or `RUN:N`, a training or `agentrl sft` run's checkpoint (default its last) whose
    # policy adapter this run starts from (a fresh optimiser); None = a fresh adapter
    init_from: str | None = None

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_tracker_as_list(cls, value: Any) -> Any:
        # `--set train.report_to=wandb` / `report_to: wandb,mlflow`: a name (or comma-separated names) is a list
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("report_to")
    @classmethod
    def _no_repeated_tracker(cls, value: list[str]) -> list[str]:
        repeated = sorted({v for v in value if value.count(v) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} named more than once")
        return value


class RuntimeConfig(_Section):
    """`runtime`: where env steps and generation run (ARCHITECTURE.md §8). `local` = this process and its
    env worker processes (today's behaviour); `ray` = env workers and rollout engines as Ray actors
    (`pip install 'agentrl[ray]'`); the driver keeps the learner and is the only writer of runs.db."""

    backend: Literal["local", "ray"] = "local"
    # ray: auto = join the cluster named by $AGENTRL_RAY_ADDRESS or $RAY_ADDRESS, else start a Ray instance
    # in this process; local = always start one; "host:port" = join that cluster's head
    address: str = "auto"
    env_workers: int = Field(2, ge=1)  # env actors (each hosts several envs: slot k on actor k % N)
    engines: int = Field(1, ge=1)  # rollout engine actors; each gets whole groups
    env_resources: dict[str, float] = Field(default_factory=lambda: {"CPU": 0.5})
    engine_resources: dict[str, float] = Field(default_factory=lambda: {"CPU": 1.0})
    spread: bool = True  # place actors on as many nodes as possible (Ray's SPREAD strategy)


class EvalConfig(_Section):
    episodes: int | None = Field(None, ge=1)  # None = the whole eval split
    greedy: bool = True
    group_size: int = Field(1, ge=1)


class SFTSource(_Section):
    """`sft.from`: which stored episodes are demonstrations."""

    runs: list[str] = Field(min_length=1)  # run ids or names (eval or training runs)
    db: str | None = None  # their database; None = the one `agentrl sft` writes to
    split: Literal["train", "eval"] | None = "train"  # None = both
    won_only: bool = True
    policy: str | None = None  # only episodes of this policy ("expert", "random", "llm:..."); None = any
    max_episodes: int | None = Field(None, ge=1)  # the first N selected (by id); None = all

    @field_validator("runs", mode="before")
    @classmethod
    def _one_run_as_list(cls, value: Any) -> Any:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return [v.strip() for v in str(value).split(",") if v.strip()]
        return value


class SFTConfig(_Section):
    """`sft`: `agentrl sft` trains the recipe's LoRA adapter on stored episodes (agentrl/sft.py)."""

    source: SFTSource = Field(alias="from")
    epochs: int = Field(3, ge=1)  # passes over the demonstrations; a checkpoint after each
    lr: float | None = Field(None, gt=0)  # None = learner.lr
    eval_every: int = Field(0, ge=0)  # epochs between held-out evals; 0 = only before and after

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, allow_inf_nan=False, coerce_numbers_to_str=True, populate_by_name=True
    )


class Recipe(_Section):
    name: str = "run"  # checkpoints go to <train.output_dir>/<name>-<run id>/
    seed: int = 0
    env: EnvConfig
    policy: Literal["llm", "random", "expert"] = "llm"
    model: ModelConfig = ModelConfig()
    rollout: RolloutConfig = RolloutConfig()
    credit: CreditConfig = CreditConfig()
    learner: LearnerConfig = LearnerConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    sft: SFTConfig | None = None  # what `agentrl sft` trains on; train ignores it

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        problem = name_problem(name)
        if problem:
            raise ValueError(problem)
        return name


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


def _annotation_of(dotted: str) -> Any:
    """The type annotation of a dotted recipe key, or None when it is not a known field."""
    model: type[BaseModel] = Recipe
    keys = dotted.split(".")
    for i, k in enumerate(keys):
        field = model.model_fields.get(k)
        if field is None:
            return None
        ann = field.annotation
        if i == len(keys) - 1:
            return ann
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return None


def parse_override(item: str) -> tuple[str, Any]:
    """`a.b=c` -> ("a.b", parsed YAML scalar of c). For a text key (`name`, `model.device`, ...) a
    value YAML would read as a number or boolean is kept as typed: `name=007` is "007"."""
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
    if isinstance(value, (bool, int, float)):
        ann = _annotation_of(key)
        if ann is not None and _takes(ann, (str,)) and not _takes(ann, (type(value),)):
            value = raw.strip()
    return key, value


def _error_loc(err: ValidationError) -> str:
    return ".".join(str(p) for p in err.errors()[0]["loc"])


def _format_error(err: ValidationError) -> str:
    e = err.errors()[0]
    where = _error_loc(err) or "recipe"
    if e["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    if e["type"] == "missing":
        return f"missing key '{where}'"
    msg = e["msg"].removeprefix("Value error, ")
    return f"bad value for '{where}': {msg}"


def recipe_from_dict(data: dict, overrides: list[str] | tuple[str, ...] = (), source: str = "recipe") -> Recipe:
    """Validate a recipe mapping with `--set` overrides applied; a bad value is a UserError naming
    the override that set it (`--set seed=true: ...`), else `source` (the file, or the stored run)."""
    data = copy.deepcopy(data)
    parsed = []
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
        parsed.append((item, key))
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        loc = _error_loc(err)
        for item, key in reversed(parsed):  # the last override of a key is the one that counts
            if loc == key or loc.startswith(key + ".") or key.startswith(loc + "."):
                raise UserError(f"--set {item}: {_format_error(err)}") from None
        raise UserError(f"{source}: {_format_error(err)}") from None


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """A recipe from a file, or by name from the packaged recipes (`quickstart`): see agentrl.recipe_files."""
    p = resolve_recipe(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{p}: not a text file (a recipe is YAML in UTF-8)") from None
    except OSError as e:
        raise UserError(f"cannot read recipe {p}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UserError(f"{p}: malformed YAML{where}") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: a recipe must be a YAML mapping")
    return recipe_from_dict(data, overrides, source=str(p))


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json", by_alias=True), sort_keys=False)
