"""PPO-clip loss pinned on hand-computed values (agentrl.learner.ppo)."""

import math

import pytest
import torch

from agentrl.learner.ppo import ppo_loss


def t(*xs):
    return torch.tensor(xs, dtype=torch.float32)


def test_clip_values_gradients_and_clip_frac():
    # ratios r = 1.5, 0.5, 0.5, 1.1 ; advantages A = +1, +1, -2, -1 ; eps = 0.2
    # token 1: -rA = -1.5, -clip(r)A = -1.2  -> max = -1.2 (clipped, no gradient)
    # token 2: -rA = -0.5, -clip(r)A = -0.8  -> max = -0.5 (not clipped)
    # token 3: -rA = +1.0, -clip(r)A = +1.6  -> max = +1.6 (clipped)
    # token 4: -rA = +1.1, -clip(r)A = +1.1  -> +1.1 (inside the band)
    # token-mean = (-1.2 - 0.5 + 1.6 + 1.1) / 4 = 0.25
    old = t(0.0, 0.0, 0.0, 0.0)
    logp = torch.log(t(1.5, 0.5, 0.5, 1.1)).requires_grad_()
    adv = t(1.0, 1.0, -2.0, -1.0)
    loss, m = ppo_loss(logp, old, adv, torch.ones(4), clip_eps=0.2, dual_clip=None)
    assert loss.item() == pytest.approx(0.25, abs=1e-6)
    assert m["clip_frac"] == pytest.approx(0.5)
    assert m["ratio_min"] == pytest.approx(0.5) and m["ratio_max"] == pytest.approx(1.5)
    assert m["ratio_mean"] == pytest.approx((1.5 + 0.5 + 0.5 + 1.1) / 4)
    loss.backward()
    # d(-rA)/dlogp = -rA: token 2 -> -0.5/4 = -0.125 ; token 4 -> +1.1/4 = 0.275 ; clipped tokens 0
    assert logp.grad.tolist() == pytest.approx([0.0, -0.125, 0.0, 0.275], abs=1e-6)


def test_dual_clip_caps_negative_advantage_loss():
    # c = 3, eps = 0.2
    # token 1: A=-1, r=5: max(5, 1.2) = 5, capped at -cA = 3 -> 3 (dual-clipped, no gradient)
    # token 2: A=-1, r=2: max(2, 1.2) = 2 < 3 -> 2 (gradient -rA = 2)
    # token 3: A=+1, r=5: max(-5, -1.2) = -1.2 (dual clip only applies to A < 0)
    # mean = (3 + 2 - 1.2) / 3 = 1.2666...
    logp = torch.log(t(5.0, 2.0, 5.0)).requires_grad_()
    adv = t(-1.0, -1.0, 1.0)
    loss, m = ppo_loss(logp, torch.zeros(3), adv, torch.ones(3), clip_eps=0.2, dual_clip=3.0)
    assert loss.item() == pytest.approx(3.8 / 3, abs=1e-6)
    assert m["dual_clip_frac"] == pytest.approx(1 / 3)
    loss.backward()
    assert logp.grad.tolist() == pytest.approx([0.0, 2.0 / 3, 0.0], abs=1e-6)
    # without dual clip token 1 costs 5: (5 + 2 - 1.2) / 3 = 1.9333...
    loss_plain, _ = ppo_loss(logp.detach(), torch.zeros(3), adv, torch.ones(3), dual_clip=None)
    assert loss_plain.item() == pytest.approx(5.8 / 3, abs=1e-6)


def test_dual_clip_must_exceed_one():
    with pytest.raises(ValueError):
        ppo_loss(t(0.0), t(0.0), t(1.0), t(1.0), dual_clip=1.0)


def test_k3_kl_term():
    # d = ref - logp ; k3 = e^d - d - 1
    # d = ln2  -> 2   - ln2 - 1 = 0.3068528
    # d = -ln2 -> 0.5 + ln2 - 1 = 0.1931472
    # d = 0    -> 0
    # mean = 0.5 / 3 = 1/6 ; with kl_coef 0.5 and A = 0 the loss is 1/12
    logp = t(0.0, 0.0, -1.0)
    ref = t(math.log(2.0), -math.log(2.0), -1.0)
    loss, m = ppo_loss(logp, logp, torch.zeros(3), torch.ones(3), ref_logp=ref, kl_coef=0.5)
    assert m["kl"] == pytest.approx(1 / 6, abs=1e-6)
    assert loss.item() == pytest.approx(1 / 12, abs=1e-6)
    # the KL metric is reported even when it is not in the loss
    loss0, m0 = ppo_loss(logp, logp, torch.zeros(3), torch.ones(3), ref_logp=ref, kl_coef=0.0)
    assert loss0.item() == pytest.approx(0.0, abs=1e-7) and m0["kl"] == pytest.approx(1 / 6, abs=1e-6)


def test_token_mean_not_sequence_mean_and_padding_ignored():
    # two sequences (rows), ratio 1 everywhere, so each token's loss is -A
    # row 0: 3 tokens with A = +1 -> -1 each ; row 1: 1 token with A = -1 -> +1, then 2 pad tokens
    # token-mean = (-1 -1 -1 +1) / 4 = -0.5   (a per-sequence mean would give (-1 + 1) / 2 = 0)
    adv = torch.tensor([[1.0, 1.0, 1.0], [-1.0, 100.0, 100.0]])  # pads carry garbage
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    z = torch.zeros(2, 3)
    loss, m = ppo_loss(z, z, adv, mask)
    assert loss.item() == pytest.approx(-0.5, abs=1e-6)
    assert m["tokens"] == 4
    # gradient accumulation: normalise by the optimiser step's token count (8) instead: -2 / 8
    loss8, _ = ppo_loss(z, z, adv, mask, num_tokens=8)
    assert loss8.item() == pytest.approx(-0.25, abs=1e-6)


def test_entropy_bonus():
    # A = 0, entropies 1 and 3, coef 0.1 -> loss = -0.1 * (1 + 3) / 2 = -0.2
    z = torch.zeros(2)
    loss, m = ppo_loss(z, z, z, torch.ones(2), entropy=t(1.0, 3.0), entropy_coef=0.1)
    assert loss.item() == pytest.approx(-0.2, abs=1e-6)
    assert m["entropy"] == pytest.approx(2.0)
