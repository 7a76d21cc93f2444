"""Token-in-token-out log-probs (DESIGN §3).

The quantity stored for each generated token, and recomputed here by teacher forcing:

    log p(a_j) = z[a_j] - logsumexp_{v in S_j} z[v],   z = logits / temperature

with S_j = all tokens (free mode, or admissible mode without a command list) or the
allowed set of the admissible-command trie at position j. It is the log-prob under
the distribution sampled from, before any top-p cut (with top_p < 1 tokens are drawn
from the nucleus, but the stored value stays this full, differentiable one: see
`HFPolicy`). Logits are computed only at the positions needed (the decoder runs on the
whole sequence, `lm_head` on the gathered hidden states), which on CPU is several
times cheaper than full-sequence logits.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from agentrl.policy.constrained import allowed_token_ids


def pad_allowed(allowed: list[list[int] | None], device=None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Allowed-id lists -> (ids [N, K] long, valid [N, K] bool); None entries = unconstrained (all False).

    Rows are padded by repeating their first allowed id (so a scatter of gathered values
    is well defined); `valid` marks the real entries.

    Returns None if no entry is constrained.
    """
    if all(a is None for a in allowed):
        return None
    k = max(len(a) for a in allowed if a is not None)
    ids = torch.zeros(len(allowed), k, dtype=torch.long)
    valid = torch.zeros(len(allowed), k, dtype=torch.bool)
    for n, a in enumerate(allowed):
        if a:
            ids[n] = a[0]
            ids[n, : len(a)] = torch.tensor(a, dtype=torch.long)
            valid[n, : len(a)] = True
    return ids.to(device), valid.to(device)


def masked_logprobs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    allowed: tuple[torch.Tensor, torch.Tensor] | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """log p(target) under softmax(logits / T), renormalised over the allowed ids where given.

    logits [N, V] (cast to float32), targets [N]; `allowed` as from `pad_allowed` (rows
    with no valid entry are unconstrained). Differentiable.
    """
    z = logits.float() / temperature
    lse = torch.logsumexp(z, dim=-1)
    if allowed is not None:
        ids, valid = allowed
        za = z.gather(1, ids).masked_fill(~valid, float("-inf"))
        constrained = valid.any(dim=1)
        lse = torch.where(constrained, torch.logsumexp(za, dim=-1), lse)
    return z.gather(1, targets[:, None]).squeeze(1) - lse


@contextmanager
def eval_mode(model):
    """Run in eval mode (no dropout), restoring the previous mode afterwards."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def decoder_and_head(model):
    """(transformer body returning hidden states, lm_head) of a causal LM (works through peft wrappers)."""
    return model.get_decoder(), model.get_output_embeddings()


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

    Differentiable (the learner can call it under autograd). `allowed[n]` = the allowed
    ids for the n-th token, or None (unconstrained).
    """
    body, head = decoder_and_head(model)
    hidden = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                  use_cache=False).last_hidden_state
    logits = head(hidden[rows, cols - 1])
    targets = input_ids[rows, cols]
    pa = pad_allowed(allowed, device=logits.device) if allowed is not None else None
    return masked_logprobs(logits, targets, pa, temperature)


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
                model, ids.to(device), mask.to(device), torch.tensor(rows, device=device),
                torch.tensor(cols, device=device), allowed, temperature,
            ).tolist()
        k = 0
        for i in chunk:
            a = len(action_ids[i])
            out[i] = lp[k : k + a]
            k += a
    return out
