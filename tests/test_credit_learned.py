"""The learned parts beside the credit methods (`agentrl.signals`): SPA's progress estimator, OPRL's PRM loss,
and that their torch losses equal the numpy values the credit methods give."""

from __future__ import annotations

import math

import pytest
import torch

from agentrl.credit import Episode, Step, get_method
from agentrl.signals.oprl import prm_loss_torch
from agentrl.signals.spa import EpisodeBuffer, ProgressEstimator, estimate_progress, estimator_loss_torch, fit_estimator


def test_estimator_shapes_and_fresh_output():
    est = ProgressEstimator(hidden_size=6, width=4)
    x = torch.randn(5, 6)
    assert est(x).shape == (5,)
    assert torch.equal(est(x), torch.zeros(5))  # zero-initialised output layer
    assert est(x.to(torch.bfloat16)).dtype == torch.float32


def test_estimator_loss_torch_matches_episode_loss():
    # contributions [0.2, 0.3, 0.5] R 1 -> 0; [0.4] R 2 -> 2.56; [-0.1, 0.3] R 0 -> 0.04
    contribs = [torch.tensor([0.2, 0.3, 0.5]), torch.tensor([0.4]), torch.tensor([-0.1, 0.3])]
    returns = torch.tensor([1.0, 2.0, 0.0])
    assert float(estimator_loss_torch(contribs, returns)) == pytest.approx(2.6 / 3, rel=1e-6)
    episodes = [
        Episode("a", [Step(0.0, signals={"progress": float(c)}) for c in cs], outcome=float(r))
        for cs, r in zip(contribs, returns)
    ]
    assert get_method("spa").estimator_loss(episodes) == pytest.approx(2.6 / 3, rel=1e-6)
    assert float(estimator_loss_torch([], torch.tensor([]))) == 0.0


def test_fit_estimator_learns_toy_returns():
    # returns are a linear function of the summed features, so the head can fit them
    torch.manual_seed(0)
    w = torch.randn(8)
    features = [torch.randn(int(n), 8) for n in torch.randint(1, 6, (64,))]
    returns = torch.stack([(f @ w).sum() * 0.3 for f in features])
    est = ProgressEstimator(8, width=32)
    opt = torch.optim.Adam(est.parameters(), lr=1e-2)
    with torch.no_grad():
        before = float(estimator_loss_torch([est(f) for f in features], returns))
    last = fit_estimator(est, features, returns, opt, epochs=300)
    with torch.no_grad():
        after = float(estimator_loss_torch([est(f) for f in features], returns))
    assert before > 1.0
    assert after < 0.05 * before and last < 0.05 * before
    progress = estimate_progress(est, features)
    assert [len(p) for p in progress] == [f.shape[0] for f in features]
    assert sum(progress[0]) == pytest.approx(float(est(features[0]).detach().sum()), abs=1e-5)


def test_fit_estimator_does_not_train_features():
    est = ProgressEstimator(3, width=4)
    f = torch.randn(2, 3, requires_grad=True)
    fit_estimator(est, [f], [1.0], torch.optim.SGD(est.parameters(), lr=0.1), epochs=2)
    assert f.grad is None
    assert est.net[2].weight.abs().sum() > 0  # the head itself moved


def test_episode_buffer_is_bounded():
    buf = EpisodeBuffer(capacity=3)
    for i in range(5):
        buf.add(torch.full((i + 1, 2), float(i), requires_grad=True), float(i))
    assert len(buf) == 3
    assert buf.returns().tolist() == [2.0, 3.0, 4.0]
    assert [f.shape[0] for f in buf.features()] == [3, 4, 5]
    assert not buf.features()[0].requires_grad
    est = ProgressEstimator(2, width=4)
    assert buf.fit(est, torch.optim.SGD(est.parameters(), lr=0.01), epochs=1) == pytest.approx(
        (4 + 9 + 16) / 3  # fresh head: c = 0, loss = mean R^2
    )
    with pytest.raises(ValueError):
        EpisodeBuffer(0)


# ---------------------------------------------------------------- OPRL PRM


LOGRATIOS = [[2, -1], [4, 0, -2], [1], [-4], [1], [2]]
GROUPS = ["a", "b", "a", "b", "c", "b"]
RETURNS = [1.0, 1.0, 0.0, 0.0, 1.0, 0.5]


def episodes():
    return [
        Episode(g, [Step(0.0, signals={"logratio": float(x)}) for x in lr], outcome=r)
        for lr, g, r in zip(LOGRATIOS, GROUPS, RETURNS)
    ]


def test_prm_loss_torch_equals_prm_loss():
    # beta .5: Q = [.25, 1/3, .5, -2, .5, 1]; pairs (won, lost): a (0, 2) d = -.25,
    # b (1, 3) d = 7/3, (5, 3) d = 3; c has no lost episode
    sp = lambda d: math.log1p(math.exp(-d))  # noqa: E731
    want = (sp(-0.25) + sp(7 / 3) + sp(3.0)) / 3
    xs = [torch.tensor(lr, dtype=torch.float64) for lr in LOGRATIOS]
    got = prm_loss_torch(xs, GROUPS, RETURNS, beta=0.5)
    assert float(got) == pytest.approx(want, rel=1e-12)
    assert get_method("oprl", beta=0.5).prm_loss(episodes()) == pytest.approx(float(got), rel=1e-12)
    for beta in (0.05, 2.0):
        assert get_method("oprl", beta=beta).prm_loss(episodes()) == pytest.approx(
            float(prm_loss_torch(xs, GROUPS, RETURNS, beta=beta)), rel=1e-12
        )


def test_prm_loss_gradients():
    # one pair: won lr [a1, a2], lost lr [b]; loss = softplus(-(beta*(a1+a2)/2 - beta*b))
    # d/da_i = -sigmoid(-d) * beta/2, d/db = +sigmoid(-d) * beta
    beta = 0.5
    a = torch.tensor([1.0, 3.0], requires_grad=True)
    b = torch.tensor([0.0], requires_grad=True)
    c = torch.tensor([5.0], requires_grad=True)  # its own group with no pair -> zero gradient
    loss = prm_loss_torch([a, b, c], ["g", "g", "h"], [1.0, -1.0, 1.0], beta)
    d = beta * 2.0 - 0.0
    s = 1 / (1 + math.exp(d))  # sigmoid(-d)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-d)), rel=1e-6)
    loss.backward()
    assert a.grad.tolist() == pytest.approx([-s * beta / 2] * 2, rel=1e-5)
    assert b.grad.tolist() == pytest.approx([s * beta], rel=1e-5)
    assert c.grad.tolist() == [0.0]


def test_prm_loss_without_pairs_is_zero_and_backpropagates():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    loss = prm_loss_torch([x, torch.tensor([])], ["g", "g"], [1.0, 2.0], beta=0.1)
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        prm_loss_torch([x], ["g", "h"], [1.0], beta=0.1)
