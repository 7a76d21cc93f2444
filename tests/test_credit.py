"""Credit methods pinned on small hand-computed groups (ARCHITECTURE.md §5).

Expected values are worked out by hand in the comments and written as plain
arithmetic; none of them calls the code under test. eps = 1e-6 everywhere.
"""

from __future__ import annotations

import difflib
import math

import pytest

from agentrl.credit import CreditError, Episode, Step, get_method, list_methods, registry
from agentrl.errors import UserError

EPS = 1e-6
S2 = math.sqrt(0.5)  # std (n-1) of {1, 0}


def ep(group, rewards, outcome=None, anchors=None, valid=None, signals=None, esignals=None):
    n = len(rewards)
    anchors = anchors or [""] * n
    valid = valid if valid is not None else [True] * n
    signals = signals or [{} for _ in range(n)]
    steps = [Step(r, a, v, s) for r, a, v, s in zip(rewards, anchors, valid, signals)]
    return Episode(group, steps, outcome, esignals or {})


def close(got, want, tol=1e-9):
    assert len(got) == len(want), (got, want)
    for g_ep, w_ep in zip(got, want):
        assert len(g_ep) == len(w_ep), (got, want)
        for g, w in zip(g_ep, w_ep):
            assert g == pytest.approx(w, abs=tol, rel=1e-9), (got, want)


# ---------------------------------------------------------------- grpo / rloo


def mixed_batch():
    """Groups interleaved in one batch, unequal lengths, outcome overriding rewards.

    group a: R = 1 (rewards 0+1), 0 (0+0+0), 0 (one step)
    group b: R = outcome 0 (rewards sum 5 ignored), outcome 1 (rewards sum 0)
    group c: one episode, R = 7
    """
    return [
        ep("a", [0, 1]),
        ep("b", [5], outcome=0.0),
        ep("a", [0, 0, 0]),
        ep("c", [3, 4]),
        ep("b", [0, 0], outcome=1.0),
        ep("a", [0]),
    ]


def test_grpo_mean_std_mixed_groups():
    # a: mean 1/3, devs 2/3, -1/3, -1/3; ss = 4/9+1/9+1/9 = 2/3; var = (2/3)/2 = 1/3
    sa = math.sqrt(1 / 3)
    # b: R [0, 1], mean 0.5, std sqrt(0.5); c: singleton -> 0
    want = [
        [(2 / 3) / (sa + EPS)] * 2,
        [-0.5 / (S2 + EPS)],
        [(-1 / 3) / (sa + EPS)] * 3,
        [0.0, 0.0],
        [0.5 / (S2 + EPS)] * 2,
        [(-1 / 3) / (sa + EPS)],
    ]
    close(get_method("grpo").advantages(mixed_batch()), want)


def test_grpo_mean_norm():
    want = [[2 / 3] * 2, [-0.5], [-1 / 3] * 3, [0.0, 0.0], [0.5] * 2, [-1 / 3]]
    close(get_method("grpo", norm="mean").advantages(mixed_batch()), want)


def test_grpo_equal_returns_and_empty():
    # std 0 and R - mean = 0 -> 0; an episode with no steps has no advantages
    got = get_method("grpo").advantages([ep("g", [1, 0]), ep("g", [1]), ep("g", [], outcome=1.0)])
    close(got, [[0.0, 0.0], [0.0], []])
    assert get_method("grpo").advantages([]) == []


def test_rloo():
    # a: R [1,0,0]: 1 - (0+0)/2 = 1; 0 - (1+0)/2 = -0.5 (twice)
    # b: R [0,1]: 0 - 1 = -1; 1 - 0 = 1;  c: singleton -> 0
    got = get_method("rloo").advantages(mixed_batch())
    close(got, [[1.0, 1.0], [-1.0], [-0.5] * 3, [0.0, 0.0], [1.0, 1.0], [-0.5]])
    # d: R [3,1,2,2]: 3-5/3 = 4/3; 1-7/3 = -4/3; 2-6/3 = 0; 0
    d = [ep("d", [3]), ep("d", [1]), ep("d", [2]), ep("d", [2])]
    close(get_method("rloo").advantages(d), [[4 / 3], [-4 / 3], [0.0], [0.0]])


# ---------------------------------------------------------------- gigpo


