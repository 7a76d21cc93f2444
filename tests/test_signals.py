"""The signal providers of spa / oprl / igpo (`agentrl.signals`) on a tiny random model, and end to end
through `agentrl train`."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import run_cli, write_recipe

from agentrl.config import LearnerConfig, RolloutConfig
from agentrl.credit import CreditError, build_credit, get_method, provider_class
from agentrl.credit.registry import split_credit_params
from agentrl.learner.lora import POLICY, adapter_parameters, adapters_disabled, add_lora
from agentrl.learner.samples import episode_samples
from agentrl.policy.logprobs import recompute_logprobs
from agentrl.policy.prompt import Turn, build_prompt, chat_format, default_system_prompt, system_message, user_message
from agentrl.signals import SignalProvider
from agentrl.signals.igpo import IGPOParams, IGPOProvider
from agentrl.signals.oprl import PRM, OPRLProvider
from agentrl.signals.spa import SPAParams, SPAProvider
from agentrl.store.records import EpisodeRecord, StepRecord
from agentrl.train import credit_episodes

EXITS = ["go north", "go east", "climb up", "go west"]
GOAL = "Find the way out."


def recipe(history=-1, temperature=1.0, layout="concat", **learner):
    lc = dict(
        lora_rank=4,
        lora_alpha=8,
        lr=1e-2,
        layout=layout,
        micro_batch_tokens=1024,
        tokens_per_step=1024,
        target_modules=["q_proj", "v_proj"],
    )
    lc.update(learner)
    return SimpleNamespace(
        rollout=RolloutConfig(history=history, temperature=temperature, action_mode="admissible"),
        learner=LearnerConfig(**lc),
    )


def perturb(model, adapter, seed=1, scale=0.3):
    """LoRA B starts at zero: give the adapter weights so that it matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter_parameters(model, adapter):
            p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """The session's tiny random Llama (hidden 64, 2 layers; its tokenizer is the default model's when installed)."""
    from agentrl.config import ModelConfig
    from agentrl.policy.model import load_model

    return load_model(ModelConfig(path=str(tiny_model_dir)))


def fresh(tiny, rec):
    """A PeftModel with a perturbed policy adapter on a copy-free fresh wrap of the tiny model."""
    import copy

    model = copy.deepcopy(tiny[0])
    pm = add_lora(model, rec.learner)
    perturb(pm, POLICY)
    return pm


def make_recs(model, tok, rec, plan):
    """Episodes of a chain-like game: plan[i] = (group, [(observation, action, reward, valid)], final_obs).

    Prompts are built exactly as the policy does (build_prompt) and stored log-probs are
    the policy's, recomputed independently with `recompute_logprobs` at the recipe's temperature."""
    fmt = chat_format(tok)
    ro = rec.rollout
    system = system_message(default_system_prompt("admissible"), GOAL)
    out = []
    for group, turns_spec, final in plan:
        r = EpisodeRecord(
            task_id=f"toy/{group}",
            group_id=group,
            env="toy",
            goal=GOAL,
            info={"walkthrough": ["go north", "go east"]},
            final_observation=final,
        )
        turns: list[Turn] = []
        for t, (obs, action, reward, valid) in enumerate(turns_spec):
            prompt = build_prompt(fmt, system, turns, obs, EXITS, ro.history, ro.max_prompt_tokens)
            ids = fmt.encode(action) + [fmt.eot_id]
            r.steps.append(
                StepRecord(
                    t=t,
                    observation=obs,
                    action=action,
                    reward=reward,
                    valid=valid,
                    admissible=list(EXITS),
                    prompt_ids=prompt.ids,
                    action_ids=ids,
                )
            )
            turns.append(Turn(prompt.user, ids))
        lps = recompute_logprobs(
            model,
            tok,
            [s.prompt_ids for s in r.steps],
            [s.action_ids for s in r.steps],
            "admissible",
            [s.admissible for s in r.steps],
            ro.temperature,
        )
        for s, lp in zip(r.steps, lps):
            s.logprobs = lp
        r.ret = sum(s.reward for s in r.steps)
        r.won = r.ret > 0
        out.append(r)
    return out


