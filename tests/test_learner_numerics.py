"""Learner numerics: the compute dtype (bf16 autocast, CPU too) and the engine-learner mismatch
(recomputed old log-probs, TIS weights, mismatch metrics), on tiny random Llamas built in-process."""

from __future__ import annotations

import copy
import inspect
import math
import random

import pytest
import torch
from pydantic import ValidationError
from test_learner import V  # noqa: E402  (the same tiny Llama as the learner tests)
from test_learner import tiny_model as small_model  # noqa: E402

import agentrl.learner.update as update_mod
import agentrl.policy.model as model_mod
from agentrl.config import LearnerConfig, ModelConfig, RolloutConfig, recipe_from_dict
from agentrl.envs.base import Observation
from agentrl.errors import UserError
from agentrl.learner import POLICY, Learner, StepSample, add_lora, make_micro_batches, ppo_loss, sample_logprobs
from agentrl.learner.lora import adapter_parameters
from agentrl.learner.update import resolve_old_logprobs
from agentrl.policy.base import TurnContext
from agentrl.policy.constrained import allowed_token_ids
from agentrl.policy.hf import HFPolicy
from agentrl.policy.logprobs import autocast_for, eval_mode
from agentrl.policy.model import builtin_tokenizer, cpu_supports_bf16, resolve_compute_dtype, tiny_model


def lcfg(**kw) -> LearnerConfig:
    base = dict(lora_rank=4, lora_alpha=8, lr=1e-2, micro_batch_tokens=128, tokens_per_step=128)
    base.update(kw)
    return LearnerConfig(**base)