def gigpo_batch():
    """gamma 0.5. Group g:
    ep1 anchors [A, B, A], rewards [0, 0, 1], R = 1; G = [0.25, 0.5, 1]
    ep2 anchors [A, C],    rewards [0, 0],    R = 0; G = [0, 0]
    Group h: ep3 anchor [A], rewards [2], R = 2 (a singleton group; its A is NOT g's A).
    Step groups: g/A = {ep1 t0 (0.25), ep1 t2 (1), ep2 t0 (0)} (repeated state in ep1),
    g/B, g/C, h/A singletons -> A^S = 0.
    """
    return [
        ep("g", [0, 0, 1], anchors=["A", "B", "A"]),
        ep("h", [2], anchors=["A"]),
        ep("g", [0, 0], anchors=["A", "C"]),
    ]


def test_gigpo_exact_mean_norm_repeated_state():
    # A^E: R [1, 0] -> +0.5, -0.5;  h: 0
    # g/A mean = 1.25/3 = 5/12 -> A^S: 0.25-5/12 = -1/6, 1-5/12 = 7/12, 0-5/12 = -5/12
    m = get_method("gigpo", gamma=0.5, norm="mean")
    want = [[0.5 - 1 / 6, 0.5, 0.5 + 7 / 12], [0.0], [-0.5 - 5 / 12, -0.5]]
    close(m.advantages(gigpo_batch()), want)
    assert m.step_groups(gigpo_batch()) == [[0, 1, 0], [2], [0, 3]]
    # omega scales the step term only
    m2 = get_method("gigpo", gamma=0.5, norm="mean", omega=2.0)
    close(m2.advantages(gigpo_batch()), [[0.5 - 2 / 6, 0.5, 0.5 + 14 / 12], [0.0], [-0.5 - 10 / 12, -0.5]])


def test_gigpo_exact_mean_std():
    # A^E = +-0.5/(sqrt(.5)+eps). g/A devs -1/6, 7/12, -5/12: ss = 4/144+49/144+25/144 = 78/144,
    # var = 39/144 = 13/48
    s = math.sqrt(13 / 48)
    ae = 0.5 / (S2 + EPS)
    want = [
        [ae + (-1 / 6) / (s + EPS), ae, ae + (7 / 12) / (s + EPS)],
        [0.0],
        [-ae + (-5 / 12) / (s + EPS), -ae],
    ]
    close(get_method("gigpo", gamma=0.5).advantages(gigpo_batch()), want)


def test_gigpo_default_gamma():
    # gamma 0.95: ep1 G = [0.9025, 0.95, 1]; one step group {A: 0.9025, 1, 0} with norm mean:
    # mean = 1.9025/3; unequal rewards elsewhere are singletons
    m = get_method("gigpo", norm="mean")
    mean = 1.9025 / 3
    want = [[0.5 + 0.9025 - mean, 0.5, 0.5 + 1 - mean], [0.0], [-0.5 - mean, -0.5]]
    close(m.advantages(gigpo_batch()), want)


X, Y, Z = "aaaaaaaaaa", "aaaaaaaabb", "aaaaaabbbb"


def test_similarity_premise():
    r = lambda a, b: difflib.SequenceMatcher(None, a, b).ratio()  # noqa: E731
    # longest common blocks: X/Y "aaaaaaaa" 8 -> 16/20; Y/Z "aaaaaabb" 8 -> 0.8; X/Z "aaaaaa" 6 -> 0.6
    assert (r(X, Y), r(Y, X), r(Y, Z), r(Z, Y), r(X, Z), r(Z, X)) == (0.8, 0.8, 0.8, 0.8, 0.6, 0.6)


def sim_batch(order):
    """Three one-step episodes of group s, gamma irrelevant (one step each).
    x: anchor X, reward 1; y: anchor Y, reward 0; z: anchor Z, reward 4.
    A^E (norm mean): R [1, 0, 4], mean 5/3 -> x -2/3, y -5/3, z 7/3.
    """
    eps = {"x": ep("s", [1], anchors=[X]), "y": ep("s", [0], anchors=[Y]), "z": ep("s", [4], anchors=[Z])}
    return [eps[k] for k in order]