def room(i):
    return f"You are in room {i} of 2. Exits lead in every direction."


PLAN = [
    ("a", [(room(1), "go north", 0.0, True), (room(2), "go east", 1.0, True)], "You are free!"),
    ("a", [(room(1), "go west", 0.0, True), (room(1), "climb up", 0.0, True)], room(1)),
    (
        "b",
        [(room(1), "go north", 0.0, True), (room(2), "go west", 0.0, True), (room(2), "go east", 1.0, True)],
        "You are free!",
    ),
    ("b", [(room(1), "go east", 0.0, False)], room(1)),
]


# ---------------------------------------------------------------- params


def make_signal_provider(method, params, model, tok, rec):
    """The provider `agentrl train` builds for `credit: {method, **params}`."""
    return build_credit(SimpleNamespace(method=method, params=lambda: dict(params)), model, tok, rec).provider


def test_split_params_and_errors(tiny):
    # split by the declared fields of the method and of its provider's Params
    assert split_credit_params("igpo", {"truth": "goal", "gamma": 0.9}, IGPOProvider) == (
        {"gamma": 0.9},
        {"truth": "goal"},
    )
    assert split_credit_params("spa", {"estimator_lr": 0.1, "omega": 2}, SPAProvider) == (
        {"omega": 2},
        {"estimator_lr": 0.1},
    )
    assert provider_class("grpo") is None and provider_class("oprl") is OPRLProvider
    with pytest.raises(CreditError, match="no parameter 'truth'"):  # provider params of another method
        split_credit_params("grpo", {"truth": "goal"}, None)
    with pytest.raises(CreditError, match=r"has no parameter 'betta' \(known: beta, omega, prm_lr, prm_epochs\)"):
        split_credit_params("oprl", {"betta": 0.1}, OPRLProvider)
    pm = fresh(tiny, recipe())
    tok = tiny[1]
    assert make_signal_provider("grpo", {}, pm, tok, recipe()) is None
    assert make_signal_provider("gigpo", {"gamma": 0.9}, pm, tok, recipe()) is None
    with pytest.raises(CreditError, match="has no parameter 'truth'"):
        make_signal_provider("grpo", {"truth": "goal"}, pm, tok, recipe())
    with pytest.raises(CreditError, match="'truth' must be one of walkthrough, goal"):
        make_signal_provider("igpo", {"truth": "bogus"}, pm, tok, recipe())
    with pytest.raises(CreditError, match="'estimator_epochs' must be an integer >= 1"):
        make_signal_provider("spa", {"estimator_epochs": 0}, pm, tok, recipe())
    with pytest.raises(CreditError, match="'bridge' must be a string"):
        IGPOParams(bridge=3)
    with pytest.raises(CreditError, match="has no parameter 'betta'"):
        make_signal_provider("oprl", {"betta": 0.1}, pm, tok, recipe())
    method, p = build_credit(
        SimpleNamespace(method="oprl", params=lambda: {"beta": 0.2, "prm_lr": 0.5}), pm, tok, recipe()
    )
    assert method.beta == 0.2  # built once, and the provider uses it
    assert isinstance(p, OPRLProvider) and p.beta == 0.2 and p.optimizer.param_groups[0]["lr"] == 0.5
    assert isinstance(p, SignalProvider)
    assert make_signal_provider("oprl", {}, pm, tok, recipe()).optimizer.param_groups[0]["lr"] == 1e-2  # learner lr
    assert SPAParams() == SPAParams(estimator_lr=1e-3, estimator_epochs=20, estimator_buffer=512, estimator_width=128)


# ---------------------------------------------------------------- spa


