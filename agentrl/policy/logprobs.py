"""Token-in-token-out log-probs (DESIGN §3): the one definition the sampler and the learner share.

The quantity stored for each generated token, and recomputed by teacher forcing for the loss:

    log p(a_j) = log_softmax(z masked to S_j)[a_j],   z = logits / temperature (float32)

with S_j = all tokens (free mode, or admissible mode without a command list) or the
allowed set of the admissible-command trie at position j. It is the log-prob under
the distribution sampled from, before any top-p cut (with top_p < 1 tokens are drawn
from the nucleus, but the stored value stays this full, differentiable one: see
`agentrl.engines.hf`).

Who calls what (so the two sides cannot drift apart):

- `body_and_head`: the transformer body and the LM head, for the sampler's decoding loop
  (`agentrl.engines.hf`), `forward_logprobs` and the signal providers' hidden states.
- `tempered_logits`: the logits the sampler draws from (and the first step of `logprobs_at`).
- The vllm engine (`agentrl.engines.vllm`) computes the same quantity inside vLLM: the command trie
  masks the logits (`agentrl.engines.vllm_trie`) and vLLM's processed log-probs are log_softmax of the
  masked logits / T, in vLLM's numerics; the learner can recompute them (`learner.old_logprobs`).
- `logprobs_at`: logits -> temperature -> optional mask -> log-softmax -> the target's
  log-prob. The sampler calls it on each decoding step's logits; `forward_logprobs` calls
  it on teacher-forced logits.
- `forward_logprobs`: hidden states at the loss positions -> `logprobs_at`. The learner
  (`agentrl.learner.update.compute_logprobs`) and `recompute_logprobs` call it. Logits are
  computed only at the positions needed (the body runs on the whole sequence, the head on
  the gathered hidden states), which on CPU is several times cheaper than full-sequence logits.
- `autocast_for`: the autocast of a forward for a compute dtype (`ModelConfig.compute_dtype`, resolved
  by `agentrl.policy.model.resolve_compute_dtype`): the learner's forwards and the HF sampler's
  decoding run under the same one, so their numerics agree. Default (None): bf16 on CUDA, none on CPU.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

from agentrl.policy.constrained import allowed_token_ids

Allowed = tuple[torch.Tensor, torch.Tensor]  # (ids [N, K] long, constrained [N] bool), as from `pad_allowed`


def pad_allowed(allowed: list[list[int] | None], device=None) -> Allowed | None:
    """Allowed-id lists -> (ids [N, K] long, constrained [N] bool); None (or empty) entries = unconstrained.

    Rows are padded by repeating their first allowed id (so a scatter of the ids marks
    exactly the allowed set); unconstrained rows hold id 0 and `constrained` False.

    Returns None if no entry is constrained.
    """
    if all(a is None for a in allowed):
        return None
    k = max(len(a) for a in allowed if a is not None)
    ids = torch.zeros(len(allowed), k, dtype=torch.long)
    constrained = torch.zeros(len(allowed), dtype=torch.bool)
    for n, a in enumerate(allowed):
        if a:  # [] like None: unconstrained
            ids[n] = a[0]
            ids[n, : len(a)] = torch.tensor(a, dtype=torch.long)
            constrained[n] = True
    return ids.to(device), constrained.to(device)


def tempered_logits(logits: torch.Tensor, allowed: Allowed | None = None, temperature: float = 1.0) -> torch.Tensor:
    """logits [N, V] -> float32 logits / T, -inf outside the allowed ids of constrained rows.

    The logits of the distribution the sampler draws from. Differentiable."""
    z = logits.float() / temperature
    if allowed is not None:
        ids, constrained = allowed
        allow = torch.zeros_like(z, dtype=torch.bool).scatter_(1, ids, True)
        allow |= ~constrained.unsqueeze(1)
        z = z.masked_fill(~allow, float("-inf"))
    return z


def logprobs_at(
    logits: torch.Tensor, targets: torch.Tensor, allowed: Allowed | None = None, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(target) [N], log-probs of the whole distribution [N, V]) under softmax(`tempered_logits`).

    logits [N, V], targets [N]; `allowed` as from `pad_allowed`. Differentiable. Outside the
    allowed set the [N, V] log-probs are -inf."""
    logp_all = torch.log_softmax(tempered_logits(logits, allowed, temperature), dim=-1)
    return logp_all.gather(1, targets.unsqueeze(1)).squeeze(1), logp_all