@pytest.mark.parametrize(
    "order, want",
    [
        # x opens c0, y joins c0 (0.8), z vs first member x: 0.6 -> new c1 (although z~y).
        # c0 G [1, 0] mean .5 -> x +.5, y -.5; z singleton 0
        ("xyz", {"x": -2 / 3 + 0.5, "y": -5 / 3 - 0.5, "z": 7 / 3}),
        # y opens c0, x joins, z joins: G [0, 1, 4] mean 5/3 -> y -5/3, x -2/3, z 7/3
        ("yxz", {"x": -2 / 3 - 2 / 3, "y": -5 / 3 - 5 / 3, "z": 7 / 3 + 7 / 3}),
        # z opens c0, x: 0.6 -> c1, y matches both heads and joins the FIRST (c0):
        # c0 G [4, 0] mean 2 -> z +2, y -2; x singleton
        ("zxy", {"x": -2 / 3, "y": -5 / 3 - 2, "z": 7 / 3 + 2}),
    ],
)
def test_gigpo_similarity_order_matters(order, want):
    m = get_method("gigpo", anchor="similarity", similarity_threshold=0.8, norm="mean")
    close(m.advantages(sim_batch(order)), [[want[k]] for k in order])


def test_gigpo_similarity_threshold_and_groups():
    # threshold 0.81: nothing merges -> only A^E. Different groups never share clusters.
    m = get_method("gigpo", anchor="similarity", similarity_threshold=0.81, norm="mean")
    close(m.advantages(sim_batch("xyz")), [[-2 / 3], [-5 / 3], [7 / 3]])
    m = get_method("gigpo", anchor="similarity", similarity_threshold=0.8, norm="mean")
    batch = [ep("s", [1], anchors=[X]), ep("t", [0], anchors=[Y])]
    assert m.step_groups(batch) == [[0], [1]]
    close(m.advantages(batch), [[0.0], [0.0]])
    # similarity within one episode: X then Y in the same episode join one cluster
    assert m.step_groups([ep("s", [0, 0], anchors=[X, Y])]) == [[0, 0]]


def test_gigpo_exact_equals_grpo_without_shared_states():
    batch = [ep("a", [0, 1], anchors=["p", "q"]), ep("a", [0, 0, 0], anchors=["r", "s", "t"]), ep("a", [2])]
    close(get_method("gigpo").advantages(batch), get_method("grpo").advantages(batch))


# ---------------------------------------------------------------- spa


def spa_batch():
    """gamma 1, grounding 0.5. Group a:
    ep1: c [0.2, 0.3, 0.5], valid [T, F, T], rewards [0,0,1] R=1
         r^ = [0.7, 0.3, 1.0] -> G^ = [2.0, 1.3, 1.0]
    ep2: c [-0.1, 0.3], valid [T, F], rewards [0, 0] R=0
         r^ = [0.4, 0.3] -> G^ = [0.7, 0.3]
    Group b: one episode, one step c 0.4 valid, outcome 2 -> A^E 0, A^S 0 (one step).
    """
    p = lambda *cs: [{"progress": c} for c in cs]  # noqa: E731
    return [
        ep("a", [0, 0, 1], valid=[True, False, True], signals=p(0.2, 0.3, 0.5)),
        ep("b", [0], outcome=2.0, signals=p(0.4)),
        ep("a", [0, 0], valid=[True, False], signals=p(-0.1, 0.3)),
    ]


def test_spa_advantages():
    # all G^ of group a: [2.0, 1.3, 1.0, 0.7, 0.3], mean 5.3/5 = 1.06
    # devs .94 .24 -.06 -.36 -.76; ss = .8836+.0576+.0036+.1296+.5776 = 1.652; var = .413
    s = math.sqrt(1.652 / 4)
    ae = 0.5 / (S2 + EPS)
    want = [
        [ae + 0.94 / (s + EPS), ae + 0.24 / (s + EPS), ae - 0.06 / (s + EPS)],
        [0.0],
        [-ae - 0.36 / (s + EPS), -ae - 0.76 / (s + EPS)],
    ]
    close(get_method("spa").advantages(spa_batch()), want)


def test_spa_gamma_and_grounding_weight():
    # gamma 0.5, grounding 0: r^ = c. ep1 G^ = [0.2+.5*(0.3+.5*.5), 0.3+.25, .5] = [0.475, 0.55, 0.5]
    # ep2 G^ = [-0.1+.15, 0.3] = [0.05, 0.3]; omega 0 would remove them, omega 1 here:
    # mean = 1.875/5 = .375; devs .1 .175 .125 -.325 -.075; ss = .01+.030625+.015625+.105625+.005625
    #      = .1675; var = .041875
    s = math.sqrt(0.1675 / 4)
    ae = 0.5 / (S2 + EPS)
    want = [
        [ae + 0.1 / (s + EPS), ae + 0.175 / (s + EPS), ae + 0.125 / (s + EPS)],
        [0.0],
        [-ae - 0.325 / (s + EPS), -ae - 0.075 / (s + EPS)],
    ]
    close(get_method("spa", gamma=0.5, grounding_weight=0.0).advantages(spa_batch()), want)


