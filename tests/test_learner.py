"""The learner on a tiny random Llama built in-process (no downloads)."""

import copy
import random

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from agentrl.config import LearnerConfig
from agentrl.errors import UserError
from agentrl.learner import (
    POLICY,
    Learner,
    StepSample,
    add_adapter,
    add_lora,
    build_sequences,
    compute_logprobs,
    count_tokens,
    load_adapter_for_eval,
    load_checkpoint,
    make_micro_batches,
    sample_logprobs,
    save_checkpoint,
    use_adapter,
)
from agentrl.learner.lora import adapter_parameters, resolve_layers

V = 256


def tiny_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=V,
        max_position_embeddings=1024,
    )
    return LlamaForCausalLM(cfg).eval()


def lcfg(**kw) -> LearnerConfig:
    base = dict(lora_rank=4, lora_alpha=8, lr=1e-2, micro_batch_tokens=256, tokens_per_step=256)
    base.update(kw)
    return LearnerConfig(**base)


def perturb(model, adapter=POLICY, seed=1, scale=0.2):
    """LoRA B starts at zero (adapter = identity); give it weights so the adapter matters in tests."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter_parameters(model, adapter):
            p.add_(torch.randn(p.shape, generator=g) * scale)


def episodes(n_ep=3, turns=4, seed=0, allowed=False, rng_adv=True):
    """Prefix-consistent episodes: prompt[t+1] = prompt[t] + action[t] + observation[t]."""
    r = random.Random(seed)
    out = []
    for e in range(n_ep):
        prompt = [r.randrange(V) for _ in range(r.randint(12, 20))]
        for t in range(turns):
            action = [r.randrange(V) for _ in range(r.randint(2, 5))]
            al = None
            if allowed:
                al = [sorted({a, *(r.randrange(V) for _ in range(r.randint(0, 6)))}) for a in action]
            adv = r.uniform(-1, 1) if rng_adv else 1.0
            out.append(StepSample(e, t, list(prompt), action, [-1.0] * len(action), adv, al))
            prompt = prompt + action + [r.randrange(V) for _ in range(r.randint(3, 7))]
    return out


def full_forward_logprobs(model, samples, temperature=1.0):
    """Reference: full-logits forward of each step as its own sequence, log_softmax at the action positions."""
    out = []
    with torch.no_grad():
        for s in samples:
            ids = torch.tensor([s.prompt_ids + s.action_ids])
            logits = model(input_ids=ids).logits[0].float() / temperature
            pos = torch.arange(len(s.prompt_ids) - 1, len(s.prompt_ids) + len(s.action_ids) - 1)
            lg = logits[pos]
            if s.allowed is not None:
                keep = torch.zeros_like(lg, dtype=torch.bool)
                for j, a in enumerate(s.allowed):
                    keep[j, a] = True
                lg = lg.masked_fill(~keep, float("-inf"))
            out.append(torch.log_softmax(lg, -1).gather(1, torch.tensor(s.action_ids)[:, None])[:, 0].tolist())
    return out


def test_resolve_layers_and_layer_targeting():
    assert resolve_layers([-1, -2, 0], 30) == [0, 28, 29]
    assert resolve_layers(None, 30) is None
    with pytest.raises(UserError):
        resolve_layers([2], 2)
    model = add_lora(tiny_model(), lcfg(layers=[-1], target_modules=["q_proj", "v_proj"]))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(".layers.1." in n for n in names)
    assert all(("q_proj" in n) or ("v_proj" in n) for n in names)
    assert len(names) == 4  # (A, B) x (q, v) in layer 1 only


def test_logits_at_loss_positions_match_full_forward():
    model = add_lora(tiny_model(), lcfg())
    perturb(model)
    samples = episodes()
    batches = make_micro_batches(samples, "per_step", micro_batch_tokens=100)  # several, with padding
    assert len(batches) > 1 and any(not bool(b.attention_mask.all()) for b in batches)
    got = [[None] * len(s.action_ids) for s in samples]
    with torch.no_grad():
        for mb in batches:
            logp, ent = compute_logprobs(model, mb, temperature=0.7)
            for i, j, v in zip(mb.sample_index.tolist(), mb.token_index.tolist(), logp.tolist()):
                got[i][j] = v
    want = full_forward_logprobs(model, samples, temperature=0.7)
    for g, w in zip(got, want):
        assert g == pytest.approx(w, abs=1e-5)
    # the LoRA adapter really is inside the body: without it the log-probs differ
    with model.disable_adapter():
        base = full_forward_logprobs(model, samples[:1], temperature=0.7)[0]
    assert max(abs(a - b) for a, b in zip(base, want[0])) > 1e-3


def test_concat_equals_per_step_and_processes_fewer_tokens():
    model = add_lora(tiny_model(), lcfg())
    perturb(model)
    samples = episodes(n_ep=3, turns=4)
    random.Random(5).shuffle(samples)  # input order must not matter
    per = sample_logprobs(model, samples, layout="per_step", micro_batch_tokens=200)
    cat = sample_logprobs(model, samples, layout="concat", micro_batch_tokens=200)
    for a, b in zip(per, cat):
        assert a == pytest.approx(b, abs=1e-5)
    seqs = build_sequences(samples, "concat")
    assert len(seqs) == 3  # one sequence per episode
    # expected token counts, from the step lengths
    by_ep = {}
    for s in samples:
        by_ep.setdefault(s.episode, []).append(s)
    want_concat = sum(
        len(max(st, key=lambda s: s.t).prompt_ids) + len(max(st, key=lambda s: s.t).action_ids) for st in by_ep.values()
    )
    want_per = sum(len(s.prompt_ids) + len(s.action_ids) for s in samples)
    n_cat = count_tokens(make_micro_batches(samples, "concat", 200))
    n_per = count_tokens(make_micro_batches(samples, "per_step", 200))
    assert n_cat["tokens"] == want_concat and n_per["tokens"] == want_per
    assert n_cat["tokens"] < n_per["tokens"]
    assert n_cat["loss_tokens"] == n_per["loss_tokens"] == sum(len(s.action_ids) for s in samples)


def test_concat_starts_new_sequence_where_prefix_breaks():
    s = episodes(n_ep=1, turns=4, seed=3)
    # sliding window: step 2's prompt drops the first 5 tokens (turn history cut), steps 2-3 still chain
    cut = copy.deepcopy(s)
    for k in (2, 3):
        cut[k].prompt_ids = cut[k].prompt_ids[5:]
    seqs = build_sequences(cut, "concat")
    assert [sorted(set(q.sample_index)) for q in seqs] == [[0, 1], [2, 3]]
    assert len(seqs[1].input_ids) == len(cut[3].prompt_ids) + len(cut[3].action_ids)
    # same length, one history token rewritten (e.g. a re-rendered turn): also not a prefix
    for k in (2, 3):
        s[k].prompt_ids[1] = (s[k].prompt_ids[1] + 1) % V
    seqs = build_sequences(s, "concat")
    assert [sorted(set(q.sample_index)) for q in seqs] == [[0, 1], [2, 3]]
    model = add_lora(tiny_model(), lcfg())
    perturb(model)
    got = sample_logprobs(model, s, layout="concat")
    want = full_forward_logprobs(model, s)
    for g, w in zip(got, want):
        assert g == pytest.approx(w, abs=1e-5)


def test_admissible_renormalisation():
    model = add_lora(tiny_model(), lcfg())
    perturb(model)
    samples = episodes(n_ep=2, turns=3, allowed=True)
    samples[1].allowed = None  # mixed: one unconstrained step
    samples[2].allowed = [[a] for a in samples[2].action_ids]  # forced tokens: log-prob exactly 0
    got = sample_logprobs(model, samples, layout="concat")
    want = full_forward_logprobs(model, samples)
    for g, w in zip(got, want):
        assert g == pytest.approx(w, abs=1e-5)
    assert got[2] == [0.0] * len(samples[2].action_ids)
    unconstrained = full_forward_logprobs(model, [StepSample(**{**vars(samples[0]), "allowed": None})])[0]
    assert all(c > u for c, u in zip(got[0], unconstrained))  # renormalising over fewer ids raises each log-prob
    mb = make_micro_batches(samples[2:3], "per_step", 256)[0]
    with torch.no_grad():
        _, ent = compute_logprobs(model, mb)
    assert ent.tolist() == pytest.approx([0.0] * len(samples[2].action_ids), abs=1e-6)
    with pytest.raises(ValueError):
        bad = StepSample(0, 0, [1, 2], [3], [-1.0], 1.0, allowed=[[4, 5]])
        build_sequences([bad], "per_step")


def test_update_moves_logprobs_with_advantage_sign():
    torch.manual_seed(0)
    model = tiny_model()
    samples = episodes(n_ep=2, turns=3, seed=1)
    for i, s in enumerate(samples):
        s.advantage = 1.0 if i % 2 == 0 else -1.0
    learner = Learner(model, lcfg(kl_coef=0.1, lr=5e-3), temperature=1.0)
    start = sample_logprobs(learner.model, samples)
    for s, lp in zip(samples, start):
        s.old_logprobs = lp  # on-policy: the rollout's own log-probs
    first = learner.update(samples)
    assert first["ratio_mean"] == pytest.approx(1.0, abs=1e-5)  # first micro-batch pass is on-policy
    assert first["kl"] == pytest.approx(0.0, abs=1e-4)
    assert first["steps"] >= 1 and first["tokens"] == count_tokens(make_micro_batches(samples, "concat", 256))["tokens"]
    losses = [first["loss"]]
    for _ in range(4):
        losses.append(learner.update(samples)["loss"])
    end = sample_logprobs(learner.model, samples)
    for s, a, b in zip(samples, start, end):
        delta = sum(b) - sum(a)
        assert delta > 0 if s.advantage > 0 else delta < 0
    assert losses[-1] < losses[0]


def test_reference_is_the_base_model():
    base_copy = tiny_model()
    model = tiny_model()
    learner = Learner(model, lcfg())
    perturb(learner.model)
    samples = episodes(n_ep=1, turns=2)
    mb = make_micro_batches(samples, "concat", 256)[0]
    ref = learner._reference(mb)
    want = full_forward_logprobs(base_copy, samples)
    assert ref.tolist() == pytest.approx([x for w in want for x in w], abs=1e-5)


def test_multi_adapter_switching():
    model = add_lora(tiny_model(), lcfg())
    add_adapter(model, "prm", lcfg(lora_rank=2))
    perturb(model, "prm", seed=7)
    grads_before = {n: p.requires_grad for n, p in model.named_parameters()}
    samples = episodes(n_ep=1, turns=2)
    pol = sample_logprobs(model, samples)
    with use_adapter(model, "prm"):
        prm = sample_logprobs(model, samples)
    assert model.active_adapter == POLICY
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads_before
    assert not any(p.requires_grad for p in adapter_parameters(model, "prm"))
    with model.disable_adapter():
        ref = sample_logprobs(model, samples)
    assert pol[0] == pytest.approx(ref[0], abs=1e-6)  # policy adapter still zero-initialised (B = 0)
    assert max(abs(a - b) for a, b in zip(prm[0], ref[0])) > 1e-3


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_checkpoint_resume_is_exact(tmp_path):
    cfg = lcfg(lora_dropout=0.1, epochs=2, micro_batch_tokens=80, tokens_per_step=100, warmup_steps=3)
    b1, b2 = episodes(seed=1), episodes(seed=2)

    # uninterrupted run
    torch.manual_seed(0)
    a = Learner(tiny_model(), cfg)
    a.update(b1)
    ck = save_checkpoint(
        tmp_path / "ck",
        a.model,
        a.optimizer,
        a.scheduler,
        iteration=1,
        extra={"note": "x"},
        extra_state_dicts={"spa": {"w": torch.arange(3.0)}},
    )
    draws = (random.random(), float(np.random.rand()))
    torch.manual_seed(99)  # anything done between save and the next update is undone by load's RNG restore
    random.seed(99)
    np.random.seed(99)
    reload_a = load_checkpoint(ck, a.model, a.optimizer, a.scheduler)  # exercise restore on the same objects too
    assert (random.random(), float(np.random.rand())) == draws
    load_checkpoint(ck, a.model, a.optimizer, a.scheduler)
    ma = a.update(b2)
    wa = _weights(a.model)
    assert reload_a.iteration == 1

    # a fresh process: same base weights, different LoRA init and RNG, then resume
    torch.manual_seed(1234)
    b = Learner(tiny_model(), cfg)
    assert any(not torch.equal(wa[k], v) for k, v in _weights(b.model).items())
    got = load_checkpoint(ck, b.model, b.optimizer, b.scheduler)
    assert got.iteration == 1 and got.extra == {"note": "x"}
    assert torch.equal(got.extra_state_dicts["spa"]["w"], torch.arange(3.0))
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert b.scheduler.state_dict()["last_epoch"] == a.scheduler.state_dict()["last_epoch"] - ma["steps"]
    assert len(sb["state"]) == len(sa["state"]) > 0
    mb = b.update(b2)
    wb = _weights(b.model)
    assert mb["loss"] == ma["loss"] and mb["grad_norm"] == ma["grad_norm"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    for k in sa["state"]:
        assert torch.equal(sa["state"][k]["exp_avg"], b.optimizer.state_dict()["state"][k]["exp_avg"])


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    learner = Learner(tiny_model(), lcfg())
    perturb(learner.model)
    ck = save_checkpoint(tmp_path / "ck", learner.model, learner.optimizer, learner.scheduler, iteration=3)
    before = _weights(learner.model)
    perturb(learner.model, seed=5)

    def boom(*a, **k):
        raise RuntimeError("killed")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError):
        save_checkpoint(ck, learner.model, learner.optimizer, learner.scheduler, iteration=4)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temp dir left
    assert load_checkpoint(ck, learner.model).iteration == 3
    assert all(torch.equal(before[k], v) for k, v in _weights(learner.model).items())

    # a SIGKILL between the two renames of a replacing save leaves only `.ck.old`
    ck.rename(tmp_path / ".ck.old")
    assert load_checkpoint(ck, learner.model).iteration == 3
    (tmp_path / ".ck.tmp-1-dead").mkdir()  # a killed save's leftovers are cleaned by the next save
    save_checkpoint(ck, learner.model, learner.optimizer, learner.scheduler, iteration=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert load_checkpoint(ck, learner.model).iteration == 5
    with pytest.raises(UserError):
        load_checkpoint(tmp_path / "missing", learner.model)


def test_load_adapter_for_eval(tmp_path):
    learner = Learner(tiny_model(), lcfg())
    perturb(learner.model)
    samples = episodes(n_ep=1, turns=2)
    want = sample_logprobs(learner.model, samples)
    ck = save_checkpoint(tmp_path / "ck", learner.model, learner.optimizer, learner.scheduler, iteration=0)
    ev = load_adapter_for_eval(tiny_model(), ck)
    assert not ev.training
    got = sample_logprobs(ev, samples)
    assert got[0] == pytest.approx(want[0], abs=1e-6)
    assert got[1] == pytest.approx(want[1], abs=1e-6)


@pytest.mark.slow
def test_default_model_logprobs_and_checkpoint(tmp_path):
    """The real default model: loss-position log-probs match a full forward; a checkpoint round-trips."""
    from agentrl.config import ModelConfig
    from agentrl.policy.model import load_model

    model, tok = load_model(ModelConfig(device="cpu"))
    learner = Learner(model, LearnerConfig(layers=[-2, -1]))
    perturb(learner.model, scale=0.02)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "You are in a kitchen. Go north?"}], add_generation_prompt=True, tokenize=False
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    action = tok("go north", add_special_tokens=False)["input_ids"]
    s = [StepSample(0, 0, ids, action, [0.0] * len(action), 1.0, allowed=None)]
    got = sample_logprobs(learner.model, s, temperature=0.8)[0]
    assert got == pytest.approx(full_forward_logprobs(learner.model, s, temperature=0.8)[0], abs=1e-4)
    ck = save_checkpoint(tmp_path / "ck", learner.model, learner.optimizer, learner.scheduler, iteration=2)
    fresh, _ = load_model(ModelConfig(device="cpu"))
    ev = load_adapter_for_eval(fresh, ck)
    assert sample_logprobs(ev, s, temperature=0.8)[0] == pytest.approx(got, abs=1e-6)
