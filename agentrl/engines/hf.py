"""The HF engine: agentrl's own batched decoding loop over transformers (ARCHITECTURE.md §7).

All requests of a call are generated together, in chunks of `batch_size` (sorted by how many
tokens they need to prefill), with a small decoding loop over the KV cache (not
`model.generate`): it applies the admissible-command trie at each step and records the exact
log-prob of each sampled token (`agentrl.policy.logprobs` defines the quantity).

Batch layout. Row i = [pad | cached KV of episode i | pad | new tokens of episode i], then one
generated token per step appended to every row. Padding sits on the left of each block and is
masked out; position ids are given explicitly (each episode's own token count), so the result is
independent of the batch composition up to float rounding.

KV-cache reuse across turns (`kv_reuse=True`): after a turn, each episode keeps the KV of
`prompt + generated[:-1]` (the last sampled token was never fed). At its next turn the longest
common prefix of the new prompt with those ids is reused and only the rest is prefilled. With
`rollout.history = -1` the new prompt extends the old one (`agentrl.policy.prompt`), so only the
last action token, the new observation and the template tokens are prefilled. The cache is
dropped in `end`. Memory: 2 x layers x kv_heads x head_dim x bytes per token per episode
(SmolLM2-135M fp32: 46 KB/token).

Sampling: temperature, then top-p (nucleus) on the (constrained) distribution; greedy = argmax.
A request with a `seed` draws from its own generator (its draws do not depend on the other rows
of the batch). Stored log-probs are under the temperature-scaled (renormalised when constrained)
distribution before the top-p cut: with top_p < 1 that differs from the nucleus-renormalised
probability actually used to draw by log(mass of the nucleus); the learner recomputes the same
untruncated quantity. Constrained requests ignore `max_new_tokens` (a command ends where its trie
path ends).

Precision: `compute_dtype` None runs in the weights' dtype; torch.bfloat16 runs the forwards under
bf16 autocast (`autocast_for`), on CPU too where it supports bf16.
"""

from __future__ import annotations

import functools
import inspect
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from agentrl.engines.base import EngineStats, Generation, Request, Sampling
from agentrl.policy.constrained import CommandTrie
from agentrl.policy.logprobs import autocast_for, body_and_head, eval_mode, logprobs_at, pad_allowed, tempered_logits

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each [kv_heads, length, head_dim]


@dataclass
class _Cached:
    ids: list[int] = field(default_factory=list)  # token ids whose KV is in `kv`
    kv: KV | None = None


@dataclass
class _Row:
    req: Request
    trie: CommandTrie | None
    past: KV | None = None
    past_len: int = 0
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    node: object = None  # current trie node
    done: bool = False
    gen: torch.Generator | None = None  # the request's own sampling stream, else None


def _cache_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):  # transformers >= 4.56
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


def _make_cache(layers: list[tuple[torch.Tensor, torch.Tensor]]):
    try:
        return DynamicCache(ddp_cache_data=layers)
    except TypeError:  # older transformers
        return DynamicCache.from_legacy_cache(tuple(layers))


