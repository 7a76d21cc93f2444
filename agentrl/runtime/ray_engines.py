"""Rollout engines as Ray actors (ARCHITECTURE.md §10): `runtime.engines` of them, hf or vllm.

`RayEngine` is an `agentrl.engines.base.Engine` on the driver: the LLM policy calls it as it calls
a local engine. Each engine actor builds its own local engine (`make_local_engine`) on its node:
hf loads the model and the learner's LoRA layout, vllm starts `vllm.LLM`.

- Whole groups to one engine: a request's group (`Request.group`) is assigned to an engine the
  first time it is seen, round-robin in order of arrival, and stays there, so a group's shared
  prefix is cached on one engine (hf: per-episode KV caches; vllm: its prefix cache).
- New weights after every update go through Ray's object store: the driver exports them once
  (`export`: the LoRA adapter's tensors for hf and for vllm's `lora` mode, merged tensors for
  vllm's `merged` mode), puts them in the object store once, and every engine applies them before
  the next rollout (`load_weights` returns when all have). The object store, not a shared path,
  because the nodes of a cluster need not share a filesystem, and one `put` reaches every node.
- A dead engine actor (its node died) is replaced, given the current weights, and its part of the
  batch is generated again: a request carries its own sampling seed, so the retry draws the same
  tokens (up to float rounding); only its cache is lost. A replacement that dies before it starts
  (Ray may place it on a node that is dying) is started again; three failures of the same batch
  fail the rollout (a run can be resumed).
- Which node served each episode: `placement(key)`.
"""

from __future__ import annotations

import time

from agentrl.config import Recipe
from agentrl.engines.base import EngineStats, Generation, Request, Sampling
from agentrl.errors import WorkError

START_TRIES = 3  # tries of one batch (or one replacement) before the rollout fails
_COUNTED = ("turns", "forward_passes", "prompt_tokens", "prefilled_tokens", "generated_tokens", "prefill_s", "decode_s")


class EngineHost:
    """One engine and what it needs to apply new weights: the body of an engine actor."""

    def __init__(self, recipe_data: dict, kind: str, seed: int):
        from agentrl.config import recipe_from_dict
        from agentrl.engines.factory import make_local_engine
        from agentrl.policy.model import load_tokenizer

        recipe = recipe_from_dict(recipe_data, (), source="the driver")
        self.kind = kind
        self.model = None
        if kind == "hf":  # the model and the learner's LoRA layout, whose tensors `apply` sets
            from agentrl.learner.lora import add_lora
            from agentrl.policy.model import load_model

            model, tokenizer = load_model(recipe.model, seed=recipe.seed)
            self.model = add_lora(model, recipe.learner)
            self.model.eval()
        else:
            tokenizer = load_tokenizer(recipe.model.path)
        self.engine = make_local_engine(recipe, self.model, tokenizer, seed, kind)

    def node(self) -> str:
        import ray

        return ray.util.get_node_ip_address()

    def weights_mode(self) -> str | None:
        """vllm: `merged` or `lora` (what its `load_weights` does); hf: None."""
        return getattr(self.engine, "weights", None)

    def generate(self, requests: list[Request], sampling: Sampling) -> tuple[list[Generation], dict]:
        before = {k: getattr(self.engine.stats, k) for k in _COUNTED}
        gens = self.engine.generate(requests, sampling)
        return gens, {k: getattr(self.engine.stats, k) - v for k, v in before.items()}

    def end(self, keys: list[int]) -> None:
        for k in keys:
            self.engine.end(k)

    def reset(self) -> None:
        self.engine.reset()

    def apply(self, payload: dict | None, version: int) -> float:
        t0 = time.perf_counter()
        if payload is None:  # the base model
            self.engine.weights_version = version
        elif self.kind == "hf":
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, payload["state"], adapter_name="policy")
            self.engine.load_weights(self.model, version)
        else:
            self.engine.apply_weights(payload, version)
        return time.perf_counter() - t0

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if callable(close):
            close()


