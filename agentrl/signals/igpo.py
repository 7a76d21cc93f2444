"""IGPO's answer probabilities: signals["answer_prob"] from the policy, teacher-forced.

p_t = exp(mean token log-prob) of the task's ground truth (`truth: walkthrough` joined with
", ", or `truth: goal`), teacher-forced after the context before turn t plus a fixed bridge
text -> signals["answer_prob"]; rec.info["signals"]["final_answer_prob"] = the same after
the last turn. Nothing to train. An episode's contexts that are prefixes of its final one
(full history) share one packed forward of it (a branch per turn, custom 4D mask); the
others are computed one by one. The advantages are in `agentrl.credit.igpo`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from agentrl.credit.base import CreditError, check_choice, set_params
from agentrl.errors import UserError
from agentrl.learner.batch import StepSample, budget_groups
from agentrl.learner.lora import POLICY, use_adapter
from agentrl.learner.update import autocast_for, body_and_head, sample_logprobs
from agentrl.policy.logprobs import eval_mode
from agentrl.policy.prompt import Turn, build_prompt, chat_format, system_message, system_prompt_for, user_message
from agentrl.signals.base import set_episode_signal, set_step_signal
from agentrl.store.records import EpisodeRecord

DEFAULT_BRIDGE = "The full solution is:"


@dataclass(frozen=True)
class IGPOParams:
    """What the answer probabilities are of (recipe `credit:` keys beside the method's own)."""

    method: ClassVar[str] = "igpo"
    truth: str = "walkthrough"  # walkthrough | goal
    bridge: str = DEFAULT_BRIDGE  # text between the context and the truth

    def __post_init__(self) -> None:
        if not isinstance(self.bridge, str):
            raise CreditError(f"credit method 'igpo': parameter 'bridge' must be a string, got {self.bridge!r}")
        set_params(self, truth=check_choice(self.method, "truth", self.truth, ("walkthrough", "goal")))


# ---------------------------------------------------------------- the provider


class IGPOProvider:
    """Teacher-forced probability of the ground truth before each turn (signals["answer_prob"])."""

    Params = IGPOParams

    def __init__(self, model, tokenizer, recipe, params: IGPOParams | None = None, method=None):
        p = params or IGPOParams()
        self.model, self.tokenizer, self.recipe = model, tokenizer, recipe
        self.settings = p
        self.truth, self.bridge = p.truth, p.bridge
        self.fmt = chat_format(tokenizer)
        self.bridge_ids = self.fmt.encode(self.bridge) if self.bridge else []
        self.last_split = (0, 0)  # (packed, per-pair) unique pairs of the last answer_probs call

    def truth_text(self, rec: EpisodeRecord) -> str:
        if self.truth == "goal":
            text = (rec.goal or "").strip()
            if not text:
                raise UserError(f"igpo: task {rec.task_id} has no goal text to use as ground truth")
            return text
        plan = rec.info.get("walkthrough")
        if not plan:
            raise UserError(
                f"igpo: task {rec.task_id} has no walkthrough (expert plan); "
                "set credit.truth: goal to use the goal text instead"
            )
        return ", ".join(plan) if isinstance(plan, (list, tuple)) else str(plan)

    def final_context(self, rec: EpisodeRecord) -> list[int]:
        """The prompt the policy would see at a turn after the last one: built like every other
        prompt (same system prompt, history window, length limit) with the final observation."""
        ro = self.recipe.rollout
        last = rec.steps[-1]
        turns = [
            Turn(user_message(s.observation, s.admissible, ro.show_admissible), list(s.action_ids or []))
            for s in rec.steps
        ]
        system = system_message(system_prompt_for(ro, rec.env, rec.info.get("env_options")), rec.goal)
        try:
            return build_prompt(
                self.fmt, system, turns, rec.final_observation, None, ro.history, ro.max_prompt_tokens
            ).ids
        except UserError:  # cannot fit: the last prompt, its action and the next turn's opening
            return list(last.prompt_ids) + self.fmt.piece(
                list(last.action_ids or []), user_message(rec.final_observation, None)
            )

    @torch.no_grad()
    def answer_probs(
        self, contexts: list[list[int]], truths: list[list[int]], groups: list | None = None
    ) -> list[float]:
        """exp(mean log p(truth tokens | context + bridge)) per pair; identical pairs are computed once
        (so equal contexts give bit-identical p, and an unchanged context gives IG exactly 0).

        `groups` (e.g. the episode of each pair) turns on packing: within a group, every pair whose
        context is a prefix of the group's longest context shares one forward of that context
        (`_packed_logprobs`); the other pairs (and all of them without `groups`) get one sequence
        `context + bridge + truth` each. `self.last_split` = (packed, per-pair) unique pair counts."""
        unique: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
        keys = [unique.setdefault((tuple(c), tuple(t)), len(unique)) for c, t in zip(contexts, truths)]
        pairs = list(unique)
        rows, rest = [], list(range(len(pairs)))
        if groups is not None and self._custom_mask_ok():
            group_of: dict[int, Any] = {}  # a pair shared by several groups is packed with the first
            for k, g in zip(keys, groups):
                group_of.setdefault(k, g)
            rows, rest = self._pack_plan(pairs, [group_of[i] for i in range(len(pairs))])
        r = self.recipe
        lp: dict[int, list[float]] = {}
        with use_adapter(self.model, POLICY), eval_mode(self.model):
            if rows:
                lp.update(self._packed_logprobs(rows, pairs))
            if rest:
                samples = [
                    StepSample(
                        episode=i,
                        t=0,
                        prompt_ids=list(pairs[i][0]) + self.bridge_ids,
                        action_ids=list(pairs[i][1]),
                        old_logprobs=[0.0] * len(pairs[i][1]),
                        advantage=0.0,
                    )
                    for i in rest
                ]
                per_pair = sample_logprobs(
                    self.model, samples, r.rollout.temperature, "per_step", r.learner.micro_batch_tokens
                )
                lp.update(zip(rest, per_pair))
        self.last_split = (len(pairs) - len(rest), len(rest))
        p = [math.exp(math.fsum(lp[i]) / len(lp[i])) for i in range(len(pairs))]
        return [p[k] for k in keys]

    @staticmethod
    def _pack_plan(
        pairs: list[tuple[tuple[int, ...], tuple[int, ...]]], groups: list
    ) -> tuple[list[tuple[list[int], list[tuple[int, int]]]], list[int]]:
        """Per group: (its longest context, [(pair index, context length)] of the pairs whose context is a
        prefix of it); and the indices of the pairs left over (not a prefix, e.g. a history window
        that dropped turns)."""
        by_group: dict[Any, list[int]] = {}
        for i, g in enumerate(groups):
            by_group.setdefault(g, []).append(i)
        rows, rest = [], []
        for members in by_group.values():
            root = max((pairs[i][0] for i in members), key=len)
            row = []
            for i in members:
                c = pairs[i][0]
                if c and root[: len(c)] == c:
                    row.append((i, len(c)))
                else:
                    rest.append(i)
            if row:
                rows.append((list(root), row))
        return rows, rest

    def _custom_mask_ok(self) -> bool:
        """The packed forward needs an attention that takes an additive 4D mask as given. In transformers 5.x
        `create_causal_mask` (masking_utils._preprocess_mask_arguments) returns any 4D mask unchanged, and
        the sdpa and eager kernels add it to the scores (sdpa: `attn_mask=`, with is_causal off since a mask
        is set); flash-attention kernels take no such mask, so other implementations use the per-pair path."""
        body, _ = body_and_head(self.model)
        return getattr(body.config, "_attn_implementation", None) in ("sdpa", "eager")

    def _packed_logprobs(
        self, rows: list[tuple[list[int], list[tuple[int, int]]]], pairs: list[tuple[tuple[int, ...], tuple[int, ...]]]
    ) -> dict[int, list[float]]:
        """Truth-token log-probs of packed pairs: one sequence per row.

        A row is its longest context C followed by one branch `bridge + truth` per pair whose context
        is C[:n]. A branch token attends to C[:n] and causally to its own branch only, and has the
        position id it would have right after C[:n] (n, n+1, ...), so it sees exactly what it sees in the
        sequence `C[:n] + bridge + truth`, while C is processed once. Rows are right-padded into
        batches of at most `micro_batch_tokens` (rows x width; a longer row goes alone); the mask is a
        float [B, 1, L, L] tensor (0 allowed, -inf masked; every query keeps its own key, so no row of
        it is all -inf), passed with explicit `position_ids`. The LM head runs at the truth positions only.
        """
        body, head = body_and_head(self.model)
        device = next(self.model.parameters()).device
        nb = len(self.bridge_ids)
        seqs = []  # (ids, position ids, segment ids, visible main prefix, [(pair, index predicting truth[k], token)])
        for root, members in rows:
            ids, pos, seg, ctx, targets = list(root), list(range(len(root))), [0] * len(root), [0] * len(root), []
            for j, (i, n) in enumerate(members, start=1):
                start, truth = len(ids), list(pairs[i][1])
                branch = self.bridge_ids + truth
                ids += branch
                pos += range(n, n + len(branch))
                seg += [j] * len(branch)
                ctx += [n] * len(branch)
                targets += [(i, start + nb + k - 1 if nb + k else n - 1, tok) for k, tok in enumerate(truth)]
            seqs.append((ids, pos, seg, ctx, targets))
        out: dict[int, list[float]] = {}
        for batch in budget_groups(seqs, lambda q: len(q[0]), self.recipe.learner.micro_batch_tokens):
            width = len(batch[0][0])
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            pos = torch.zeros(len(batch), width, dtype=torch.long)
            seg = torch.full((len(batch), width), -1, dtype=torch.long)  # padding: its own segment
            ctx = torch.zeros(len(batch), width, dtype=torch.long)
            for b, (i_, p_, s_, c_, _) in enumerate(batch):
                n = len(i_)
                ids[b, :n], pos[b, :n], seg[b, :n], ctx[b, :n] = (torch.tensor(x) for x in (i_, p_, s_, c_))
            k = torch.arange(width)
            allowed = (k[None, None, :] < ctx[:, :, None]) | (
                (seg[:, :, None] == seg[:, None, :]) & (k[None, None, :] <= k[None, :, None])
            )
            mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill_(~allowed, float("-inf"))
            flat = [(b, i, at, tok) for b, q in enumerate(batch) for i, at, tok in q[4]]
            rows_t = torch.tensor([f[0] for f in flat])
            at_t = torch.tensor([f[2] for f in flat])
            tok_t = torch.tensor([f[3] for f in flat], device=device)
            with autocast_for(device):
                hidden = body(
                    input_ids=ids.to(device),
                    attention_mask=mask[:, None].to(device),
                    position_ids=pos.to(device),
                    use_cache=False,
                ).last_hidden_state
                logits = head(hidden[rows_t.to(device), at_t.to(device)]).float() / self.recipe.rollout.temperature
            logp = torch.log_softmax(logits, dim=-1).gather(1, tok_t[:, None]).squeeze(1).tolist()
            for (_, i, _, _), v in zip(flat, logp):
                out.setdefault(i, []).append(v)
        return out

    def compute(self, recs: list[EpisodeRecord]) -> dict:
        contexts, truths, where = [], [], []
        for e, rec in enumerate(recs):
            if not rec.steps:
                continue
            truth = self.fmt.encode(" " + self.truth_text(rec))
            for t, s in enumerate(rec.steps):
                if not s.prompt_ids:
                    raise UserError(f"igpo: episode {rec.id} step {t} has no prompt tokens (needs an llm policy)")
                contexts.append(s.prompt_ids)
                truths.append(truth)
                where.append((e, t))
            contexts.append(self.final_context(rec))
            truths.append(truth)
            where.append((e, -1))
        probs = self.answer_probs(contexts, truths, [e for e, _ in where])
        steps_p, finals, zero, n = [], [], 0, 0
        by_ep: dict[int, list[float]] = {}
        for (e, t), p in zip(where, probs):
            if t < 0:
                set_episode_signal(recs[e], "final_answer_prob", p)
                finals.append(p)
            else:
                set_step_signal(recs[e].steps[t], "answer_prob", p)
                steps_p.append(p)
            by_ep.setdefault(e, []).append(p)
        for seq in by_ep.values():  # IG_t = 0 exactly when p_{t+1} == p_t
            zero += sum(a == b for a, b in zip(seq, seq[1:]))
            n += len(seq) - 1
        return {
            "answer_prob": sum(steps_p) / len(steps_p) if steps_p else 0.0,
            "final_answer_prob": sum(finals) / len(finals) if finals else 0.0,
            "zero_ig_frac": zero / n if n else 0.0,
        }

    def update(self, recs: list[EpisodeRecord]) -> dict:
        return {}

    def state_dict(self) -> dict[str, dict]:
        return {}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        pass
