"""Online (learned) parts of the step-level credit methods, run on the policy model during training.

`make_signal_provider(method, params, model, tokenizer, recipe)` returns None for methods
that need no signals (grpo, rloo, gigpo, third-party methods), else an object with:

    compute(recs) -> dict    # BEFORE advantages: fill step.info["signals"] / rec.info["signals"]
    update(recs) -> dict     # AFTER the policy update: train the learned part on this batch
    state_dict() -> dict[str, dict]            # saved with the checkpoint
    load_state_dict(state: dict[str, dict]) -> None

The three providers (DESIGN §5):
- `spa`  (`SPAProvider`): a `ProgressEstimator` head on the policy's final hidden state at
  each turn's last action token -> signals["progress"] = c_t; trained on a bounded buffer
  of (features, R) so that an episode's contributions sum to its return.
- `oprl` (`OPRLProvider`): the implicit PRM, a second LoRA adapter "prm" on the same frozen
  base -> signals["logratio"] = Σ_tokens log π_prm − stored rollout log-prob, computed at
  the rollout temperature and, in admissible mode, renormalised over the allowed tokens
  exactly like the learner. Trained with the pairwise `prm_loss_torch` (its own AdamW on
  the prm adapter only). Its weights travel in the checkpoint's adapter dir (every adapter
  is saved); `state_dict` holds its optimizer.
- `igpo` (`IGPOProvider`): p_t = exp(mean token log-prob) of the task's ground truth
  (`truth: walkthrough` joined with ", ", or `truth: goal`), teacher-forced after the
  context before turn t plus a fixed bridge text -> signals["answer_prob"];
  rec.info["signals"]["final_answer_prob"] = the same after the last turn. Nothing to train.
  An episode's contexts that are prefixes of its final one (full history) share one packed
  forward of it (a branch per turn, custom 4D mask); the others are computed one by one.

Parameters: `recipe.credit` mixes the method's own parameters (checked by `get_method`) and
provider-only ones (`PROVIDER_PARAMS`); `split_params` separates them.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from agentrl.credit.base import CreditError, check_choice, check_float
from agentrl.errors import UserError
from agentrl.learner.batch import StepSample, budget_groups, make_micro_batches
from agentrl.learner.lora import POLICY, adapter_parameters, add_adapter, set_trainable, use_adapter
from agentrl.learner.update import autocast_for, body_and_head, compute_logprobs, sample_logprobs
from agentrl.policy.logprobs import allowed_token_ids, eval_mode
from agentrl.store.records import EpisodeRecord

PRM = "prm"
DEFAULT_BRIDGE = "The full solution is:"

# provider-only parameters per method and their defaults (None: see the provider)
PROVIDER_PARAMS: dict[str, dict[str, Any]] = {
    "spa": {"estimator_lr": 1e-3, "estimator_epochs": 20, "estimator_buffer": 512, "estimator_width": 128},
    "oprl": {"prm_lr": None, "prm_epochs": 1},
    "igpo": {"truth": "walkthrough", "bridge": DEFAULT_BRIDGE},
}


def split_params(method: str, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`recipe.credit` params -> (for `get_method`, for the signal provider).

    Provider-only names of `method` go to the second dict; everything else to the first,
    where `get_method` rejects what the method does not know (so e.g. `truth` on grpo is a
    one-line error naming it)."""
    own = PROVIDER_PARAMS.get(method, {})
    return ({k: v for k, v in params.items() if k not in own}, {k: v for k, v in params.items() if k in own})


