"""`agentrl train`: rollout (train split) -> store -> advantages -> LoRA PPO update -> checkpoint,
with held-out greedy evaluation before training, every `eval_every` iterations and at the end.

Resuming (`--resume RUN`) restores the last checkpoint and redoes what came after it. Episodes
already stored for an iteration are reused, and only the missing ones are rolled out, so no
stored episode is lost or duplicated.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from agentrl.config import Recipe, recipe_from_dict, recipe_to_yaml
from agentrl.credit import Episode as CreditEpisode
from agentrl.credit import Step as CreditStep
from agentrl.credit import get_method
from agentrl.envs.registry import check_tasks
from agentrl.envs.suites import load_suite
from agentrl.errors import UserError, WorkError
from agentrl.evaluate import episode_means, rollout_with_progress, sigterm_as_interrupt
from agentrl.rollout import EpisodeSpec, RolloutStats, group_specs
from agentrl.store import queries as q
from agentrl.store.db import Store
from agentrl.store.records import EpisodeRecord


@dataclass
class TrainSummary:
    run_id: int
    iterations: int
    eval_before: float | None
    eval_after: float | None
    wall_s: float


def resolve_checkpoint(store: Store, run_ref: str, iteration: int | None, overrides=()) -> tuple[Recipe, str, int]:
    """(recipe, adapter dir, run id) of checkpoint `iteration` (default: the last) of a training run."""
    run = q.get_run(store, run_ref)
    cps = q.checkpoints(store, run.id)
    if not cps:
        raise UserError(f"run {run.id} has no checkpoints")
    if iteration is None:
        cp = cps[-1]
    else:
        cp = next((c for c in cps if c["iteration"] == iteration), None)
        if cp is None:
            raise UserError(f"run {run.id} has no checkpoint {iteration} (have: {', '.join(str(c['iteration']) for c in cps)})")
    if not Path(cp["path"]).exists():
        raise UserError(f"checkpoint directory {cp['path']} is missing")
    recipe = recipe_from_dict(yaml.safe_load(run.recipe), overrides, source=f"run {run.id}")
    return recipe, cp["path"], run.id


def credit_episodes(recs: list[EpisodeRecord]) -> list[CreditEpisode]:
    return [CreditEpisode(group=r.group_id, steps=[
        CreditStep(reward=s.reward, anchor=s.anchor, valid=s.valid, signals=dict(s.info.get("signals", {})))
        for s in r.steps], signals=dict(r.info.get("signals", {}))) for r in recs]


def train_samples(recs: list[EpisodeRecord], advs: list[list[float]], tokenizer, action_mode: str,
                  drop_zero: bool = False):
    """The policy update's samples: one per step with action tokens. `drop_zero` leaves out the
    episodes whose advantage is 0 at every step (no PPO gradient without KL/entropy terms)."""
    from agentrl.learner.batch import StepSample
    from agentrl.policy.logprobs import allowed_token_ids

    out = []
    for r, adv in zip(recs, advs):
        if drop_zero and not any(adv):
            continue
        for s, a in zip(r.steps, adv):
            if not s.action_ids:
                continue
            allowed = None
            if action_mode == "admissible" and s.admissible:
                allowed = allowed_token_ids(tokenizer, s.admissible, s.action_ids)
            out.append(StepSample(episode=r.id, t=s.t, prompt_ids=s.prompt_ids, action_ids=s.action_ids,
                                  old_logprobs=s.logprobs, advantage=float(a), allowed=allowed))
    return out


def _missing(specs: list[EpisodeSpec], stored: list[EpisodeRecord]) -> list[EpisodeSpec]:
    """The specs not yet covered by stored episodes (matched by group id)."""
    have = Counter(r.group_id for r in stored)
    out = []
    for s in specs:
        if have[s.group_id] > 0:
            have[s.group_id] -= 1
        else:
            out.append(s)
    return out


class Trainer:
    def __init__(self, recipe: Recipe, store: Store, console: Console, show_progress: bool = True):
        from agentrl.learner.lora import add_lora
        from agentrl.learner.update import Learner
        from agentrl.policy.hf import HFPolicy
        from agentrl.policy.model import load_model

        if recipe.policy != "llm":
            raise UserError(f"train needs policy: llm (the recipe says '{recipe.policy}')")
        self.recipe, self.store, self.console, self.show = recipe, store, console, show_progress
        self.suite = load_suite(recipe.env.suite)
        check_tasks(self.suite.train + self.suite.eval)
        from agentrl.credit.online import split_params

        self.method = get_method(recipe.credit.method, **split_params(recipe.credit.method, recipe.credit.params())[0])
        model, self.tokenizer = load_model(recipe.model, seed=recipe.seed)
        self.model = add_lora(model, recipe.learner)
        self.learner = Learner(self.model, recipe.learner, temperature=recipe.rollout.temperature)
        self.policy = HFPolicy(self.model, self.tokenizer, recipe.rollout, greedy=False, seed=recipe.seed)
        self.eval_policy = HFPolicy(self.model, self.tokenizer, recipe.rollout, greedy=recipe.eval.greedy,
                                    seed=recipe.seed)
        self.name = f"llm:{recipe.model.path}"
        # learned parts of a credit method (SPA estimator, OPRL PRM, IGPO answer probabilities)
        from agentrl.credit.online import make_signal_provider

        self.signals = make_signal_provider(recipe.credit.method, recipe.credit.params(), self.model,
                                            self.tokenizer, recipe)

    # -- phases ----------------------------------------------------------------------------
    def _rollout(self, policy, specs, run_id, stored, label) -> tuple[list[EpisodeRecord], RolloutStats]:
        todo = _missing(specs, stored)
        recs, stats = rollout_with_progress(self.recipe, policy, self.name, todo, self.store, run_id, label,
                                            self.console, self.show) if todo else ([], RolloutStats())
        return stored + recs, stats

    def evaluate(self, run_id: int, iteration: int) -> dict:
        r = self.recipe
        tasks = self.suite.eval[: r.eval.episodes] if r.eval.episodes else self.suite.eval
        specs = group_specs(tasks, r.eval.group_size, "eval", iteration, r.seed, tag="eval/")
        stored = q.episodes(self.store, run_id, iteration=iteration, split="eval")
        t0 = time.perf_counter()
        recs, _ = self._rollout(self.eval_policy, specs, run_id, stored, f"eval @ iteration {iteration}")
        success, ret, length = episode_means(recs)
        return {"eval_success": success, "eval_return": ret, "eval_length": length,
                "eval_episodes": len(recs), "eval_s": time.perf_counter() - t0}

    def train_specs(self, iteration: int) -> list[EpisodeSpec]:
        r = self.recipe
        rng = random.Random(r.seed * 7919 + iteration)
        pool = self.suite.train
        k = r.rollout.groups_per_iteration
        tasks = rng.sample(pool, k) if k <= len(pool) else [rng.choice(pool) for _ in range(k)]
        return group_specs(tasks, r.rollout.group_size, "train", iteration, r.seed)

    def iteration(self, run_id: int, it: int) -> dict:
        r = self.recipe
        wall = {}
        t0 = time.perf_counter()
        stored = q.episodes(self.store, run_id, iteration=it, split="train", with_steps=True)
        recs, stats = self._rollout(self.policy, self.train_specs(it), run_id, stored, f"rollout {it}")
        wall["rollout"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        recs = [e for e in recs if e.status != "error"]
        signal_metrics: dict = {}
        if self.signals is not None:  # fills step.info["signals"] / episode.info["signals"]
            signal_metrics.update(self.signals.compute(recs))
        wall["signals"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        advs = self.method.advantages(credit_episodes(recs))
        rows = [(s.id, a, dict(s.info.get("signals", {}))) for e, adv in zip(recs, advs) for s, a in zip(e.steps, adv)]
        self.store.write_advantages(r.credit.method, rows)
        wall["credit"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        lc = r.learner
        drop = lc.drop_zero_advantage and lc.kl_coef == 0 and lc.entropy_coef == 0
        samples = train_samples(recs, advs, self.tokenizer, r.rollout.action_mode, drop_zero=drop)
        lm = self.learner.update(samples) if samples else {}
        lm["update_episodes"] = len({s.episode for s in samples})
        wall["update"] = time.perf_counter() - t0
        if self.signals is not None:  # train the learned part on this batch (after its signals were used)
            t0 = time.perf_counter()
            signal_metrics.update(self.signals.update(recs))
            wall["signals_update"] = time.perf_counter() - t0

        success, ret, length = episode_means(recs)
        metrics = {
            "success": success, "return": ret, "length": length,
            "episodes": len(recs), "errors": stats.errors,
            "rollout_tokens_per_s": stats.generated_tokens / stats.policy_s if stats.policy_s else 0.0,
            "dropped_turns": stats.dropped_turns,
            **{k: float(v) for k, v in lm.items()},
            **{k: float(v) for k, v in signal_metrics.items()},
        }
        return {"metrics": metrics, "wall": wall}

    def model_card(self, metrics: dict):
        from agentrl.learner.checkpoint import ModelCard
        from agentrl.policy.model import base_model_reference

        base, note = base_model_reference(self.recipe.model.path)
        return ModelCard(base, note, recipe_to_yaml(self.recipe),
                         {k: v for k, v in metrics.items() if isinstance(v, (int, float))})

    # -- the loop --------------------------------------------------------------------------
    def run(self, run_id: int, start: int, history: list[dict]) -> TrainSummary:
        from agentrl.learner.checkpoint import save_checkpoint

        r = self.recipe
        t_start = time.perf_counter()
        ckpt_root = Path(r.train.output_dir) / f"{r.name}-{run_id}"
        before = next((h["metrics"].get("eval_success") for h in history if h["index"] == 0), None)
        if start == 1 and before is None:
            ev = self.evaluate(run_id, 0)
            self.store.add_iteration(run_id, 0, ev, {"eval": ev["eval_s"]})
            before = ev["eval_success"]
            self.console.print(f"held-out success before training: {100 * before:.1f}% ({ev['eval_episodes']} episodes)")
        table = _IterationPrinter(self.console)
        for it in range(start, r.train.iterations + 1):
            t0 = time.perf_counter()
            res = self.iteration(run_id, it)
            metrics, wall = res["metrics"], res["wall"]
            last = it == r.train.iterations
            if it % r.train.checkpoint_every == 0 or last:
                t1 = time.perf_counter()
                path = save_checkpoint(ckpt_root / f"iter-{it:04d}", self.model, self.learner.optimizer,
                                       self.learner.scheduler, it, extra={"run_id": run_id},
                                       extra_state_dicts=self.signals.state_dict() if self.signals else None,
                                       card=self.model_card(metrics))
                self.store.add_checkpoint(run_id, it, str(path), metrics)
                wall["checkpoint"] = time.perf_counter() - t1
            if last or (r.train.eval_every and it % r.train.eval_every == 0):
                ev = self.evaluate(run_id, it)
                metrics.update(ev)
                wall["eval"] = ev["eval_s"]
            wall["total"] = time.perf_counter() - t0
            self.store.add_iteration(run_id, it, metrics, wall)
            table.row(it, metrics, wall)
        after = metrics.get("eval_success")
        return TrainSummary(run_id, r.train.iterations, before, after, time.perf_counter() - t_start)


class _IterationPrinter:
    COLS = [("iter", None), ("success", "success"), ("return", "return"), ("len", "length"), ("loss", "loss"),
            ("kl", "kl"), ("clip", "clip_frac"), ("entropy", "entropy"), ("gnorm", "grad_norm"),
            ("gen tok/s", "rollout_tokens_per_s"), ("learn tok/s", "tokens_per_s"), ("eval", "eval_success")]

    def __init__(self, console: Console):
        self.console = console
        self.console.print("  ".join(f"{c:>10}" for c, _ in self.COLS) + "  wall (rollout/update/eval)")

    def row(self, it: int, m: dict, wall: dict) -> None:
        cells = [f"{it:>10}"]
        for _, key in self.COLS[1:]:
            v = m.get(key)
            if v is None:
                cells.append(f"{'-':>10}")
            elif key in ("success", "eval_success", "clip_frac"):
                cells.append(f"{100 * v:>9.1f}%")
            else:
                cells.append(f"{v:>10.3g}")
        w = "/".join(f"{wall.get(k, 0):.0f}s" for k in ("rollout", "update", "eval"))
        self.console.print("  ".join(cells) + f"  {w}")


def run_train(recipe: Recipe | None, store: Store, resume: str | None = None, overrides=(),
              console: Console | None = None, show_progress: bool = True) -> TrainSummary:
    console = console or Console(stderr=True)
    from agentrl.learner.checkpoint import load_checkpoint

    if resume is not None:
        run = q.get_run(store, resume)
        if run.kind != "train":
            raise UserError(f"run {run.id} is an {run.kind} run, not a training run")
        recipe = recipe_from_dict(yaml.safe_load(run.recipe), overrides, source=f"run {run.id}")
        trainer = Trainer(recipe, store, console, show_progress)
        cps = q.checkpoints(store, run.id)
        start = 1
        if cps:
            loaded = load_checkpoint(cps[-1]["path"], trainer.model, trainer.learner.optimizer,
                                     trainer.learner.scheduler)
            start = loaded.iteration + 1
            if trainer.signals is not None:
                trainer.signals.load_state_dict(loaded.extra_state_dicts)
            console.print(f"resuming run {run.id} after checkpoint {loaded.iteration}")
        run_id = run.id
        store.set_run_status(run_id, "running")
    else:
        assert recipe is not None
        trainer = Trainer(recipe, store, console, show_progress)
        run_id = store.create_run(recipe.name, recipe_to_yaml(recipe), kind="train")
        start = 1
    try:
        with sigterm_as_interrupt():
            summary = trainer.run(run_id, start, q.iterations(store, run_id))
    except KeyboardInterrupt:
        store.set_run_status(run_id, "interrupted")
        raise WorkError(f"interrupted; resume with: agentrl train --resume {run_id}") from None
    except BaseException:
        store.set_run_status(run_id, "failed")
        raise
    store.set_run_status(run_id, "finished")
    return summary


def summary_table(s: TrainSummary) -> Table:
    t = Table(title=f"training run {s.run_id}: held-out success")
    for c in ("before", "after", "change", "iterations", "wall"):
        t.add_column(c, justify="right")
    fmt = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    change = "-" if s.eval_before is None or s.eval_after is None else f"{100 * (s.eval_after - s.eval_before):+.1f} pts"
    t.add_row(fmt(s.eval_before), fmt(s.eval_after), change, str(s.iterations), f"{s.wall_s / 60:.1f} min")
    return t
