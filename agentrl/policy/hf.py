"""The LLM policy on Hugging Face transformers: batched multi-turn generation (DESIGN §3).

At each turn all live episodes are generated together, in chunks of
`rollout.batch_size` (sorted by how many tokens they need to prefill), with a small
decoding loop of our own over the KV cache (not `model.generate`): it applies the
admissible-command trie at each step and records the exact log-prob of each sampled
token (see `agentrl.policy.logprobs` for the quantity).

Batch layout. Row i = [pad | cached KV of episode i | pad | new tokens of episode i],
then one generated token per step appended to every row. Padding sits on the left of
each block and is masked out; position ids are given explicitly (each episode's own
token count), so the result is independent of the batch composition up to float
rounding.

KV-cache reuse across turns (`kv_reuse=True`): after a turn, each episode keeps the KV
of `prompt + action[:-1]` (the last sampled token was never fed). At its next turn the
longest common prefix of the new prompt with those ids is reused and only the rest is
prefilled. With `history = -1` the new prompt extends the old one (see
`agentrl.policy.prompt`), so only the last action token, the new observation and the
template tokens are prefilled; with a sliding window at least the system prompt is
reused. The cache is dropped in `end_episode`. Memory: 2 x layers x kv_heads x
head_dim x bytes per token per episode (SmolLM2-135M fp32: 46 KB/token).

Sampling: temperature, then top-p (nucleus) on the (constrained) distribution; greedy
= argmax. Stored log-probs are always under the temperature-scaled (and in admissible
mode renormalised) distribution *before* the top-p cut; with top_p < 1 that differs
from the nucleus-renormalised probability actually used to draw, by log(mass of the
nucleus) — the learner recomputes the same untruncated quantity. Admissible mode
ignores `max_new_tokens` (a command is finished when its trie path ends).
"""

from __future__ import annotations

import functools
import inspect
import time
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from agentrl.config import RolloutConfig
from agentrl.policy.base import Action, TurnContext
from agentrl.policy.constrained import CommandTrie, parse_action
from agentrl.policy.logprobs import body_and_head, eval_mode, logprobs_at, pad_allowed, tempered_logits
from agentrl.policy.prompt import (
    Prompt,
    Turn,
    build_prompt,
    chat_format,
    default_system_prompt,
    system_message,
    user_message,
)

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each [kv_heads, length, head_dim]


@dataclass
class _Episode:
    observations: list[str] = field(default_factory=list)  # observation text of each turn played
    turns: list[Turn] = field(default_factory=list)  # each turn as shown in later prompts
    cache_ids: list[int] = field(default_factory=list)  # token ids whose KV is in `cache`
    cache: KV | None = None


@dataclass
class _Request:
    ctx: TurnContext
    prompt: Prompt
    trie: CommandTrie | None
    past: KV | None = None
    past_len: int = 0
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    node: object = None  # current trie node
    done: bool = False
    gen: torch.Generator | None = None  # this episode's sampling stream (TurnContext.sample_key), else None


@dataclass
class PolicyStats:
    turns: int = 0
    forward_passes: int = 0
    prompt_tokens: int = 0  # tokens of all prompts
    prefilled_tokens: int = 0  # prompt tokens actually run through the model (the rest came from the KV cache)
    generated_tokens: int = 0
    prefill_s: float = 0.0  # wall time of prefill forward passes (incl. building the batch cache)
    decode_s: float = 0.0  # wall time of the token-by-token loop


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