def _int(method: str, name: str, value: Any, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise CreditError(f"credit method '{method}': parameter '{name}' must be an integer >= {lo}, got {value!r}")
    return value


def make_signal_provider(method: str, params: dict, model, tokenizer, recipe):
    """The learned part of `method` on `model` (a PeftModel with adapter "policy"), or None.

    `params` = all of `recipe.credit.params()` (method and provider parameters)."""
    if method not in PROVIDER_PARAMS:
        return None
    from agentrl.credit import get_method

    method_params, own = split_params(method, params)
    cfg = {**PROVIDER_PARAMS[method], **own}
    credit = get_method(method, **method_params)  # validated method params (e.g. OPRL's beta)
    if method == "spa":
        return SPAProvider(model, tokenizer, recipe, lr=check_float(method, "estimator_lr", cfg["estimator_lr"], 1e-12),
                           epochs=_int(method, "estimator_epochs", cfg["estimator_epochs"]),
                           buffer=_int(method, "estimator_buffer", cfg["estimator_buffer"]),
                           width=_int(method, "estimator_width", cfg["estimator_width"]))
    if method == "oprl":
        lr = recipe.learner.lr if cfg["prm_lr"] is None else check_float(method, "prm_lr", cfg["prm_lr"], 1e-12)
        return OPRLProvider(model, tokenizer, recipe, beta=credit.beta, lr=lr,
                            epochs=_int(method, "prm_epochs", cfg["prm_epochs"]))
    bridge = cfg["bridge"]
    if not isinstance(bridge, str):
        raise CreditError(f"credit method 'igpo': parameter 'bridge' must be a string, got {bridge!r}")
    truth = check_choice(method, "truth", cfg["truth"], ("walkthrough", "goal"))
    return IGPOProvider(model, tokenizer, recipe, truth=truth, bridge=bridge)


# ---------------------------------------------------------------- shared helpers


def episode_return(rec: EpisodeRecord) -> float:
    """R(τ) as the credit methods see it from `train.credit_episodes` (no outcome: the reward sum)."""
    return float(sum(s.reward for s in rec.steps))


def set_step_signal(step, key: str, value: float) -> None:
    step.info.setdefault("signals", {})[key] = float(value)


def set_episode_signal(rec: EpisodeRecord, key: str, value: float) -> None:
    rec.info.setdefault("signals", {})[key] = float(value)


def step_samples(recs: list[EpisodeRecord], tokenizer, action_mode: str,
                 allowed: bool = True) -> tuple[list[StepSample], list[tuple[int, int]]]:
    """One StepSample per step with action tokens (like `train.train_samples`, advantage 0) and
    its (episode index, step index). `allowed`: admissible-mode trie sets, as the learner uses."""
    samples, where = [], []
    for e, r in enumerate(recs):
        for t, s in enumerate(r.steps):
            if not s.action_ids or not s.prompt_ids:
                continue
            al = None
            if allowed and action_mode == "admissible" and s.admissible:
                al = allowed_token_ids(tokenizer, s.admissible, s.action_ids)
            old = list(s.logprobs) if s.logprobs and len(s.logprobs) == len(s.action_ids) else [0.0] * len(s.action_ids)
            samples.append(StepSample(episode=e, t=t, prompt_ids=list(s.prompt_ids), action_ids=list(s.action_ids),
                                      old_logprobs=old, advantage=0.0, allowed=al))
            where.append((e, t))
    return samples, where


@torch.no_grad()
def last_action_hidden(model, samples: list[StepSample], layout: str, micro_batch_tokens: int) -> torch.Tensor:
    """[n, H] float32 CPU: the final hidden state (after the last norm) at each sample's last action token.

    Teacher-forced through the transformer body with the active adapter, batched like the
    learner (the `concat` layout gives the same states as `per_step` where prompts chain)."""
    body, _ = body_and_head(model)
    device = next(model.parameters()).device
    out: list[torch.Tensor | None] = [None] * len(samples)
    last_tok = [len(s.action_ids) - 1 for s in samples]
    with eval_mode(model):
        for mb in make_micro_batches(samples, layout, micro_batch_tokens):
            mb = mb.to(device)
            full = bool(mb.attention_mask.all())
            with autocast_for(device):
                h = body(input_ids=mb.input_ids, attention_mask=None if full else mb.attention_mask,
                         use_cache=False).last_hidden_state
            sel = mb.token_index == torch.tensor(last_tok, device=device)[mb.sample_index]
            # the state AT the last action token sits one past the position that predicts it
            hs = h[mb.batch_index[sel], mb.positions[sel] + 1].float().cpu()
            for i, v in zip(mb.sample_index[sel].tolist(), hs):
                out[i] = v
    if not samples:
        return torch.zeros(0, 0)
    return torch.stack(out)  # type: ignore[arg-type]


def _batch_key(recs: list[EpisodeRecord]) -> tuple[int, ...]:
    return tuple(id(r) for r in recs)


# ---------------------------------------------------------------- SPA


class SPAProvider:
    """Progress estimator on the policy's hidden states (signals["progress"])."""

    def __init__(self, model, tokenizer, recipe, lr: float = 1e-3, epochs: int = 20, buffer: int = 512,
                 width: int = 128):
        from agentrl.credit.spa import EpisodeBuffer, ProgressEstimator

        self.model, self.tokenizer, self.recipe = model, tokenizer, recipe
        self.epochs = epochs
        hidden = int(model.get_base_model().config.hidden_size)
        self.estimator = ProgressEstimator(hidden, width)  # small: lives on the CPU
        self.optimizer = torch.optim.Adam(self.estimator.parameters(), lr=lr)
        self.buffer = EpisodeBuffer(buffer)
        self._pending: tuple[tuple[int, ...], list[EpisodeRecord], list[torch.Tensor]] | None = None

    def features(self, recs: list[EpisodeRecord]) -> list[torch.Tensor]:
        """[T_i', H] per episode: hidden states of the steps that have action tokens."""
        r = self.recipe
        samples, where = step_samples(recs, self.tokenizer, r.rollout.action_mode, allowed=False)
        hidden = self.model.get_base_model().config.hidden_size
        h = last_action_hidden(self.model, samples, r.learner.layout, r.learner.micro_batch_tokens)
        rows: list[list[int]] = [[] for _ in recs]
        for k, (e, _) in enumerate(where):
            rows[e].append(k)
        return [h[idx] if idx else torch.zeros(0, hidden) for idx in rows]

    def compute(self, recs: list[EpisodeRecord]) -> dict:
        from agentrl.credit.spa import estimate_progress

        feats = self.features(recs)
        self.estimator.eval()
        progress = estimate_progress(self.estimator, feats)
        sq, n, total = 0.0, 0, 0.0
        for rec, f, c in zip(recs, feats, progress):
            it = iter(c)
            for s in rec.steps:
                has = bool(s.action_ids and s.prompt_ids)
                set_step_signal(s, "progress", next(it) if has else 0.0)
            sq += (sum(c) - episode_return(rec)) ** 2
            total += sum(abs(x) for x in c)
            n += len(c)
        self._pending = (_batch_key(recs), recs, feats)
        return {"estimator_batch_loss": sq / len(recs) if recs else 0.0,
                "progress_abs": total / n if n else 0.0}

    def update(self, recs: list[EpisodeRecord]) -> dict:
        if self._pending is not None and self._pending[0] == _batch_key(recs):
            feats = self._pending[2]
        else:
            feats = self.features(recs)
        self._pending = None
        for rec, f in zip(recs, feats):
            if len(f):
                self.buffer.add(f, episode_return(rec))
        loss = self.buffer.fit(self.estimator, self.optimizer, self.epochs) if len(self.buffer) else 0.0
        return {"estimator_loss": loss, "estimator_buffer": float(len(self.buffer))}

    def state_dict(self) -> dict[str, dict]:
        feats = self.buffer.features()
        h = self.estimator.hidden_size
        return {
            "spa_estimator": self.estimator.state_dict(),
            "spa_optimizer": self.optimizer.state_dict(),
            "spa_buffer": {
                "features": torch.cat(feats) if feats else torch.zeros(0, h),
                "lengths": torch.tensor([len(f) for f in feats], dtype=torch.long),
                "returns": self.buffer.returns(),
            },
        }

    def load_state_dict(self, state: dict[str, dict]) -> None:
        if "spa_estimator" not in state:
            raise UserError("the checkpoint has no SPA progress estimator (was it trained with credit.method: spa?)")
        try:
            self.estimator.load_state_dict(state["spa_estimator"])
        except RuntimeError:
            raise UserError("the checkpoint's SPA estimator does not match this model or estimator_width") from None
        self.optimizer.load_state_dict(state["spa_optimizer"])
        buf = state.get("spa_buffer") or {}
        self.buffer.items.clear()
        start = 0
        for n, r in zip(buf.get("lengths", torch.zeros(0)).tolist(), buf.get("returns", torch.zeros(0)).tolist()):
            self.buffer.add(buf["features"][start : start + n], r)
            start += n


# ---------------------------------------------------------------- OPRL


class OPRLProvider:
    """Implicit PRM as a second LoRA adapter "prm" (signals["logratio"])."""

    def __init__(self, model, tokenizer, recipe, beta: float = 0.05, lr: float = 1e-4, epochs: int = 1):
        self.model, self.tokenizer, self.recipe = model, tokenizer, recipe
        self.beta, self.epochs = beta, epochs
        if PRM not in model.peft_config:  # same LoRA shape as the policy; requires_grad flags unchanged
            add_adapter(model, PRM, recipe.learner)
        self.params = adapter_parameters(model, PRM)
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=recipe.learner.weight_decay)
        self._pending: tuple | None = None  # (batch key, recs, samples, where, logratios) of the last compute()

    def _samples(self, recs):
        return step_samples(recs, self.tokenizer, self.recipe.rollout.action_mode)

    @torch.no_grad()
    def logratios(self, recs: list[EpisodeRecord], samples=None, where=None) -> list[list[float]]:
        """Per episode, per step: Σ_tokens log π_prm − stored log-prob (0 for a step without action tokens)."""
        if samples is None:
            samples, where = self._samples(recs)
        r = self.recipe
        with use_adapter(self.model, PRM), eval_mode(self.model):
            lp = sample_logprobs(self.model, samples, r.rollout.temperature, r.learner.layout,
                                 r.learner.micro_batch_tokens)
        out = [[0.0] * len(rec.steps) for rec in recs]
        for s, v, (e, t) in zip(samples, lp, where):
            out[e][t] = math.fsum(v) - math.fsum(s.old_logprobs)
        return out

    def compute(self, recs: list[EpisodeRecord]) -> dict:
        samples, where = self._samples(recs)
        lr = self.logratios(recs, samples, where)
        for rec, row in zip(recs, lr):
            for s, x in zip(rec.steps, row):
                set_step_signal(s, "logratio", x)
        self._pending = (_batch_key(recs), recs, samples, where, lr)
        flat = [abs(x) for row in lr for x in row]
        return {"logratio_abs": sum(flat) / len(flat) if flat else 0.0}

    def update(self, recs: list[EpisodeRecord]) -> dict:
        """`epochs` full-batch AdamW steps on the PRM loss; the "policy" adapter stays the active one."""
        from agentrl.credit.oprl import preference_pairs, prm_loss_torch

        if self._pending is not None and self._pending[0] == _batch_key(recs):
            _, _, samples, where, lr = self._pending  # the PRM has not changed since compute()
        else:
            samples, where = self._samples(recs)
            lr = None
        self._pending = None
        groups = [r.group_id for r in recs]
        returns = [episode_return(r) for r in recs]
        won, _ = preference_pairs(groups, returns)
        metrics = {"prm_loss": 0.0, "prm_pairs": float(len(won))}
        if not won or not samples:
            return metrics
        cfg = self.recipe.learner
        for epoch in range(self.epochs):
            if lr is None or epoch > 0:
                lr = self.logratios(recs, samples, where)
            # dLoss/dlogratio per step from the exact loss, then a surrogate per micro-batch:
            # Σ_tokens g_step · log π_prm(token) has the same gradient in the PRM's weights, with
            # memory bounded by one micro-batch instead of the whole batch's graph.
            leaves = [torch.tensor(row, dtype=torch.float32, requires_grad=True) for row in lr]
            loss = prm_loss_torch(leaves, groups, returns, self.beta)
            loss.backward()
            if epoch == 0:
                metrics["prm_loss"] = float(loss.detach())
            g = [leaf.grad.tolist() for leaf in leaves]
            step_grad = [g[e][t] for e, t in where]
            keep = [i for i, x in enumerate(step_grad) if x != 0.0]
            if not keep:
                break
            self._step([samples[i] for i in keep], [step_grad[i] for i in keep], cfg)
        return metrics

    def _step(self, samples: list[StepSample], grads: list[float], cfg) -> None:
        device = next(self.model.parameters()).device
        weights = torch.tensor(grads, dtype=torch.float32, device=device)
        was = self.model.training
        with use_adapter(self.model, PRM):  # restores the active adapter and requires_grad flags
            set_trainable(self.model, PRM)
            self.model.train()
            try:
                for mb in make_micro_batches(samples, cfg.layout, cfg.micro_batch_tokens):
                    mb = mb.to(device)
                    with autocast_for(device):
                        logp, _ = compute_logprobs(self.model, mb, self.recipe.rollout.temperature)
                    (weights[mb.sample_index] * logp.float()).sum().backward()
                torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
            finally:
                self.optimizer.zero_grad(set_to_none=True)
                self.model.train(was)

    def state_dict(self) -> dict[str, dict]:
        # the PRM adapter's weights are saved with the model's adapters (checkpoint adapter/prm/)
        return {"prm_optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        if "prm_optimizer" not in state:
            raise UserError("the checkpoint has no OPRL PRM optimizer state (was it trained with credit.method: oprl?)")
        self.optimizer.load_state_dict(state["prm_optimizer"])


# ---------------------------------------------------------------- IGPO


class IGPOProvider:
    """Teacher-forced probability of the ground truth before each turn (signals["answer_prob"])."""

    def __init__(self, model, tokenizer, recipe, truth: str = "walkthrough", bridge: str = DEFAULT_BRIDGE):
        from agentrl.policy.prompt import chat_format

        self.model, self.tokenizer, self.recipe = model, tokenizer, recipe
        self.truth, self.bridge = truth, bridge
        self.fmt = chat_format(tokenizer)
        self.bridge_ids = self.fmt.encode(bridge) if bridge else []
        self.last_split = (0, 0)  # (packed, per-pair) unique pairs of the last answer_probs call

    def truth_text(self, rec: EpisodeRecord) -> str:
        if self.truth == "goal":
            text = (rec.goal or "").strip()
            if not text:
                raise UserError(f"igpo: task {rec.task_id} has no goal text to use as ground truth")
            return text
        plan = rec.info.get("walkthrough")
        if not plan:
            raise UserError(f"igpo: task {rec.task_id} has no walkthrough (expert plan); "
                            "set credit.truth: goal to use the goal text instead")
        return ", ".join(plan) if isinstance(plan, (list, tuple)) else str(plan)

    def final_context(self, rec: EpisodeRecord) -> list[int]:
        """The prompt the policy would see at a turn after the last one: built like every other
        prompt (same system prompt, history window, length limit) with the final observation."""
        from agentrl.policy.prompt import Turn, build_prompt, default_system_prompt, system_message, user_message

        ro = self.recipe.rollout
        last = rec.steps[-1]
        turns = [Turn(user_message(s.observation, s.admissible), list(s.action_ids or [])) for s in rec.steps]
        system = system_message(ro.system_prompt or default_system_prompt(ro.action_mode, ro.action_parser), rec.goal)
        try:
            return build_prompt(self.fmt, system, turns, rec.final_observation, None, ro.history,
                                ro.max_prompt_tokens).ids
        except UserError:  # cannot fit: the last prompt, its action and the next turn's opening
            return list(last.prompt_ids) + self.fmt.piece(list(last.action_ids or []),
                                                          user_message(rec.final_observation, None))

    @torch.no_grad()
    def answer_probs(self, contexts: list[list[int]], truths: list[list[int]],
                     groups: list | None = None) -> list[float]:
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
                samples = [StepSample(episode=i, t=0, prompt_ids=list(pairs[i][0]) + self.bridge_ids,
                                      action_ids=list(pairs[i][1]), old_logprobs=[0.0] * len(pairs[i][1]),
                                      advantage=0.0) for i in rest]
                per_pair = sample_logprobs(self.model, samples, r.rollout.temperature, "per_step",
                                           r.learner.micro_batch_tokens)
                lp.update(zip(rest, per_pair))
        self.last_split = (len(pairs) - len(rest), len(rest))
        p = [math.exp(math.fsum(lp[i]) / len(lp[i])) for i in range(len(pairs))]
        return [p[k] for k in keys]

    @staticmethod
    def _pack_plan(pairs: list[tuple[tuple[int, ...], tuple[int, ...]]], groups: list
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

    def _packed_logprobs(self, rows: list[tuple[list[int], list[tuple[int, int]]]],
                         pairs: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> dict[int, list[float]]:
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
                (seg[:, :, None] == seg[:, None, :]) & (k[None, None, :] <= k[None, :, None]))
            mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill_(~allowed, float("-inf"))
            flat = [(b, i, at, tok) for b, q in enumerate(batch) for i, at, tok in q[4]]
            rows_t = torch.tensor([f[0] for f in flat])
            at_t = torch.tensor([f[2] for f in flat])
            tok_t = torch.tensor([f[3] for f in flat], device=device)
            with autocast_for(device):
                hidden = body(input_ids=ids.to(device), attention_mask=mask[:, None].to(device),
                              position_ids=pos.to(device), use_cache=False).last_hidden_state
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
        return {"answer_prob": sum(steps_p) / len(steps_p) if steps_p else 0.0,
                "final_answer_prob": sum(finals) / len(finals) if finals else 0.0,
                "zero_ig_frac": zero / n if n else 0.0}

    def update(self, recs: list[EpisodeRecord]) -> dict:
        return {}

    def state_dict(self) -> dict[str, dict]:
        return {}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        pass