def test_spa_estimator_loss():
    # ep1: sum c = 1.0, R 1 -> 0; ep b: 0.4 vs outcome 2 -> 2.56; ep2: 0.2 vs 0 -> 0.04
    assert get_method("spa").estimator_loss(spa_batch()) == pytest.approx((0 + 2.56 + 0.04) / 3)


def test_spa_missing_progress():
    with pytest.raises(ValueError, match="progress"):
        get_method("spa").advantages([ep("a", [0, 1], signals=[{"progress": 0.1}, {}])])


# ---------------------------------------------------------------- oprl


def oprl_batch():
    """beta 0.5. r = beta*logratio:
    group a: ep1 lr [2, -1] rewards [0, 1] R 1 -> r [1, -0.5];  ep2 lr [1] R 0 -> r [0.5]
    group b: ep3 lr [4, 0, -2] outcome 1 -> r [2, 0, -1]; ep4 lr [-4] R 0 -> r [-2];
             ep5 lr [2] outcome 0.5 -> r [1]
    group c: ep6 lr [1] R 1 (singleton) -> r [0.5]
    max |r| = 2 -> r~ = r / 2.000001
    """
    lr = lambda *xs: [{"logratio": x} for x in xs]  # noqa: E731
    return [
        ep("a", [0, 1], signals=lr(2, -1)),
        ep("b", [0, 0, 0], outcome=1.0, signals=lr(4, 0, -2)),
        ep("a", [0], signals=lr(1)),
        ep("b", [0], signals=lr(-4)),
        ep("c", [1], signals=lr(1)),
        ep("b", [0], outcome=0.5, signals=lr(2)),
    ]


def test_oprl_advantages():
    d = 2 + EPS
    # A^E rloo: a: R [1, 0] -> 1, -1; b: R [1, 0, .5] -> 1-.25 = .75, 0-.75 = -.75, .5-.5 = 0; c: 0
    # A^S a (n=2): r [1, -.5, .5] mean 1/3 -> 2*(r - 1/3)/d
    # A^S b (n=3): r [2, 0, -1, -2, 1] mean 0 -> 1.5*r/d;  c: n=1 -> 0
    want = [
        [1 + 2 * (1 - 1 / 3) / d, 1 + 2 * (-0.5 - 1 / 3) / d],
        [0.75 + 3 / d, 0.75, 0.75 - 1.5 / d],
        [-1 + 2 * (0.5 - 1 / 3) / d],
        [-0.75 - 3 / d],
        [0.0],
        [0.0 + 1.5 / d],
    ]
    close(get_method("oprl", beta=0.5).advantages(oprl_batch()), want)


def prm_expected():
    # Q = mean r: ep1 .25, ep2 .5, ep3 1/3, ep4 -2, ep5 1, ep6 .5
    # won (R>0): ep1, ep3, ep5, ep6; lost: ep2, ep4
    # pairs: a (ep1, ep2) d = -.25; b (ep3, ep4) d = 7/3, (ep5, ep4) d = 3; c none
    sp = lambda d: math.log(1 + math.exp(-d))  # -log sigmoid(d)  # noqa: E731
    return (sp(-0.25) + sp(7 / 3) + sp(3.0)) / 3


def test_oprl_prm_loss():
    assert get_method("oprl", beta=0.5).prm_loss(oprl_batch()) == pytest.approx(prm_expected(), rel=1e-12)
    # no (won, lost) pair -> 0
    assert get_method("oprl").prm_loss([ep("a", [1], signals=[{"logratio": 3.0}])] * 2) == 0.0


def test_oprl_missing_logratio():
    with pytest.raises(ValueError, match="logratio"):
        get_method("oprl").advantages([ep("a", [1])])


# ---------------------------------------------------------------- igpo