def test_spa_progress_from_hidden_states_and_training(tiny):
    rec = recipe(layout="concat")
    pm = fresh(tiny, rec)
    tok = tiny[1]
    recs = make_recs(pm, tok, rec, PLAN)
    prov = make_signal_provider("spa", {"estimator_epochs": 30, "estimator_lr": 0.01}, pm, tok, rec)
    assert isinstance(prov, SPAProvider)
    torch.manual_seed(3)
    with torch.no_grad():  # a non-zero output layer so that c_t depends on the features
        for p in prov.estimator.parameters():
            p.copy_(torch.randn(p.shape) * 0.5)
    prov.compute(recs)
    # independent: one sequence at a time, full forward, hidden state at the last action token
    body = pm.get_base_model().get_decoder()
    with torch.no_grad():
        for r in recs:
            for s in r.steps:
                ids = torch.tensor([s.prompt_ids + s.action_ids])
                h = body(input_ids=ids).last_hidden_state[0, -1]
                assert s.info["signals"]["progress"] == pytest.approx(float(prov.estimator(h)), abs=1e-4)
    assert len({s.info["signals"]["progress"] for r in recs for s in r.steps}) > 3  # depends on the state

    spa = get_method("spa")
    before = spa.estimator_loss(credit_episodes(recs))
    m = prov.update(recs)
    assert m["estimator_buffer"] == 4 and m["estimator_loss"] > 0
    prov.compute(recs)
    after = spa.estimator_loss(credit_episodes(recs))
    assert after < 0.5 * before, (before, after)
    # the advantages use the new signal
    advs = spa.advantages(credit_episodes(recs))
    assert [len(a) for a in advs] == [2, 2, 3, 1]

    # state round trip: a new provider gives the same progress and holds the same buffer
    state = prov.state_dict()
    other = SPAProvider(pm, tok, rec, SPAParams(estimator_width=128))
    other.load_state_dict(state)
    feats = prov.features(recs[:1])[0]
    assert torch.allclose(other.estimator(feats), prov.estimator(feats))
    assert len(other.buffer) == 4 and torch.equal(other.buffer.returns(), prov.buffer.returns())
    assert torch.equal(torch.cat(other.buffer.features()), torch.cat(prov.buffer.features()))


# ---------------------------------------------------------------- oprl