class RayEngine:
    """M engine actors behind the `Engine` protocol (see the module docstring)."""

    def __init__(self, recipe: Recipe, kind: str, seed: int):
        from agentrl.runtime.cluster import connect

        self.ray = connect(recipe.runtime)
        self.name = kind  # the numerics are the engine's: hf or vllm
        self.remote = True
        self.cfg = recipe.runtime
        self.kind, self.seed = kind, seed
        self._recipe_data = recipe.model_dump(mode="json")
        self.stats = EngineStats()
        self.weights_version = 0
        self._payload = None  # the current weights, as an object-store reference
        self._group_of: dict[int, str] = {}
        self._engine_of_group: dict[str, int] = {}
        self._next = 0
        self.restarts = 0
        self._actor_cls = self.ray.remote(EngineHost)
        self.actors = [self._start(i) for i in range(self.cfg.engines)]
        self.nodes = self.ray.get([a.node.remote() for a in self.actors])
        # how new weights reach a vllm engine (`rollout.vllm.weights`, auto: by the engines' device)
        self.weights = self.ray.get(self.actors[0].weights_mode.remote())

    # -- actors -----------------------------------------------------------------------------
    def _start(self, i: int):
        res = dict(self.cfg.engine_resources)
        opts = dict(
            num_cpus=res.pop("CPU", 1.0),
            num_gpus=res.pop("GPU", 0.0),
            resources=res or None,
            max_concurrency=1,
        )
        if self.cfg.spread:
            opts["scheduling_strategy"] = "SPREAD"
        return self._actor_cls.options(**opts).remote(self._recipe_data, self.kind, self.seed + i)

    def _replace(self, i: int) -> None:
        """A new engine actor in place of actor i, given the current weights. A replacement Ray
        placed on a node that was dying (it may, until it has noticed) is started again."""
        last: Exception | None = None
        for _ in range(START_TRIES):
            try:
                self.ray.kill(self.actors[i])
            except Exception:
                pass
            self.actors[i] = self._start(i)
            self.restarts += 1
            try:
                self.ray.get(self.actors[i].apply.remote(self._payload, self.weights_version))
                self.nodes[i] = self.ray.get(self.actors[i].node.remote())
                return
            except self.ray.exceptions.RayActorError as e:
                last = e
                time.sleep(1.0)
        raise WorkError(f"rollout engine {i} could not be restarted: {str(last).splitlines()[0]}")

    # -- the Engine protocol ----------------------------------------------------------------------
    def _engine_for(self, req: Request) -> int:
        group = req.group or f"key-{req.key}"
        self._group_of[req.key] = group
        i = self._engine_of_group.get(group)
        if i is None:
            i = self._engine_of_group[group] = self._next % len(self.actors)
            self._next += 1
        return i

    def placement(self, key: int) -> str | None:
        """The node IP of the engine that serves episode `key`."""
        group = self._group_of.get(key)
        i = self._engine_of_group.get(group) if group is not None else None
        return self.nodes[i] if i is not None else None

    def generate(self, requests: list[Request], sampling: Sampling) -> list[Generation]:
        t0 = time.perf_counter()
        parts: dict[int, list[int]] = {}
        for n, r in enumerate(requests):
            parts.setdefault(self._engine_for(r), []).append(n)
        out: list[Generation | None] = [None] * len(requests)
        pending = {i: self._call(i, [requests[n] for n in idx], sampling) for i, idx in parts.items()}
        for i, ref in pending.items():
            for attempt in range(START_TRIES):
                try:
                    gens, delta = self.ray.get(ref)
                    break
                except self.ray.exceptions.RayActorError as e:  # its node or process died: replace, retry
                    if attempt == START_TRIES - 1:
                        raise WorkError(f"rollout engine {i} died {START_TRIES} times in one batch: {e}") from None
                    self._replace(i)
                    ref = self._call(i, [requests[n] for n in parts[i]], sampling)
            for n, g in zip(parts[i], gens):
                out[n] = g
            for k, v in delta.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)
        self.stats.generate_s += time.perf_counter() - t0
        return out  # type: ignore[return-value]

    def _call(self, i: int, requests: list[Request], sampling: Sampling):
        return self.actors[i].generate.remote(requests, sampling)

    def end(self, key: int) -> None:
        group = self._group_of.pop(key, None)
        i = self._engine_of_group.get(group) if group is not None else None
        if i is not None:
            self.actors[i].end.remote([key])  # fire and forget: it only frees a cache
            if group not in self._group_of.values():
                self._engine_of_group.pop(group, None)

    def reset(self) -> None:
        self._group_of.clear()
        self._engine_of_group.clear()
        for i, ref in enumerate([a.reset.remote() for a in self.actors]):
            try:
                self.ray.get(ref)
            except self.ray.exceptions.RayActorError:  # a new one has nothing to forget
                self._replace(i)

    def load_weights(self, model, version: int) -> float:
        """Export `model`'s weights once, put them in the object store once, and have every engine
        apply them (see the module docstring); returns the seconds it took."""
        t0 = time.perf_counter()
        self.apply_weights(self.export(model), version)
        return time.perf_counter() - t0

    def apply_weights(self, payload: dict, version: int) -> float:
        """Every engine serves `payload` (`export`) from now on, as weights version `version`."""
        t0 = time.perf_counter()
        self._payload = self.ray.put(payload)
        self.weights_version = version
        for i, a in enumerate(list(self.actors)):
            try:
                self.ray.get(a.apply.remote(self._payload, version))
            except self.ray.exceptions.RayActorError:
                self._replace(i)  # the replacement is given the new weights
        return time.perf_counter() - t0

    def export(self, model) -> dict:
        """`model`'s current weights as the engines take them: the LoRA adapter's tensors (hf, and
        vllm's `lora` mode) or merged tensors (vllm's `merged`); a snapshot (see `VLLMEngine.export`)."""
        from agentrl.engines.weights import adapter_payload, export_weights

        if self.kind == "hf":
            return adapter_payload(model)
        return export_weights(model, self.weights, self.recipe_dtype())

    def recipe_dtype(self) -> str:
        dtype = self._recipe_data["rollout"]["vllm"]["dtype"]
        return "bfloat16" if dtype == "auto" else dtype

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.get(a.close.remote(), timeout=30)
            except Exception:
                pass
            try:
                self.ray.kill(a)
            except Exception:
                pass
        self.actors = []
