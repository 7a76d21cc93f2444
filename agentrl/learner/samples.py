"""Stored episodes -> `StepSample`s: the one place that builds them.

Used by the trainer (the policy update, with the method's advantages) and by the signal
providers (`agentrl.signals`: forwards of the policy or the PRM over the same steps, advantage
0), so both see the same prompts, action tokens, stored log-probs and allowed sets.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentrl.learner.batch import StepSample
from agentrl.policy.constrained import allowed_token_ids
from agentrl.store.records import EpisodeRecord


def episode_samples(
    recs: Sequence[EpisodeRecord],
    advantages: Sequence[Sequence[float]] | None,
    tokenizer,
    action_mode: str,
    *,
    allowed: bool = True,
    drop_zero: bool = False,
) -> list[StepSample]:
    """One StepSample per step that has prompt and action tokens, episode by episode, step by step.

    `episode` is the episode's index in `recs` and `t` the step's index in it, so
    `recs[s.episode].steps[s.t]` is the step of sample `s`. `advantages` [episode][step]
    (None: 0 everywhere). `allowed`: in admissible mode, the allowed token ids at every action
    position (the support the constrained sampler drew from, which the learner renormalises
    over); False leaves them out (e.g. for hidden states, where they play no part).
    `drop_zero` leaves out the episodes whose advantage is 0 at every step (no PPO gradient
    without KL or entropy terms)."""
    out: list[StepSample] = []
    for e, r in enumerate(recs):
        adv = advantages[e] if advantages is not None else [0.0] * len(r.steps)
        if drop_zero and not any(adv):
            continue
        for t, (s, a) in enumerate(zip(r.steps, adv)):
            if not s.action_ids or not s.prompt_ids:
                continue
            al = None
            if allowed and action_mode == "admissible" and s.admissible:
                al = allowed_token_ids(tokenizer, s.admissible, s.action_ids)
            out.append(
                StepSample(
                    episode=e,
                    t=t,
                    prompt_ids=list(s.prompt_ids),
                    action_ids=list(s.action_ids),
                    old_logprobs=list(s.logprobs or []),
                    advantage=float(a),
                    allowed=al,
                )
            )
    return out