def test_oprl_logratio_training_and_adapters(tiny):
    rec = recipe(temperature=0.7, layout="per_step", lr=0.05)
    pm = fresh(tiny, rec)
    tok = tiny[1]
    recs = make_recs(pm, tok, rec, PLAN)  # stored log-probs: the (perturbed) policy at T=0.7
    flags = {n: p.requires_grad for n, p in pm.named_parameters()}
    prov = make_signal_provider("oprl", {}, pm, tok, rec)
    assert pm.active_adapter == POLICY and PRM in pm.peft_config
    assert flags == {n: p.requires_grad for n, p in pm.named_parameters() if ".prm." not in n}
    assert not any(p.requires_grad for p in adapter_parameters(pm, PRM))

    m = prov.compute(recs)
    # a fresh PRM (LoRA B = 0) is the base model: logratio = Σ log π_base − Σ log π_policy (independent path)
    with adapters_disabled(pm):
        base = recompute_logprobs(
            pm,
            tok,
            [s.prompt_ids for r in recs for s in r.steps],
            [s.action_ids for r in recs for s in r.steps],
            "admissible",
            [s.admissible for r in recs for s in r.steps],
            0.7,
        )
    got = [s.info["signals"]["logratio"] for r in recs for s in r.steps]
    want = [sum(b) - sum(s.logprobs) for b, s in zip(base, (s for r in recs for s in r.steps))]
    assert got == pytest.approx(want, abs=1e-4)
    assert max(abs(x) for x in got) > 1e-3  # the policy adapter matters
    assert m["logratio_abs"] == pytest.approx(sum(abs(x) for x in want) / len(want), abs=1e-4)

    policy_before = [p.detach().clone() for p in adapter_parameters(pm, POLICY)]
    prm_before = [p.detach().clone() for p in adapter_parameters(pm, PRM)]
    m1 = prov.update(recs)
    assert m1["prm_pairs"] == 2  # (won, lost) in group a and in group b
    oprl = get_method("oprl")
    assert m1["prm_loss"] == pytest.approx(oprl.prm_loss(credit_episodes(recs)), rel=1e-5)
    assert pm.active_adapter == POLICY
    assert all(torch.equal(a, b) for a, b in zip(policy_before, adapter_parameters(pm, POLICY)))
    assert any(not torch.equal(a, b) for a, b in zip(prm_before, adapter_parameters(pm, PRM)))
    assert flags == {n: p.requires_grad for n, p in pm.named_parameters() if ".prm." not in n}
    assert not any(p.requires_grad for p in adapter_parameters(pm, PRM))
    for _ in range(3):
        m2 = prov.update(recs)
    assert m2["prm_loss"] < m1["prm_loss"] - 1e-3, (m1, m2)
    # the learner's view is unchanged: the policy adapter computes the stored log-probs
    again = recompute_logprobs(
        pm, tok, [recs[0].steps[0].prompt_ids], [recs[0].steps[0].action_ids], "admissible", [EXITS], 0.7
    )[0]
    assert again == pytest.approx(recs[0].steps[0].logprobs, abs=1e-5)

    # state round trip (the optimizer; the adapter weights travel in the checkpoint's adapter dir)
    state = prov.state_dict()
    other = OPRLProvider(pm, tok, rec)
    other.load_state_dict(state)
    st = other.optimizer.state_dict()["state"]
    assert st and torch.equal(st[0]["exp_avg"], state["prm_optimizer"]["state"][0]["exp_avg"])


# ---------------------------------------------------------------- igpo


def direct_answer_prob(model, context, bridge_ids, truth_ids, temperature):
    ids = torch.tensor([list(context) + bridge_ids + truth_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float() / temperature
    lp = torch.log_softmax(logits, -1)
    start = len(context) + len(bridge_ids)
    vals = [float(lp[start + j - 1, tok]) for j, tok in enumerate(truth_ids)]
    return math.exp(sum(vals) / len(vals))


def test_igpo_answer_probs_match_full_forward(tiny):
    rec = recipe(temperature=0.8)
    pm = fresh(tiny, rec)
    tok = tiny[1]
    recs = make_recs(pm, tok, rec, PLAN)
    prov = make_signal_provider("igpo", {}, pm, tok, rec)
    assert isinstance(prov, IGPOProvider)
    m = prov.compute(recs)
    fmt = chat_format(tok)
    truth = fmt.encode(" go north, go east")
    bridge = fmt.encode("The full solution is:")
    for r in recs:
        for s in r.steps:
            want = direct_answer_prob(pm, s.prompt_ids, bridge, truth, 0.8)
            assert s.info["signals"]["answer_prob"] == pytest.approx(want, rel=1e-4)
        # after the last turn: the next prompt as the policy builds it (history -1: it extends the last one)
        last = r.steps[-1]
        ctx = last.prompt_ids + fmt.piece(last.action_ids, user_message(r.final_observation, None))
        assert prov.final_context(r) == ctx
        assert r.info["signals"]["final_answer_prob"] == pytest.approx(
            direct_answer_prob(pm, ctx, bridge, truth, 0.8), rel=1e-4
        )
    assert 0 < m["answer_prob"] < 1 and m["zero_ig_frac"] == 0.0  # full history: every context differs
    advs = get_method("igpo").advantages(credit_episodes(recs))
    assert [len(a) for a in advs] == [2, 2, 3, 1]
    assert prov.update(recs) == {} and prov.state_dict() == {}

    # goal as the truth; with history 0 an unchanged observation gives the same context -> IG exactly 0
    rec0 = recipe(history=0)
    recs0 = make_recs(pm, tok, rec0, PLAN)
    prov0 = make_signal_provider("igpo", {"truth": "goal", "bridge": "Goal:"}, pm, tok, rec0)
    m0 = prov0.compute(recs0)
    p = [s.info["signals"]["answer_prob"] for s in recs0[1].steps]  # room 1 -> room 1
    assert p[0] == p[1]
    assert p[0] == pytest.approx(
        direct_answer_prob(pm, recs0[1].steps[0].prompt_ids, fmt.encode("Goal:"), fmt.encode(" " + GOAL), 1.0), rel=1e-4
    )
    # IG pairs: ep0 (2 steps + final) 2, ep1 2, ep2 3, ep3 1 -> 8; equal: ep1 step0==step1, ep2 step1==step2
    assert m0["zero_ig_frac"] == pytest.approx(2 / 8)
    recs0[0].info.pop("walkthrough")
    with pytest.raises(Exception, match="no walkthrough"):
        make_signal_provider("igpo", {}, pm, tok, rec0).compute(recs0)


# ---------------------------------------------------------------- end to end


def _chain_suite(d: Path):
    (d / "chain.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "chain",
                "env": "toy",
                "description": "two rooms",
                "train": {"pattern": "toy/chain-2/seed-{i}", "seeds": [0, 63]},
                "eval": {"pattern": "toy/chain-2/seed-{i}", "seeds": [1000, 1031]},
            }
        )
    )


