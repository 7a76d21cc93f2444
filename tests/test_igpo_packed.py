"""IGPO answer probabilities: the packed path (one forward per episode, a branch per turn) equals the per-pair path."""

from __future__ import annotations

import math

import pytest
import torch
from test_signals import PLAN, fresh, make_recs, recipe

from agentrl.learner.update import body_and_head
from agentrl.signals.igpo import IGPOParams, IGPOProvider


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from agentrl.config import ModelConfig
    from agentrl.policy.model import load_model

    return load_model(ModelConfig(path=str(tiny_model_dir)))


def synthetic(vocab: int, seed: int = 0):
    """Two episodes whose prompts grow (each a prefix of the next and of the final one) from the same
    first prompt (a duplicate pair across episodes), plus a context in episode 0 that is not a prefix."""
    g = torch.Generator().manual_seed(seed)

    def toks(n):
        return torch.randint(5, vocab, (n,), generator=g).tolist()

    first, contexts, groups = toks(12), [], []
    for e, turns in enumerate([4, 3]):
        c = list(first)
        for _ in range(turns):
            contexts.append(list(c))
            c += toks(int(torch.randint(3, 9, (1,), generator=g)))
        contexts.append(c)  # the final context
        groups += [e] * (turns + 1)
    contexts.append(first[:4] + contexts[3][-6:])  # a history window dropped turns: not a prefix
    groups.append(0)
    return contexts, [toks(6)] * len(contexts), groups


@pytest.mark.parametrize("bridge,budget", [("The full solution is:", 4096), ("", 32)])
def test_packed_equals_per_pair(tiny, bridge, budget):
    rec = recipe(temperature=0.8, micro_batch_tokens=budget)  # 32: one row per forward; 4096: both rows, padded
    pm = fresh(tiny, rec)
    prov = IGPOProvider(pm, tiny[1], rec, IGPOParams(bridge=bridge))
    contexts, truths, groups = synthetic(len(tiny[1]))
    old = prov.answer_probs(contexts, truths)
    assert prov.last_split == (0, len(contexts) - 1)  # 10 pairs, 9 unique
    new = prov.answer_probs(contexts, truths, groups)
    assert prov.last_split == (len(contexts) - 2, 1)  # all unique pairs but the non-prefix one are packed
    assert max(abs(a - b) for a, b in zip(old, new)) < 1e-5
    assert max(abs(math.log(a / b)) for a, b in zip(old, new)) < 1e-5  # p ~ 1e-5 here: compare relatively too
    assert new[5] == new[0]  # identical pairs (both episodes' first prompt): bit-identical p
    assert len(set(new)) == len(new) - 1


def test_compute_takes_packed_path(tiny):
    rec = recipe(temperature=0.8)
    pm = fresh(tiny, rec)
    recs = make_recs(pm, tiny[1], rec, PLAN)
    prov = IGPOProvider(pm, tiny[1], rec)
    masks = []
    body, _ = body_and_head(pm)
    hook = body.register_forward_pre_hook(lambda m, a, kw: masks.append(kw.get("attention_mask")), with_kwargs=True)
    try:
        prov.compute(recs)
    finally:
        hook.remove()
    contexts = [s.prompt_ids for r in recs for s in r.steps] + [prov.final_context(r) for r in recs]
    assert prov.last_split == (len({tuple(c) for c in contexts}), 0)  # history -1: all prefixes of the final one
    assert 1 <= len(masks) < len(recs) and all(m.dim() == 4 for m in masks)  # episodes batched, 4D masks
    got = [s.info["signals"]["answer_prob"] for r in recs for s in r.steps]
    got += [r.info["signals"]["final_answer_prob"] for r in recs]
    truth = prov.fmt.encode(" " + prov.truth_text(recs[0]))
    want = prov.answer_probs(contexts, [truth] * len(contexts))  # per pair
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-5
    assert max(abs(math.log(a / b)) for a, b in zip(got, want)) < 1e-5