def igpo_batch():
    """group a: ep1 p [0.1, 0.2, 0.2], final 0.8, outcome 1; ep2 p [0.1], final 0.05, R 0
    group b: ep3 p [0.5, 0.5], final 0.5 (all IG 0), outcome 1; ep4 p [0.3], final 0.6, outcome 1
    """
    ap = lambda *ps: [{"answer_prob": p} for p in ps]  # noqa: E731
    return [
        ep("a", [0, 0, 0], outcome=1.0, signals=ap(0.1, 0.2, 0.2), esignals={"final_answer_prob": 0.8}),
        ep("b", [0, 0], outcome=1.0, signals=ap(0.5, 0.5), esignals={"final_answer_prob": 0.5}),
        ep("a", [0], signals=ap(0.1), esignals={"final_answer_prob": 0.05}),
        ep("b", [1], signals=ap(0.3), esignals={"final_answer_prob": 0.6}),
    ]


def test_igpo_log_prob_diff():
    l2 = math.log(2)
    # IG ep1: ln2, 0 (0.2 -> 0.2), ln4 = 2 ln2; ep2: ln(0.05/0.1) = -ln2
    # non-zero of a: ln2*[1, 2, -1], mean 2ln2/3, devs ln2*[1/3, 4/3, -5/3],
    # ss = ln2^2 * 42/9, var = ln2^2 * 21/9 -> std = ln2*sqrt(7/3)
    s = l2 * math.sqrt(7 / 3) + EPS
    i0, i2, j0 = (l2 / 3) / s, (4 * l2 / 3) / s, (-5 * l2 / 3) / s
    ae = 0.5 / (S2 + EPS)
    # group b: ep3 IG [0, 0]; ep4 IG ln2, the only non-zero value -> normalised 0.
    # A^E of b: R [1, 1] -> 0. So group b is all zero.
    want = [[ae + i0 + 0 + i2, ae + 0 + i2, ae + i2], [0.0, 0.0], [-ae + j0], [0.0]]
    close(get_method("igpo").advantages(igpo_batch()), want)


def test_igpo_prob_diff_gamma():
    # IG ep1: 0.1, 0, 0.6; ep2: -0.05. non-zero mean .65/3; devs: .1-.65/3 = -.35/3,
    # .6-.65/3 = 1.15/3, -.05-.65/3 = -.8/3; ss = (.1225+1.3225+.64)/9 = 2.085/9; var = 2.085/18
    s = math.sqrt(2.085 / 18) + EPS
    i0, i2, j0 = (-0.35 / 3) / s, (1.15 / 3) / s, (-0.8 / 3) / s
    ae = 0.5 / (S2 + EPS)
    # gamma .5, omega 2: A^S_0 = i0 + .25 i2, A^S_1 = .5 i2, A^S_2 = i2
    m = get_method("igpo", ig="prob_diff", gamma=0.5, omega=2.0)
    want = [[ae + 2 * (i0 + 0.25 * i2), ae + 2 * 0.5 * i2, ae + 2 * i2], [0.0, 0.0], [-ae + 2 * j0], [0.0]]
    close(m.advantages(igpo_batch()), want, tol=1e-8)


def test_igpo_zero_gain_and_missing_signals():
    # every IG is 0 -> advantages are A^E only: R [1, 0] -> +-0.5/(sqrt(.5)+eps)
    flat = [
        ep("a", [0, 0], outcome=1.0, signals=[{"answer_prob": 0.4}] * 2, esignals={"final_answer_prob": 0.4}),
        ep("a", [0], signals=[{"answer_prob": 0.4}], esignals={"final_answer_prob": 0.4}),
    ]
    ae = 0.5 / (S2 + EPS)
    close(get_method("igpo").advantages(flat), [[ae, ae], [-ae]])
    with pytest.raises(ValueError, match="final_answer_prob"):
        get_method("igpo").advantages([ep("a", [0], signals=[{"answer_prob": 0.4}])])
    with pytest.raises(ValueError, match="answer_prob"):
        get_method("igpo").advantages([ep("a", [0])])
    with pytest.raises(ValueError, match="> 0"):
        get_method("igpo").advantages(
            [ep("a", [0], signals=[{"answer_prob": 0.0}], esignals={"final_answer_prob": 0.5})]
        )


# ---------------------------------------------------------------- registry and parameters


def test_shapes_match_steps_for_every_method():
    sig = {"progress": 0.1, "logratio": 0.2, "answer_prob": 0.3}
    batch = [
        Episode("a", [Step(0.0, "x", True, dict(sig)) for _ in range(n)], signals={"final_answer_prob": 0.5})
        for n in (3, 0, 1, 5)
    ]
    for name in ["grpo", "rloo", "gigpo", "spa", "oprl", "igpo"]:
        got = get_method(name).advantages(batch)
        assert [len(x) for x in got] == [3, 0, 1, 5], name
        assert all(isinstance(v, float) for x in got for v in x)