def lora_model(cfg: LearnerConfig, seed: int = 0):
    """A tiny model with a LoRA adapter whose B is non-zero (so the adapter matters)."""
    model = add_lora(small_model(seed), cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in adapter_parameters(model, POLICY):
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def episodes(n_ep=3, turns=3, seed=0):
    """Prefix-consistent episodes with random advantages (old log-probs filled in by `on_policy`)."""
    r = random.Random(seed)
    out = []
    for e in range(n_ep):
        prompt = [r.randrange(V) for _ in range(r.randint(10, 16))]
        for t in range(turns):
            action = [r.randrange(V) for _ in range(r.randint(2, 5))]
            out.append(StepSample(e, t, list(prompt), action, [0.0] * len(action), r.uniform(-1, 1)))
            prompt = prompt + action + [r.randrange(V) for _ in range(r.randint(3, 6))]
    return out


def on_policy(model, samples, cfg: LearnerConfig, compute_dtype=None):
    """Store the learner-numerics log-probs as the engine's (eval mode, the learner's micro-batches)."""
    with eval_mode(model):
        lps = sample_logprobs(model, samples, 1.0, cfg.layout, cfg.micro_batch_tokens, compute_dtype=compute_dtype)
    for s, lp in zip(samples, lps):
        s.old_logprobs = lp
    return samples


def adapter_state(model):
    return [p.detach().clone() for p in adapter_parameters(model, POLICY)]


# ----------------------------------------------------------------------------- config


def test_config_fields_and_validation():
    assert ModelConfig().compute_dtype == "auto"
    assert LearnerConfig().old_logprobs == "auto" and LearnerConfig().tis_cap == 2.0
    assert LearnerConfig(tis_cap=1.0).tis_cap == 1.0
    with pytest.raises(ValidationError):
        LearnerConfig(tis_cap=0.99)
    with pytest.raises(ValidationError):
        LearnerConfig(old_logprobs="rollout")
    with pytest.raises(ValidationError):
        ModelConfig(compute_dtype="float16")
    base = {"env": {"suite": "x"}}
    r = recipe_from_dict(base, ["learner.old_logprobs=recompute", "learner.tis_cap=3", "model.compute_dtype=bfloat16"])
    assert (r.learner.old_logprobs, r.learner.tis_cap, r.model.compute_dtype) == ("recompute", 3.0, "bfloat16")
    with pytest.raises(UserError, match=r"learner\.tis_cap"):
        recipe_from_dict(base, ["learner.tis_cap=0.5"])
    with pytest.raises(UserError, match=r"learner\.old_logprobs"):
        recipe_from_dict(base, ["learner.old_logprobs=vllm"])


def test_resolve_old_logprobs():
    eng, rec, auto = (LearnerConfig(old_logprobs=v) for v in ("engine", "recompute", "auto"))
    for engine in ("hf", "vllm"):
        for same in (True, False):
            assert resolve_old_logprobs(eng, engine, same) is False
            assert resolve_old_logprobs(rec, engine, same) is True
    assert resolve_old_logprobs(auto, "hf", True) is False  # the HF engine at the learner's own dtype
    assert resolve_old_logprobs(auto, "hf", False) is True  # e.g. HF sampling in bf16, learner in fp32
    assert resolve_old_logprobs(auto, "vllm", True) is True  # another engine: other kernels, always recompute


# ----------------------------------------------------------------------------- compute dtype


def test_autocast_for(monkeypatch):
    cpu = torch.device("cpu")
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    for ctx in (autocast_for(cpu), autocast_for(cpu, None), autocast_for(cpu, torch.float32)):
        with ctx:
            assert not torch.is_autocast_enabled("cpu")
            assert (a @ b).dtype == torch.float32
    with autocast_for(cpu, torch.bfloat16):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (a @ b).dtype == torch.bfloat16
    # CUDA: bf16 by default (as before), none for float32; recorded, not entered (no GPU needed)
    seen = []
    monkeypatch.setattr(torch, "autocast", lambda device_type, dtype: seen.append((device_type, dtype)) or "ctx")
    cuda = torch.device("cuda")
    assert autocast_for(cuda) == "ctx" and autocast_for(cuda, torch.bfloat16) == "ctx"
    assert seen == [("cuda", torch.bfloat16)] * 2
    assert autocast_for(cuda, torch.float32) != "ctx"
    assert len(seen) == 2


def test_resolve_compute_dtype(monkeypatch):
    cfg = ModelConfig
    assert resolve_compute_dtype(cfg(), "cpu") == torch.float32
    assert resolve_compute_dtype(cfg(), torch.device("cuda")) == torch.bfloat16
    assert resolve_compute_dtype(cfg(compute_dtype="float32"), "cuda") == torch.float32
    assert resolve_compute_dtype(cfg(compute_dtype="bfloat16"), "cuda:0") == torch.bfloat16
    monkeypatch.setattr(model_mod, "cpu_supports_bf16", lambda: True)
    assert resolve_compute_dtype(cfg(compute_dtype="bfloat16"), "cpu") == torch.bfloat16
    monkeypatch.setattr(model_mod, "cpu_supports_bf16", lambda: False)
    assert resolve_compute_dtype(cfg(compute_dtype="float32"), "cpu") == torch.float32
    with pytest.raises(UserError) as e:
        resolve_compute_dtype(cfg(compute_dtype="bfloat16"), "cpu")
    msg = str(e.value)
    assert "\n" not in msg and "model.compute_dtype=bfloat16" in msg and "float32" in msg


def test_bfloat16_if_native_falls_back_to_float32_once(monkeypatch, capsys):
    """The packaged bf16 recipes' setting: bf16 where native, float32 with one line elsewhere."""
    from agentrl import errors

    cfg = ModelConfig(compute_dtype="bfloat16_if_native")
    assert resolve_compute_dtype(cfg, "cuda") == torch.bfloat16
    monkeypatch.setattr(model_mod, "cpu_supports_bf16", lambda: True)
    assert resolve_compute_dtype(cfg, "cpu") == torch.bfloat16
    monkeypatch.setattr(model_mod, "cpu_supports_bf16", lambda: False)
    monkeypatch.setattr(model_mod, "cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(errors, "_warned", set(), raising=False)
    assert resolve_compute_dtype(cfg, "cpu") == torch.float32
    assert resolve_compute_dtype(cfg, "cpu") == torch.float32
    err = capsys.readouterr().err
    assert err.count("bfloat16_if_native") == 1 and "AVX2" in err and "float32" in err


def test_vllm_auto_dtype_follows_native_bf16(monkeypatch):
    from agentrl.engines.vllm import auto_dtype

    monkeypatch.setattr(model_mod, "cpu_supports_bf16", lambda: False)
    assert (auto_dtype(cpu=True), auto_dtype(cpu=False)) == ("float32", "bfloat16")
    monkeypatch.setattr(model_mod, "cpu_supports_bf16", lambda: True)
    assert auto_dtype(cpu=True) == "bfloat16"


def test_cpu_supports_bf16_uses_torch_checks_and_survives_missing_ones(monkeypatch):
    def boom():
        raise RuntimeError("no cpuinfo")

    monkeypatch.setattr(model_mod.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert cpu_supports_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert cpu_supports_bf16() is True
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")  # an older / newer torch without it
    assert cpu_supports_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", boom)
    assert cpu_supports_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert cpu_supports_bf16() is True
    # elsewhere (Arm): oneDNN's bf16 check decides, not the x86 ones
    monkeypatch.setattr(model_mod.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert cpu_supports_bf16() is False
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert cpu_supports_bf16() is True


def test_learner_runs_every_forward_at_its_compute_dtype(monkeypatch):
    cfg = lcfg(kl_coef=0.1, epochs=1)
    model = lora_model(cfg)
    samples = on_policy(model, episodes(), cfg)
    seen = []
    real = update_mod.autocast_for

    def spy(device, compute_dtype=None):
        seen.append(compute_dtype)
        return real(device, compute_dtype)

    monkeypatch.setattr(update_mod, "autocast_for", spy)
    n_mb = len(make_micro_batches(samples, cfg.layout, cfg.micro_batch_tokens))
    Learner(model, cfg, compute_dtype=torch.bfloat16, recompute_old=True).update(samples)
    # reference pass (one per micro-batch), recompute pass (one), PPO pass (one per micro-batch)
    assert len(seen) == 2 * n_mb + 1 and set(seen) == {torch.bfloat16}


def test_bf16_learner_reproduces_bf16_logprobs_not_fp32_ones():
    """Engine mode: stored = the learner's bf16 numbers -> ratio 1 under a bf16 learner, not under fp32."""
    cfg = lcfg(epochs=1, tokens_per_step=10**6)  # one optimiser step: every ratio is taken before it
    model = lora_model(cfg)
    samples = on_policy(model, episodes(), cfg, compute_dtype=torch.bfloat16)
    fp32 = sample_logprobs(model, samples, 1.0, cfg.layout, cfg.micro_batch_tokens)
    gap = max(abs(a - b) for s, x in zip(samples, fp32) for a, b in zip(s.old_logprobs, x))
    assert gap > 1e-4  # bf16 autocast really changes the numbers on CPU
    m16 = Learner(copy.deepcopy(model), cfg, compute_dtype=torch.bfloat16).update(samples)
    assert m16["ratio_min"] == pytest.approx(1.0, abs=1e-6) and m16["ratio_max"] == pytest.approx(1.0, abs=1e-6)
    m32 = Learner(copy.deepcopy(model), cfg).update(samples)
    assert max(abs(m32["ratio_min"] - 1), abs(m32["ratio_max"] - 1)) > 1e-4


# ----------------------------------------------------------------------------- old log-probs and TIS


def test_ppo_loss_weight_scales_the_pg_term_only():
    # r = 1.5, 0.5, 1.0 ; A = +1, +1, -2 ; eps 0.2, no dual clip; weights w = 2, 0.5, 1.5
    # pg = max(-rA, -clip(r)A): -1.2 (clipped), -0.5, +2.0 ; weighted: -2.4, -0.25, +3.0
    # kl_i = exp(ref - logp) - (ref - logp) - 1 with ref = logp + 0.1: e^0.1 - 1.1 each (unweighted)
    logp = torch.log(torch.tensor([1.5, 0.5, 1.0])).requires_grad_()
    old, adv, w = torch.zeros(3), torch.tensor([1.0, 1.0, -2.0]), torch.tensor([2.0, 0.5, 1.5])
    ref = logp.detach() + 0.1
    kl = math.exp(0.1) - 1.1
    loss, m = ppo_loss(logp, old, adv, torch.ones(3), dual_clip=None, ref_logp=ref, kl_coef=0.5, weight=w)
    assert loss.item() == pytest.approx((-2.4 - 0.25 + 3.0) / 3 + 0.5 * kl, abs=1e-6)
    assert m["pg_loss"] == pytest.approx((-2.4 - 0.25 + 3.0) / 3, abs=1e-6)
    assert m["kl"] == pytest.approx(kl, abs=1e-6) and m["ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    loss.backward()
    # d/dlogp: token 1 clipped -> 0 ; token 2: -w r A / 3 = -0.25/3 ; token 3: -w r A / 3 = 3/3 ; kl term:
    # d kl_i / d logp = -(exp(0.1) - 1), times kl_coef / 3 on every token
    dkl = -(math.exp(0.1) - 1) * 0.5 / 3
    assert logp.grad.tolist() == pytest.approx([dkl, -0.25 / 3 + dkl, 1.0 + dkl], abs=1e-6)
    # weight None is exactly the unweighted loss
    a = ppo_loss(logp.detach(), old, adv, torch.ones(3))[0]
    b = ppo_loss(logp.detach(), old, adv, torch.ones(3), weight=None)[0]
    assert torch.equal(a, b)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_recompute_with_identical_numerics_is_engine_mode(dropout):
    """Stored = the learner's own numbers: mismatch 0, no TIS clip, and the same update as engine mode.

    epochs 2 over several optimiser steps: the old log-probs must be those from before the update
    (recomputed once), and the recompute pass must run in eval mode (LoRA dropout 0.3 would change them).
    """
    cfg = lcfg(epochs=2, lora_dropout=dropout, micro_batch_tokens=64, tokens_per_step=40)
    model = lora_model(cfg)
    samples = on_policy(model, episodes(), cfg)
    results = {}
    for recompute in (False, True):
        m = copy.deepcopy(model)
        torch.manual_seed(7)  # micro-batch order and dropout masks
        metrics = Learner(m, cfg, recompute_old=recompute).update(samples)
        results[recompute] = metrics, adapter_state(m)
    (m_eng, p_eng), (m_rec, p_rec) = results[False], results[True]
    assert m_eng["steps"] > 2
    assert not {"mismatch_abs", "mismatch_kl", "tis_clip_frac", "old_logprobs_s"} & set(m_eng)
    assert m_rec["mismatch_abs"] < 1e-6 and abs(m_rec["mismatch_kl"]) < 1e-10
    assert m_rec["tis_clip_frac"] == 0.0 and m_rec["old_logprobs_s"] > 0
    for k in ("loss", "pg_loss", "ratio_mean", "ratio_min", "ratio_max", "clip_frac", "grad_norm"):
        assert m_rec[k] == pytest.approx(m_eng[k], rel=1e-5, abs=1e-6), k
    for a, b in zip(p_eng, p_rec):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(p_eng, adapter_state(model)))  # the update did move


def test_perturbed_engine_logprobs_hand_computed():
    """Stored = learner's + delta on a tiny case: the metrics, capped TIS weights and the loss by hand.

    Two one-step episodes (A = +1 and -0.5), epochs 1, one optimiser step, no dropout: the PPO forward
    equals the recompute, so r = 1 and pg_i = -A_i * w_i with w_i = min(exp(-delta_i), C), C = 2.
    """
    cap = 2.0
    cfg = lcfg(epochs=1, layout="per_step", tis_cap=cap, dual_clip=3.0, tokens_per_step=10**6)
    model = lora_model(cfg)
    r = random.Random(3)
    samples = [
        StepSample(0, 0, [r.randrange(V) for _ in range(9)], [5, 17, 40], [0.0] * 3, 1.0),
        StepSample(1, 0, [r.randrange(V) for _ in range(7)], [3, 99, 7], [0.0] * 3, -0.5),
    ]
    on_policy(model, samples, cfg)
    true = [list(s.old_logprobs) for s in samples]
    deltas = [[0.5, -0.3, -1.0], [0.0, -2.0, 0.2]]  # engine - learner
    for s, t, d in zip(samples, true, deltas):
        s.old_logprobs = [a + b for a, b in zip(t, d)]
    flat_d = [-x for d in deltas for x in d]  # learner_old - engine
    ratios = [math.exp(x) for x in flat_d]  # 0.61, 1.35, 2.72, 1, 7.39, 0.82
    w = [min(x, cap) for x in ratios]
    adv = [1.0] * 3 + [-0.5] * 3
    want_abs = sum(abs(x) for x in flat_d) / 6
    want_kl = sum(q - 1 - x for q, x in zip(ratios, flat_d)) / 6
    want_loss = sum(-a * wi for a, wi in zip(adv, w)) / 6

    learner = Learner(copy.deepcopy(model), cfg, recompute_old=True)
    batches = make_micro_batches(samples, cfg.layout, cfg.micro_batch_tokens)
    _, weights, _ = learner._old_logprobs(batches)
    got_w = {}
    for mb, wt in zip(batches, weights):
        for i, j, v in zip(mb.sample_index.tolist(), mb.token_index.tolist(), wt.tolist()):
            got_w[i, j] = v
    assert [got_w[i, j] for i in range(2) for j in range(3)] == pytest.approx(w, abs=1e-5)
    assert max(got_w.values()) == pytest.approx(cap)  # 2.72 and 7.39 capped at C

    m = learner.update(samples)
    assert m["mismatch_abs"] == pytest.approx(want_abs, abs=1e-5)
    assert m["mismatch_kl"] == pytest.approx(want_kl, abs=1e-5)
    assert m["tis_clip_frac"] == pytest.approx(2 / 6)
    assert m["ratio_min"] == pytest.approx(1.0, abs=1e-5) and m["ratio_max"] == pytest.approx(1.0, abs=1e-5)
    assert m["loss"] == pytest.approx(want_loss, abs=1e-5) and m["pg_loss"] == pytest.approx(want_loss, abs=1e-5)
    # engine mode on the same data: the ratio is exp(learner - engine), and no weights
    m_eng = Learner(copy.deepcopy(model), cfg).update(samples)
    assert m_eng["ratio_max"] == pytest.approx(max(ratios), rel=1e-4)
    assert abs(m_eng["loss"] - want_loss) > 1e-2


def test_tis_cap_one_and_a_larger_cap_change_only_capped_tokens():
    """With C = 1 every over-weighted token is cut to 1; a huge C leaves the raw ratios (hand-checked loss)."""
    deltas = [-0.4, 0.3, -0.1, 0.2]  # engine - learner
    r = random.Random(5)
    base = StepSample(0, 0, [r.randrange(V) for _ in range(8)], [11, 12, 13, 14], [0.0] * 4, 1.0)
    for cap in (1.0, 100.0):
        cfg = lcfg(epochs=1, layout="per_step", tis_cap=cap)
        model = lora_model(cfg, seed=2)
        s = on_policy(model, [copy.deepcopy(base)], cfg)[0]
        s.old_logprobs = [a + d for a, d in zip(s.old_logprobs, deltas)]
        m = Learner(model, cfg, recompute_old=True).update([s])
        want = -sum(min(math.exp(-d), cap) for d in deltas) / 4
        assert m["loss"] == pytest.approx(want, abs=1e-5)
        assert m["tis_clip_frac"] == pytest.approx(0.5 if cap == 1.0 else 0.0)


# ----------------------------------------------------------------------------- bf16 sampler vs learner

CMDS = ["go north", "go north east", "go south", "take key", "take key from table", "open door", "look"]


def _obs(k: int, t: int, admissible: bool) -> Observation:
    text = f"You are in room {t}. " + "It is dark here. " * (k % 3 + 1) + ("A door creaks." if t % 2 else "")
    adm = CMDS[: 2 + (k + t) % (len(CMDS) - 1)] if admissible else None
    return Observation(text=text, admissible=adm, goal="find the key")


def play(policy, lengths: list[int], admissible: bool) -> list[tuple[TurnContext, object]]:
    """Toy episodes of the given lengths, all live ones batched per turn: [(context, action)]."""
    live = {k: [] for k in range(len(lengths))}
    steps = []
    while live:
        ctxs = [
            TurnContext(key=k, task_id=f"toy/{k}", t=len(h), observation=_obs(k, len(h), admissible), history=list(h))
            for k, h in live.items()
        ]
        for c, a in zip(ctxs, policy.act(ctxs)):
            steps.append((c, a))
            live[c.key].append((c.observation.text, a.text))
            if len(live[c.key]) >= lengths[c.key]:
                policy.end_episode(c.key)
                del live[c.key]
    return steps


_HF_BF16 = "compute_dtype" in inspect.signature(HFPolicy).parameters


@pytest.mark.skipif(not _HF_BF16, reason="HFPolicy has no compute_dtype argument yet (issue 12, HF engine side)")
@pytest.mark.parametrize("mode", ["admissible", "free"])
def test_bf16_sampler_and_learner_agree(mode):
    """Sampler (KV-cached decoding) and learner (teacher-forced micro-batches) both under bf16 autocast.

    The fp32 bound (1e-4, tests/test_policy.py) does not hold: bf16 rounds differently for different
    matmul shapes. Measured on this CPU (AVX512-BF16/AMX, torch 2.13), |stored - learner| log-prob:
    tiny random model (this test; builtin and default tokenizers, both layouts):
      admissible max 1.1e-3, mean 3.8e-5; free max 4.9e-3, mean 2.2e-4
    random model of the default model's shape (30 layers, hidden 576, vocab 49152), once, outside:
      admissible max 4.3e-3, mean 9.4e-4; free max 9.9e-3, mean 2.6e-3
    (for scale: the bf16 sampler vs an fp32 learner there: max 1.6e-2, mean 5.0e-3).
    Bound: max 0.02, mean 1e-3 (2-4x the measured); and the stored numbers must be bf16 ones (they
    differ from the fp32 recomputation by more than 1e-4), else this test would not test bf16.
    """
    model, tok = tiny_model(builtin_tokenizer(), seed=0)
    cfg = RolloutConfig(action_mode=mode, history=-1, batch_size=4, max_new_tokens=10, temperature=0.8)
    pol = HFPolicy(model, tok, cfg, seed=3, kv_reuse=True, compute_dtype=torch.bfloat16)
    steps = play(pol, [2, 5, 1, 4, 3, 5], mode == "admissible")
    samples = [
        StepSample(
            c.key,
            c.t,
            a.prompt_ids,
            a.action_ids,
            a.logprobs,
            0.0,
            allowed_token_ids(tok, c.observation.admissible, a.action_ids)
            if mode == "admissible" and c.observation.admissible
            else None,
        )
        for c, a in steps
    ]

    def gaps(compute_dtype, layout):
        lp = sample_logprobs(model, samples, 0.8, layout, 512, compute_dtype=compute_dtype)
        return [abs(a - b) for s, x in zip(samples, lp) for a, b in zip(s.old_logprobs, x)]

    for layout in ("per_step", "concat"):
        d = gaps(torch.bfloat16, layout)
        assert max(d) <= 0.02 and sum(d) / len(d) <= 1e-3, (layout, max(d), sum(d) / len(d))
    assert max(gaps(torch.float32, "concat")) > 1e-4


def test_vllm_kv_cache_auto_fits_the_batch():
    from types import SimpleNamespace

    from agentrl.config import VLLMConfig
    from agentrl.engines.factory import kv_values_per_token
    from agentrl.engines.vllm import kv_cache_gib

    # the default model's shape: 30 layers, 3 KV heads of 64 -> 11,520 values, 46,080 bytes per token in float32
    shape = SimpleNamespace(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576)
    values = kv_values_per_token(shape)
    assert values == 2 * 30 * 3 * 64
    assert kv_values_per_token(SimpleNamespace(num_hidden_layers=30, num_attention_heads=9, hidden_size=576)) == (
        2 * 30 * 9 * 64  # no num_key_value_heads: multi-head attention
    )
    assert kv_values_per_token(SimpleNamespace(num_attention_heads=9)) is None
    auto = VLLMConfig()
    want = 1.25 * 32 * 3152 * 46080 / 2**30  # 5.4 GiB; vLLM-CPU takes whole GiB, so rounded up
    assert kv_cache_gib(auto, values, "float32", 3152, 32) == math.ceil(want) == 6
    assert kv_cache_gib(auto, values, "bfloat16", 3152, 32) == math.ceil(want / 2) == 3
    assert kv_cache_gib(auto, values, "bfloat16", 512, 4) == 2  # never below 2 GiB
    assert kv_cache_gib(auto, None, "float32", 3152, 32) == 2  # shape unknown: the floor
    assert kv_cache_gib(VLLMConfig(kv_cache_gib=1), values, "float32", 3152, 32) == 1  # as set
    assert kv_cache_gib(VLLMConfig(kv_cache_gib=0.5), values, "float32", 3152, 32) == 1
    assert all(isinstance(kv_cache_gib(auto, values, d, 2128, 32), int) for d in ("float32", "bfloat16"))


def test_vllm_kv_cache_setting_is_checked():
    from agentrl.config import recipe_from_dict
    from agentrl.errors import UserError

    base = {"env": {"suite": "tw-quick"}}
    assert recipe_from_dict(base, ["rollout.vllm.kv_cache_gib=3"]).rollout.vllm.kv_cache_gib == 3.0
    assert recipe_from_dict(base, ["rollout.vllm.kv_cache_gib=auto"]).rollout.vllm.kv_cache_gib == "auto"
    for bad in ("lots", "-1", "0", ".nan", "true"):
        with pytest.raises(UserError) as e:
            recipe_from_dict(base, [f"rollout.vllm.kv_cache_gib={bad}"])
        assert "expected a size in GiB > 0 or auto" in str(e.value) and "constrained" not in str(e.value)