class HFPolicy:
    """Batched LLM policy (see module docstring). `act` / `end_episode` as in `agentrl.policy.base.Policy`."""

    name = "llm"

    def __init__(
        self, model, tokenizer, rollout_cfg: RolloutConfig, greedy: bool = False, seed: int = 0, kv_reuse: bool = True
    ):
        self.model, self.tok, self.cfg = model, tokenizer, rollout_cfg
        self.greedy, self.kv_reuse = greedy, kv_reuse
        self.fmt = chat_format(tokenizer)
        self.system_prompt = rollout_cfg.system_prompt or default_system_prompt(
            rollout_cfg.action_mode, rollout_cfg.action_parser
        )
        self.device = next(model.parameters()).device
        self.seed = seed
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.fmt.eot_id
        self.episodes: dict[int, _Episode] = {}
        self.stats = PolicyStats()

    # ------------------------------------------------------------------ protocol

    def end_episode(self, key: int) -> None:
        self.episodes.pop(key, None)

    def reset(self) -> None:
        """Forget every episode and KV cache (e.g. after the model's weights changed mid-episode)."""
        self.episodes.clear()

    @torch.no_grad()
    def act(self, contexts: list[TurnContext]) -> list[Action]:
        self.stats.turns += len(contexts)
        reqs = [self._prepare(c) for c in contexts]
        order = sorted(range(len(reqs)), key=lambda i: len(reqs[i].prompt.ids) - reqs[i].past_len)
        bs = self.cfg.batch_size
        with eval_mode(self.model):  # no dropout while sampling: stored log-probs must be reproducible
            for b in range(0, len(order), bs):
                self._generate([reqs[i] for i in order[b : b + bs]])
        return [self._finish(r) for r in reqs]

    # ------------------------------------------------------------------ per request

    def _history(self, ctx: TurnContext, ep: _Episode) -> list[Turn]:
        """Earlier turns: from this policy's memory when it played them, else from the context."""
        n = len(ctx.history)
        if (
            len(ep.turns) == ctx.t
            and n <= ctx.t
            and all(o == h[0] for o, h in zip(ep.observations[ctx.t - n :], ctx.history))
        ):
            return ep.turns
        turns = [Turn(user_message(o, None), self.fmt.encode(a)) for o, a in ctx.history]
        ep.observations, ep.turns = [o for o, _ in ctx.history], turns
        return turns

    def _prepare(self, ctx: TurnContext) -> _Request:
        ep = self.episodes.get(ctx.key)
        if ep is None or ctx.t == 0:  # a new episode never reuses state (the weights may have changed since)
            ep = self.episodes[ctx.key] = _Episode()
        obs = ctx.observation
        prompt = build_prompt(
            self.fmt,
            system_message(self.system_prompt, obs.goal),
            self._history(ctx, ep),
            obs.text,
            obs.admissible,
            self.cfg.history,
            self.cfg.max_prompt_tokens,
        )
        trie = None
        if self.cfg.action_mode == "admissible" and obs.admissible:
            trie = CommandTrie.from_commands(self.tok, obs.admissible)
        req = _Request(ctx, prompt, trie, node=trie.root if trie else None)
        if ctx.sample_key is not None and not self.greedy:
            req.gen = torch.Generator(device=self.device).manual_seed(_turn_seed(self.seed, ctx.sample_key, ctx.t))
        if self.kv_reuse and ep.cache is not None:
            n = min(_common_prefix(ep.cache_ids, prompt.ids), len(prompt.ids) - 1)
            if n > 0:
                req.past = [(k[:, :n], v[:, :n]) for k, v in ep.cache]
                req.past_len = n
        ep.cache, ep.cache_ids = None, []
        return req

    def _finish(self, r: _Request) -> Action:
        ep = self.episodes[r.ctx.key]
        ep.observations.append(r.ctx.observation.text)
        ep.turns.append(Turn(r.prompt.user, list(r.ids)))
        raw = self.tok.decode(r.ids, skip_special_tokens=True)
        if r.trie is not None:
            text, parsed = r.node.command, True
        else:
            text, parsed = parse_action(raw, self.cfg.action_parser)
        info = {"dropped_turns": r.prompt.dropped_turns}
        if r.prompt.truncated:
            info["truncated_observation"] = True
        if self.cfg.action_mode == "admissible" and r.trie is None:
            info["constrained"] = False
        return Action(
            text=text,
            raw=raw,
            prompt_ids=list(r.prompt.ids),
            action_ids=list(r.ids),
            logprobs=list(r.logprobs),
            parsed=parsed,
            info=info,
        )

    # ------------------------------------------------------------------ batched decoding

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

    def _generate(self, reqs: list[_Request]) -> None:
        dev, B = self.device, len(reqs)
        t0 = time.perf_counter()
        news = [r.prompt.ids[r.past_len :] for r in reqs]
        lp, ln = max(r.past_len for r in reqs), max(len(n) for n in news)
        ids = torch.full((B, ln), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, lp + ln), dtype=torch.long)
        pos = torch.zeros((B, ln), dtype=torch.long)
        for i, (r, new) in enumerate(zip(reqs, news)):
            ids[i, ln - len(new) :] = torch.tensor(new)
            mask[i, lp - r.past_len : lp] = 1
            mask[i, lp + ln - len(new) :] = 1
            pos[i, ln - len(new) :] = torch.arange(r.past_len, r.past_len + len(new))
            self.stats.prompt_tokens += len(r.prompt.ids)
            self.stats.prefilled_tokens += len(new)
        cache = None
        if lp > 0:  # left-pad each episode's cached KV to a common length
            ref = next(r.past for r in reqs if r.past is not None)
            layers = []
            for li, (k0, v0) in enumerate(ref):
                k = k0.new_zeros((B, k0.shape[0], lp, k0.shape[2]))
                v = v0.new_zeros((B, v0.shape[0], lp, v0.shape[2]))
                for i, r in enumerate(reqs):
                    if r.past_len:
                        k[i, :, lp - r.past_len :] = r.past[li][0]
                        v[i, :, lp - r.past_len :] = r.past[li][1]
                layers.append((k, v))
            cache = _make_cache(layers)
            for r in reqs:
                r.past = None
        mask, pos = mask.to(dev), pos.to(dev)
        first: dict[tuple, int] = {}  # identical prompts with nothing cached (a group's turn 0): prefill once
        rows = [first.setdefault(tuple(n), i) for i, n in enumerate(news)] if cache is None else list(range(B))
        if len(first) and len(first) < B:
            uniq = sorted(first.values())
            where = {row: j for j, row in enumerate(uniq)}
            sel = torch.tensor([where[r] for r in rows], device=dev)
            u = torch.tensor(uniq, device=dev)
            logits, cache = self._forward(
                ids.to(dev).index_select(0, u), mask.index_select(0, u), pos.index_select(0, u), None
            )
            logits = logits.index_select(0, sel)
            cache = _make_cache([(k.index_select(0, sel), v.index_select(0, sel)) for k, v in _cache_layers(cache)])
            self.stats.prefilled_tokens -= sum(len(news[i]) for i in range(B) if rows[i] != i)
        else:
            logits, cache = self._forward(ids.to(dev), mask, pos, cache)
        t1 = time.perf_counter()
        self.stats.prefill_s += t1 - t0
        next_pos = torch.tensor([len(r.prompt.ids) for r in reqs], device=dev)
        limit = self.cfg.max_new_tokens
        while True:
            tokens, logps = self._sample(logits, reqs)
            for i, r in enumerate(reqs):
                if r.done:
                    continue
                t = int(tokens[i])
                r.ids.append(t)
                r.logprobs.append(float(logps[i]))
                if r.trie is not None:
                    r.node = r.node.children[t]
                    r.done = not r.node.children
                else:
                    r.done = t in self.fmt.stop_ids or len(r.ids) >= limit
            active = torch.tensor([not r.done for r in reqs], device=dev)
            if not active.any():
                break
            feed = torch.where(active, tokens, torch.full_like(tokens, self.pad_id))
            mask = torch.cat([mask, active.long()[:, None]], dim=1)
            logits, cache = self._forward(feed[:, None], mask, next_pos[:, None], cache)
            next_pos = next_pos + active.long()
        self.stats.generated_tokens += sum(len(r.ids) for r in reqs)
        self.stats.decode_s += time.perf_counter() - t1
        if self.kv_reuse:
            self._keep_caches(reqs, cache, mask)

    def _keep_caches(self, reqs: list[_Request], cache, mask: torch.Tensor) -> None:
        layers = _cache_layers(cache)
        for i, r in enumerate(reqs):
            idx = mask[i].nonzero().squeeze(1)
            ep = self.episodes[r.ctx.key]
            ep.cache_ids = list(r.prompt.ids) + r.ids[:-1]
            assert idx.numel() == len(ep.cache_ids), (idx.numel(), len(ep.cache_ids))
            ep.cache = [(k[i].index_select(1, idx), v[i].index_select(1, idx)) for k, v in layers]

    def _sample(self, logits: torch.Tensor, reqs: list[_Request]) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per row from the (constrained) tempered distribution; returns (tokens, log-probs).

        The log-probs are `logprobs_at`, the function the learner's `forward_logprobs` ends in."""
        allowed = pad_allowed(
            [sorted(r.node.children) if r.trie is not None and not r.done else None for r in reqs], device=logits.device
        )
        z = tempered_logits(logits, allowed, self.cfg.temperature)
        if self.greedy:
            tokens = z.argmax(dim=-1)
        else:
            probs = torch.softmax(z, dim=-1)
            if self.cfg.top_p < 1.0:
                probs = _top_p(probs, self.cfg.top_p)
            if all(r.gen is not None for r in reqs):  # one stream per episode: batch-independent draws
                tokens = torch.cat([torch.multinomial(probs[i], 1, generator=r.gen) for i, r in enumerate(reqs)])
            else:
                tokens = torch.multinomial(probs, 1, generator=self.gen).squeeze(1)
        return tokens, logprobs_at(logits, tokens, allowed, self.cfg.temperature)[0]


def _turn_seed(seed: int, sample_key: int, t: int) -> int:
    """The seed of one episode's sampling stream at turn t: a function of (policy seed, episode, turn)
    only, never of the other episodes in the batch."""
    return (seed * 0x9E3779B97F4A7C15 + sample_key * 0xBF58476D1CE4E5B9 + t * 0x94D049BB133111EB) % (2**63)


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p; renormalise."""
    sp, si = probs.sort(dim=-1, descending=True)
    drop = (sp.cumsum(dim=-1) - sp) >= top_p  # mass before this token already reaches top_p
    sp = sp.masked_fill(drop, 0.0)
    out = torch.zeros_like(probs).scatter_(1, si, sp)
    return out / out.sum(dim=-1, keepdim=True)