@functools.cache
def _cache_arg(body_type: type) -> str:
    """The KV-cache keyword of the decoder's forward, which is also the name of the cache in its
    output: `cache` (transformers >= 5.2x; `past_key_values` is deprecated there and removed in
    5.40) or `past_key_values` (older releases). Looked up once per decoder class."""
    params = inspect.signature(body_type.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class HFEngine:
    """Batched generation on a transformers causal LM (or a peft model on one); see the module docstring."""

    name = "hf"

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 32,
        kv_reuse: bool = True,
        seed: int = 0,
        compute_dtype: torch.dtype | None = None,
    ):
        self.model, self.tok = model, tokenizer
        self.batch_size, self.kv_reuse = batch_size, kv_reuse
        self.compute_dtype = compute_dtype
        self.device = next(model.parameters()).device
        self.gen = torch.Generator(device=self.device).manual_seed(seed)  # for requests without a seed
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.cached: dict[int, _Cached] = {}
        self.stats = EngineStats()
        self.weights_version = 0  # the weights are the trainer's own model: always current

    def end(self, key: int) -> None:
        self.cached.pop(key, None)

    def reset(self) -> None:
        self.cached.clear()

    def load_weights(self, model, version: int) -> float:
        """The engine runs the learner's own model, so its weights are already current: record the version."""
        self.weights_version = version
        return 0.0

    def _autocast(self):
        return autocast_for(self.device, self.compute_dtype) if self.compute_dtype is not None else nullcontext()

    @torch.no_grad()
    def generate(self, requests: list[Request], sampling: Sampling) -> list[Generation]:
        t0 = time.perf_counter()
        self.stats.turns += len(requests)
        rows = [self._row(r, sampling) for r in requests]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i].req.prompt_ids) - rows[i].past_len)
        bs = self.batch_size
        with eval_mode(self.model), self._autocast():  # no dropout: stored log-probs must be reproducible
            for b in range(0, len(order), bs):
                self._generate([rows[i] for i in order[b : b + bs]], sampling)
        self.stats.generate_s += time.perf_counter() - t0
        return [Generation(list(r.ids), list(r.logprobs), r.node.command if r.trie is not None else None) for r in rows]

    def _row(self, req: Request, sampling: Sampling) -> _Row:
        trie = CommandTrie.from_commands(self.tok, req.commands) if req.commands else None
        row = _Row(req, trie, node=trie.root if trie else None)
        if req.seed is not None and not sampling.greedy:
            row.gen = torch.Generator(device=self.device).manual_seed(req.seed)
        c = self.cached.pop(req.key, None)
        if self.kv_reuse and c is not None and c.kv is not None and not req.new_episode:
            n = min(_common_prefix(c.ids, req.prompt_ids), len(req.prompt_ids) - 1)
            if n > 0:
                row.past = [(k[:, :n], v[:, :n]) for k, v in c.kv]
                row.past_len = n
        return row

    def _forward(self, input_ids, attention_mask, position_ids, cache):
        body, head = body_and_head(self.model)
        arg = _cache_arg(type(body))
        out = body(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **{arg: cache},
            use_cache=True,
        )
        self.stats.forward_passes += 1
        return head(out.last_hidden_state[:, -1]), getattr(out, arg)

    def _generate(self, rows: list[_Row], sampling: Sampling) -> None:
        dev, B = self.device, len(rows)
        t0 = time.perf_counter()
        news = [r.req.prompt_ids[r.past_len :] for r in rows]
        lp, ln = max(r.past_len for r in rows), max(len(n) for n in news)
        ids = torch.full((B, ln), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, lp + ln), dtype=torch.long)
        pos = torch.zeros((B, ln), dtype=torch.long)
        for i, (r, new) in enumerate(zip(rows, news)):
            ids[i, ln - len(new) :] = torch.tensor(new)
            mask[i, lp - r.past_len : lp] = 1
            mask[i, lp + ln - len(new) :] = 1
            pos[i, ln - len(new) :] = torch.arange(r.past_len, r.past_len + len(new))
            self.stats.prompt_tokens += len(r.req.prompt_ids)
            self.stats.prefilled_tokens += len(new)
        cache = None
        if lp > 0:  # left-pad each episode's cached KV to a common length
            ref = next(r.past for r in rows if r.past is not None)
            layers = []
            for li, (k0, v0) in enumerate(ref):
                k = k0.new_zeros((B, k0.shape[0], lp, k0.shape[2]))
                v = v0.new_zeros((B, v0.shape[0], lp, v0.shape[2]))
                for i, r in enumerate(rows):
                    if r.past_len:
                        k[i, :, lp - r.past_len :] = r.past[li][0]
                        v[i, :, lp - r.past_len :] = r.past[li][1]
                layers.append((k, v))
            cache = _make_cache(layers)
            for r in rows:
                r.past = None
        mask, pos = mask.to(dev), pos.to(dev)
        first: dict[tuple, int] = {}  # identical prompts with nothing cached (a group's turn 0): prefill once
        src = [first.setdefault(tuple(n), i) for i, n in enumerate(news)] if cache is None else list(range(B))
        if len(first) and len(first) < B:
            uniq = sorted(first.values())
            where = {row: j for j, row in enumerate(uniq)}
            sel = torch.tensor([where[r] for r in src], device=dev)
            u = torch.tensor(uniq, device=dev)
            logits, cache = self._forward(
                ids.to(dev).index_select(0, u), mask.index_select(0, u), pos.index_select(0, u), None
            )
            logits = logits.index_select(0, sel)
            cache = _make_cache([(k.index_select(0, sel), v.index_select(0, sel)) for k, v in _cache_layers(cache)])
            self.stats.prefilled_tokens -= sum(len(news[i]) for i in range(B) if src[i] != i)
        else:
            logits, cache = self._forward(ids.to(dev), mask, pos, cache)
        t1 = time.perf_counter()
        self.stats.prefill_s += t1 - t0
        next_pos = torch.tensor([len(r.req.prompt_ids) for r in rows], device=dev)
        stop = set(sampling.stop_ids)
        while True:
            tokens, logps = self._sample(logits, rows, sampling)
            for i, r in enumerate(rows):
                if r.done:
                    continue
                t = int(tokens[i])
                r.ids.append(t)
                r.logprobs.append(float(logps[i]))
                if r.trie is not None:
                    r.node = r.node.children[t]
                    r.done = not r.node.children
                else:
                    r.done = t in stop or len(r.ids) >= sampling.max_new_tokens
            active = torch.tensor([not r.done for r in rows], device=dev)
            if not active.any():
                break
            feed = torch.where(active, tokens, torch.full_like(tokens, self.pad_id))
            mask = torch.cat([mask, active.long()[:, None]], dim=1)
            logits, cache = self._forward(feed[:, None], mask, next_pos[:, None], cache)
            next_pos = next_pos + active.long()
        self.stats.generated_tokens += sum(len(r.ids) for r in rows)
        self.stats.decode_s += time.perf_counter() - t1
        if self.kv_reuse:
            self._keep_caches(rows, cache, mask)

    def _keep_caches(self, rows: list[_Row], cache, mask: torch.Tensor) -> None:
        layers = _cache_layers(cache)
        for i, r in enumerate(rows):
            idx = mask[i].nonzero().squeeze(1)
            ids = list(r.req.prompt_ids) + r.ids[:-1]
            assert idx.numel() == len(ids), (idx.numel(), len(ids))
            self.cached[r.req.key] = _Cached(
                ids, [(k[i].index_select(1, idx), v[i].index_select(1, idx)) for k, v in layers]
            )

    def _sample(self, logits: torch.Tensor, rows: list[_Row], sampling: Sampling) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per row from the (constrained) tempered distribution; returns (tokens, log-probs).

        The log-probs are `logprobs_at`, the function the learner's `forward_logprobs` ends in."""
        allowed = pad_allowed(
            [sorted(r.node.children) if r.trie is not None and not r.done else None for r in rows], device=logits.device
        )
        z = tempered_logits(logits, allowed, sampling.temperature)
        if sampling.greedy:
            tokens = z.argmax(dim=-1)
        else:
            probs = torch.softmax(z, dim=-1)
            if sampling.top_p < 1.0:
                probs = top_p_filter(probs, sampling.top_p)
            if all(r.gen is not None for r in rows):  # one stream per request: batch-independent draws
                tokens = torch.cat([torch.multinomial(probs[i], 1, generator=r.gen) for i, r in enumerate(rows)])
            else:
                tokens = torch.multinomial(probs, 1, generator=self.gen).squeeze(1)
        return tokens, logprobs_at(logits, tokens, allowed, sampling.temperature)[0]


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p; renormalise."""
    sp, si = probs.sort(dim=-1, descending=True)
    drop = (sp.cumsum(dim=-1) - sp) >= top_p  # mass before this token already reaches top_p
    sp = sp.masked_fill(drop, 0.0)
    out = torch.zeros_like(probs).scatter_(1, si, sp)
    return out / out.sum(dim=-1, keepdim=True)