@contextmanager
def eval_mode(model):
    """Run in eval mode (no dropout), restoring the previous mode afterwards."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def body_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(transformer body returning hidden states, LM head) of a HF causal LM or a peft model on one."""
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    return hf.get_decoder(), hf.get_output_embeddings()


def autocast_for(device: torch.device, compute_dtype: torch.dtype | None = None):
    """The autocast context of a forward on `device` computing in `compute_dtype`.

    None: bf16 autocast on CUDA, none elsewhere (the historical default). torch.float32: no autocast
    (the weights' own dtype). Another dtype (bfloat16): `torch.autocast(device.type, dtype=...)`, on
    CPU too (check `cpu_supports_bf16` first: emulated bf16 is slow).
    """
    if compute_dtype is None:
        compute_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if compute_dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=compute_dtype)


def forward_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    batch_index: torch.Tensor,
    positions: torch.Tensor,
    targets: torch.Tensor,
    allowed: Allowed | None = None,
    temperature: float = 1.0,
    position_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher forcing: `logprobs_at` of `targets` [N] from the logits at `input_ids[batch_index, positions]`.

    The body runs on the whole (right-padded) batch, the head only on the N gathered hidden
    states. Differentiable; the caller picks grad mode, model mode and autocast.
    """
    body, head = body_and_head(model)
    full = bool(attention_mask.all())  # no padding: let SDPA use its causal fast path
    out = body(
        input_ids=input_ids, attention_mask=None if full else attention_mask, position_ids=position_ids, use_cache=False
    )
    hidden = out.last_hidden_state[batch_index, positions]  # [N, H]
    return logprobs_at(head(hidden), targets, allowed, temperature)


def token_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    allowed: list[list[int] | None] | None = None,
    temperature: float = 1.0,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Teacher-forced log-probs of tokens `input_ids[rows, cols]` (each predicted from position col-1).

    `forward_logprobs` with allowed-id lists: `allowed[n]` = the allowed ids for the n-th
    token, or None (unconstrained). Differentiable.
    """
    pa = pad_allowed(allowed, device=input_ids.device) if allowed is not None else None
    return forward_logprobs(
        model, input_ids, attention_mask, rows, cols - 1, input_ids[rows, cols], pa, temperature, position_ids
    )[0]


@torch.no_grad()
def recompute_logprobs(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    action_ids: list[list[int]],
    action_mode: str,
    admissible: list[list[str] | None],
    temperature: float,
    batch_size: int = 8,
) -> list[list[float]]:
    """Recompute by teacher forcing the log-probs of stored action tokens (see module docstring).

    Sequences `prompt + action` are right-padded and run in batches of `batch_size`
    (sorted by length). In admissible mode a step with a non-empty admissible list is
    renormalised over its trie's allowed tokens; None/[] means unconstrained.
    """
    n = len(prompt_ids)
    if not (len(action_ids) == len(admissible) == n):
        raise ValueError("prompt_ids, action_ids and admissible must have the same length")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[list[float]] = [[] for _ in range(n)]
    order = sorted((i for i in range(n) if action_ids[i]), key=lambda i: len(prompt_ids[i]) + len(action_ids[i]))
    for b in range(0, len(order), batch_size):
        chunk = order[b : b + batch_size]
        seqs = [list(prompt_ids[i]) + list(action_ids[i]) for i in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        rows, cols, allowed = [], [], []
        for r, (i, s) in enumerate(zip(chunk, seqs)):
            ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[r, : len(s)] = 1
            p, a = len(prompt_ids[i]), len(action_ids[i])
            if p == 0:
                raise ValueError(f"sample {i}: empty prompt")
            rows += [r] * a
            cols += range(p, p + a)
            if action_mode == "admissible" and admissible[i]:
                allowed += allowed_token_ids(tokenizer, admissible[i], action_ids[i])
            else:
                allowed += [None] * a
        with eval_mode(model):
            lp = token_logprobs(
                model,
                ids.to(device),
                mask.to(device),
                torch.tensor(rows, device=device),
                torch.tensor(cols, device=device),
                allowed,
                temperature,
            ).tolist()
        k = 0
        for i in chunk:
            a = len(action_ids[i])
            out[i] = lp[k : k + a]
            k += a
    return out