@pytest.mark.parametrize("method", ["spa", "oprl", "igpo"])
def test_train_and_resume(method, tmp_path, suites_dir, tiny_model_dir, capsys, monkeypatch):
    _chain_suite(suites_dir)
    recipe_path = write_recipe(
        tmp_path / "train.yaml",
        "chain",
        policy="llm",
        env={"max_steps": 5, "workers": 0},
        model={"path": str(tiny_model_dir)},
        rollout={
            "group_size": 4,
            "groups_per_iteration": 3,
            "action_mode": "admissible",
            "history": -1,
            "max_new_tokens": 8,
        },
        credit={"method": method},
        learner={
            "lora_rank": 4,
            "lora_alpha": 8,
            "lr": 5e-3,
            "layout": "concat",
            "target_modules": ["q_proj", "v_proj"],
        },
        train={"iterations": 2, "eval_every": 0, "checkpoint_every": 1, "output_dir": str(tmp_path / "ckpt")},
        eval={"episodes": 2, "greedy": False},
    )
    db = str(tmp_path / "r.db")
    code, out, err = run_cli(["train", str(recipe_path), "--db", db, "--no-progress"], capsys)
    assert code == 0, err
    con = sqlite3.connect(db)
    key = {"spa": "progress", "oprl": "logratio", "igpo": "answer_prob"}[method]
    sigs = [json.loads(r[0]) for r in con.execute("SELECT signals FROM advantages WHERE method = ?", (method,))]
    n_steps = con.execute(
        "SELECT count(*) FROM steps s JOIN episodes e ON e.id = s.episode_id WHERE e.split = 'train'"
    ).fetchone()[0]
    assert len(sigs) == n_steps > 0 and all(key in s for s in sigs)
    metrics = {i: json.loads(m) for i, m in con.execute('SELECT "index", metrics FROM iterations')}
    walls = {i: json.loads(w) for i, w in con.execute('SELECT "index", wall FROM iterations')}
    want = {"spa": "estimator_loss", "oprl": "prm_loss", "igpo": "zero_ig_frac"}[method]
    assert want in metrics[1] and want in metrics[2]
    assert "signals" in walls[1] and "signals_update" in walls[1]

    ckpt = Path(db).parent / con.execute("SELECT path FROM checkpoints ORDER BY iteration DESC").fetchone()[0]
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)["extra_state_dicts"]
    expect = {"spa": {"spa_estimator", "spa_optimizer", "spa_buffer"}, "oprl": {"prm_optimizer"}, "igpo": set()}
    assert set(state) == expect[method]
    assert (ckpt / "adapter" / "prm").is_dir() == (method == "oprl")
    con.close()

    # --resume for one more iteration: the learned part comes back from the last checkpoint
    seen = {}
    cls = {"spa": SPAProvider, "oprl": OPRLProvider, "igpo": IGPOProvider}[method]
    orig = cls.load_state_dict

    def spy(self, st):
        orig(self, st)
        if method == "spa":
            seen["same"] = all(
                torch.equal(a, b) for a, b in zip(self.estimator.state_dict().values(), state["spa_estimator"].values())
            )
            seen["buffer"] = len(self.buffer)
        elif method == "oprl":
            from safetensors.torch import load_file

            saved = load_file(str(ckpt / "adapter" / "prm" / "adapter_model.safetensors"))
            seen["same"] = len(saved) == len(self.params) and all(
                any(torch.equal(p, v) for v in saved.values()) for p in self.params
            )
            seen["active"] = self.model.active_adapter
        else:
            seen["same"] = True

    monkeypatch.setattr(cls, "load_state_dict", spy)
    code, out, err = run_cli(
        ["train", "--resume", "1", "--db", db, "--no-progress", "--set", "train.iterations=3"], capsys
    )
    assert code == 0, err
    assert seen["same"] is True, seen
    if method == "spa":
        assert seen["buffer"] == 24  # 2 iterations x 12 episodes
    if method == "oprl":
        assert seen["active"] == POLICY
    con = sqlite3.connect(db)
    assert con.execute("SELECT max(iteration) FROM checkpoints").fetchone()[0] == 3