def test_unknown_method_and_params():
    assert {"grpo", "rloo", "gigpo", "spa", "oprl", "igpo"} <= set(list_methods())
    with pytest.raises(ValueError, match="nope") as e:
        get_method("nope")
    assert "gigpo" in str(e.value) and isinstance(e.value, UserError)
    with pytest.raises(ValueError, match="gama") as e:
        get_method("gigpo", gama=0.9)
    assert "gamma" in str(e.value)  # the hint
    with pytest.raises(ValueError, match="norm"):
        get_method("grpo", norm="x")
    with pytest.raises(ValueError, match="anchor"):
        get_method("gigpo", anchor="fuzzy")
    with pytest.raises(ValueError, match="gamma"):
        get_method("spa", gamma=1.5)
    with pytest.raises(ValueError, match="ig"):
        get_method("igpo", ig="kl")
    with pytest.raises(CreditError, match="beta"):
        get_method("oprl", beta="lots")
    assert get_method("gigpo", gamma="0.9").gamma == 0.9  # YAML strings are accepted


THIRDPARTY = """
from dataclasses import dataclass

@dataclass(frozen=True)
class Const:
    name = "thirdparty"
    value: float = 1.0

    def advantages(self, episodes):
        return [[self.value] * len(e.steps) for e in episodes]
"""


def test_entry_point_method(tmp_path, monkeypatch):
    (tmp_path / "thirdparty_credit.py").write_text(THIRDPARTY)
    dist = tmp_path / "thirdparty_credit-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-credit\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[agentrl.credit]\nthirdparty = thirdparty_credit:Const\n")
    assert "thirdparty" not in list_methods()
    monkeypatch.syspath_prepend(str(tmp_path))  # also invalidates importlib caches
    assert "thirdparty" in list_methods()
    m = get_method("thirdparty", value=2.5)
    assert m.advantages([ep("a", [0, 0]), ep("a", [1])]) == [[2.5, 2.5], [2.5]]
    with pytest.raises(ValueError, match="valu"):
        get_method("thirdparty", valu=1)


def test_register_method_factory():
    registry.register_method("const_test", lambda k=0.0: type("M", (), {"advantages": lambda self, e: [[k]]})())
    try:
        assert get_method("const_test", k=3.0).advantages([]) == [[3.0]]
        with pytest.raises(ValueError, match="const_test"):
            get_method("const_test", j=1)
    finally:
        registry._REGISTERED.pop("const_test")


def test_gigpo_similarity_new_anchor_first():
    """difflib's ratio is asymmetric: the NEW anchor is the first argument, as in the
    authors' are_similar(obs, representative). ratio('a west east', 'west west') = 0.8
    (merged in the other order) but ratio in the reference order is below 0.8."""
    assert difflib.SequenceMatcher(None, "west west", "a west east").ratio() >= 0.8
    assert difflib.SequenceMatcher(None, "a west east", "west west").ratio() < 0.8
    m = get_method("gigpo", anchor="similarity", similarity_threshold=0.8)
    batch = [ep("g", [1], anchors=["west west"]), ep("g", [0], anchors=["a west east"])]
    assert m.step_groups(batch) == [[0], [1]]
    a = 0.5 / (2**-0.5 + 1e-6)  # R [1, 0]: mean .5, std .7071; singleton step groups add 0
    close(m.advantages(batch), [[a], [-a]])


def test_episode_stats_step_weights_episodes_by_length():
    """episode_stats=step: an episode counts once per step (verl-agent's default).
    R = [1, 0], lengths [3, 1]: rows [1, 1, 1, 0], mean .75, unbiased std .5."""
    batch = [ep("g", [0, 0, 1]), ep("g", [0])]
    close(
        get_method("grpo", episode_stats="step").advantages(batch), [[0.25 / (0.5 + 1e-6)] * 3, [-0.75 / (0.5 + 1e-6)]]
    )
    close(get_method("grpo", norm="mean", episode_stats="step").advantages(batch), [[0.25] * 3, [-0.75]])
    # rloo over rows: 1 - (3 - 1)/3 = 1/3 for the long episode; 0 - 3/3 = -1 for the short one
    close(get_method("rloo", episode_stats="step").advantages(batch), [[1 / 3] * 3, [-1.0]])
    # default: each episode once
    close(get_method("grpo", norm="mean").advantages(batch), [[0.5] * 3, [-0.5]])
