"""Training sequence layouts and micro-batch packing (DESIGN §3, §6).

Input: one `StepSample` per stored step (built from the store by the rollout code).
Two layouts:

- `per_step`: each step is its own sequence `prompt_ids + action_ids`, loss on the
  action tokens. The prompt (with its history window) is re-processed at every step.
- `concat`: the steps of an episode are chained into one sequence while each next
  prompt extends the previous sequence (`prompt[t+1]` starts with
  `prompt[t] + action[t]`, true when the prompt history covers all turns); the
  sequence then only grows by the new observation and action tokens, so every token
  is processed once. Where the prefix property fails (e.g. a sliding history window
  dropped a turn) a new sequence starts at that step, so concat degrades gracefully
  to per_step.

Sequences are packed into right-padded micro-batches of at most `micro_batch_tokens`
tokens (batch rows x padded length), with flat per-loss-token tensors: the position
whose logits predict each action token, the target id, old log-prob, advantage, and
(admissible mode) the allowed token ids at that position.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from itertools import groupby

import torch

from agentrl.policy.logprobs import pad_allowed


@dataclass
class StepSample:
    episode: int  # episode id (steps of one episode share it; ordered by t)
    t: int
    prompt_ids: list[int]
    action_ids: list[int]
    old_logprobs: list[float]  # stored rollout log-probs (sampling distribution), one per action token
    advantage: float  # broadcast to every action token of the step
    allowed: list[list[int]] | None = None  # admissible mode: allowed ids at each action position


@dataclass
class Sequence:
    """One training sequence and its loss tokens (plain lists)."""

    input_ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # index whose logits predict the target
    targets: list[int] = field(default_factory=list)
    old_logp: list[float] = field(default_factory=list)
    adv: list[float] = field(default_factory=list)
    allowed: list[list[int] | None] = field(default_factory=list)
    sample_index: list[int] = field(default_factory=list)  # which StepSample (index in the input list)
    token_index: list[int] = field(default_factory=list)  # which action token of that sample

    def add_step(self, new_tokens: list[int], s: StepSample, index: int) -> None:
        """Append `new_tokens` (the prompt's unseen part) then the step's action tokens."""
        self.input_ids.extend(new_tokens)
        start = len(self.input_ids)
        self.input_ids.extend(s.action_ids)
        for j, tok in enumerate(s.action_ids):
            self.positions.append(start + j - 1)
            self.targets.append(tok)
            self.old_logp.append(float(s.old_logprobs[j]))
            self.adv.append(float(s.advantage))
            self.allowed.append(None if s.allowed is None else list(s.allowed[j]))
            self.sample_index.append(index)
            self.token_index.append(j)


@dataclass
class MicroBatch:
    """Right-padded tensors for one forward pass. N = number of loss tokens."""

    input_ids: torch.Tensor  # [B, L] long, padded with 0
    attention_mask: torch.Tensor  # [B, L] long
    batch_index: torch.Tensor  # [N] row of each loss token
    positions: torch.Tensor  # [N] position whose logits predict the target
    targets: torch.Tensor  # [N] target token ids
    old_logp: torch.Tensor  # [N] float32
    adv: torch.Tensor  # [N] float32
    sample_index: torch.Tensor  # [N] index of the StepSample
    token_index: torch.Tensor  # [N] action-token index within that sample
    allowed_ids: torch.Tensor | None = None  # [N, K] allowed ids, as from `pad_allowed`
    has_allowed: torch.Tensor | None = None  # [N] bool: False = unconstrained position
    num_tokens: int = 0  # real (non-pad) tokens processed
    num_loss_tokens: int = 0

    def to(self, device: torch.device | str) -> MicroBatch:
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)


def _check(s: StepSample) -> None:
    n = len(s.action_ids)
    if len(s.old_logprobs) != n:
        raise ValueError(f"episode {s.episode} step {s.t}: {len(s.old_logprobs)} log-probs for {n} action tokens")
    if n and not s.prompt_ids:
        raise ValueError(f"episode {s.episode} step {s.t}: empty prompt (nothing predicts the first action token)")
    if s.allowed is not None:
        if len(s.allowed) != n:
            raise ValueError(f"episode {s.episode} step {s.t}: {len(s.allowed)} allowed sets for {n} action tokens")
        for j, (tok, ok) in enumerate(zip(s.action_ids, s.allowed)):
            if tok not in ok:
                raise ValueError(f"episode {s.episode} step {s.t}: action token {j} ({tok}) is not in its allowed set")


def build_sequences(samples: list[StepSample], layout: str) -> list[Sequence]:
    """Turn steps into training sequences with the `per_step` or `concat` layout.

    Steps without action tokens carry no loss; sequences without loss tokens are dropped.
    """
    if layout not in ("per_step", "concat"):
        raise ValueError(f"unknown layout '{layout}' (per_step | concat)")
    for s in samples:
        _check(s)
    seqs: list[Sequence] = []
    if layout == "per_step":
        for i, s in enumerate(samples):
            seq = Sequence()
            seq.add_step(list(s.prompt_ids), s, i)
            seqs.append(seq)
    else:
        first: dict[int, int] = {}  # episodes keep the order of their first appearance
        for i, s in enumerate(samples):
            first.setdefault(s.episode, i)
        order = sorted(range(len(samples)), key=lambda i: (first[samples[i].episode], samples[i].t))
        for _, group in groupby(order, key=lambda i: samples[i].episode):
            seq: Sequence | None = None
            for i in group:
                s = samples[i]
                prompt = s.prompt_ids
                if (
                    seq is not None
                    and len(prompt) >= len(seq.input_ids)
                    and prompt[: len(seq.input_ids)] == seq.input_ids
                ):
                    seq.add_step(list(prompt[len(seq.input_ids) :]), s, i)
                else:
                    seq = Sequence()
                    seq.add_step(list(prompt), s, i)
                    seqs.append(seq)
    return [q for q in seqs if q.targets]


def _collate(seqs: list[Sequence]) -> MicroBatch:
    width = max(len(q.input_ids) for q in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    att = torch.zeros(len(seqs), width, dtype=torch.long)
    for b, q in enumerate(seqs):
        ids[b, : len(q.input_ids)] = torch.tensor(q.input_ids, dtype=torch.long)
        att[b, : len(q.input_ids)] = 1

    def flat(name: str) -> list:
        return [x for q in seqs for x in getattr(q, name)]

    targets = flat("targets")
    allowed_ids, has_allowed = pad_allowed(flat("allowed")) or (None, None)  # the sampler's layout
    return MicroBatch(
        input_ids=ids,
        attention_mask=att,
        batch_index=torch.tensor([b for b, q in enumerate(seqs) for _ in q.targets], dtype=torch.long),
        positions=torch.tensor(flat("positions"), dtype=torch.long),
        targets=torch.tensor(targets, dtype=torch.long),
        old_logp=torch.tensor(flat("old_logp"), dtype=torch.float32),
        adv=torch.tensor(flat("adv"), dtype=torch.float32),
        sample_index=torch.tensor(flat("sample_index"), dtype=torch.long),
        token_index=torch.tensor(flat("token_index"), dtype=torch.long),
        allowed_ids=allowed_ids,
        has_allowed=has_allowed,
        num_tokens=int(att.sum()),
        num_loss_tokens=len(targets),
    )


def budget_groups(items: list, length, budget_tokens: int) -> list[list]:
    """Group `items` for right-padded batches of at most `budget_tokens` (rows x longest row).

    Longest first, greedily (similar lengths share a batch, so little padding); an item
    longer than the budget gets a batch of its own. `length(item)` is its token count.
    """
    batches: list[list] = []
    for q in sorted(items, key=length, reverse=True):
        cur = batches[-1] if batches else None
        if cur is not None and (len(cur) + 1) * length(cur[0]) <= budget_tokens:
            cur.append(q)
        else:
            batches.append([q])
    return batches


def pack(seqs: list[Sequence], micro_batch_tokens: int) -> list[MicroBatch]:
    """Pack sequences into micro-batches of at most `micro_batch_tokens` padded tokens (`budget_groups`)."""
    return [_collate(b) for b in budget_groups(seqs, lambda q: len(q.input_ids), micro_batch_tokens)]


def make_micro_batches(samples: list[StepSample], layout: str, micro_batch_tokens: int) -> list[MicroBatch]:
    """`build_sequences` then `pack`."""
    return pack(build_sequences(samples, layout), micro_batch_tokens)


def count_tokens(batches: list[MicroBatch]) -> dict[str, int]:
    """Tokens a pass over `batches` processes: real, padded, and loss tokens."""
    return {
        "tokens": sum(b.num_tokens for b in batches),
        "padded_tokens": sum(b.input_ids.numel() for b in batches),
        "loss_tokens": sum(b.num_loss_tokens for b in batches),
        "sequences": sum(b.input_ids.shape[0] for b in batches),
    }