def test_trainer_and_provider_build_the_same_samples(tmp_path, suites_dir, tiny_model_dir, capsys, monkeypatch):
    """The policy update and OPRL's PRM see the same steps: one function builds both sample lists."""
    import agentrl.signals.oprl as oprl_mod
    import agentrl.train as train_mod

    _chain_suite(suites_dir)
    recipe_path = write_recipe(
        tmp_path / "train.yaml",
        "chain",
        policy="llm",
        env={"max_steps": 4, "workers": 0},
        model={"path": str(tiny_model_dir)},
        rollout={
            "group_size": 2,
            "groups_per_iteration": 2,
            "action_mode": "admissible",
            "history": -1,
            "max_new_tokens": 8,
        },
        credit={"method": "oprl"},
        learner={
            "lora_rank": 4,
            "lora_alpha": 8,
            "lr": 5e-3,
            "layout": "concat",
            "drop_zero_advantage": False,
            "target_modules": ["q_proj", "v_proj"],
        },
        train={"iterations": 1, "eval_every": 0, "checkpoint_every": 1, "output_dir": str(tmp_path / "ckpt")},
        eval={"episodes": 1, "greedy": True},
    )
    calls: dict[str, list] = {"train": [], "provider": []}

    def spy(key):
        def wrapped(recs, advantages, *a, **kw):
            out = episode_samples(recs, advantages, *a, **kw)
            calls[key].append(out)
            return out

        return wrapped

    monkeypatch.setattr(train_mod, "episode_samples", spy("train"))
    monkeypatch.setattr(oprl_mod, "episode_samples", spy("provider"))
    code, out, err = run_cli(["train", str(recipe_path), "--db", str(tmp_path / "r.db"), "--no-progress"], capsys)
    assert code == 0, err
    assert len(calls["train"]) == 1 and calls["provider"]  # compute() (update() reuses its samples)
    trained = calls["train"][0]
    assert trained and any(s.allowed for s in trained)
    for got in calls["provider"]:
        assert [dict(vars(s), advantage=0.0) for s in trained] == [vars(s) for s in got]
