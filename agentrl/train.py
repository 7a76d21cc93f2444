"""`agentrl train`: rollout (train split) -> store -> advantages -> LoRA PPO update -> checkpoint,
with held-out greedy evaluation before training, every `eval_every` iterations and at the end.

Resuming (`--resume RUN`) restores the last checkpoint and redoes what came after it. Episodes
already stored for an iteration are reused, and only the missing ones are rolled out, so no
stored episode is lost or duplicated.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agentrl.checks import check_model_device, checked_suite
from agentrl.command import RunOutcome, rollout_with_progress, stored_run
from agentrl.config import Recipe, recipe_from_dict, recipe_to_yaml
from agentrl.credit import Episode as CreditEpisode
from agentrl.credit import Step as CreditStep
from agentrl.credit import build_credit
from agentrl.engines.factory import make_engine
from agentrl.envs.suites import env_options
from agentrl.errors import UserError, reset_warnings
from agentrl.evaluate import episode_means
from agentrl.learner.checkpoint import (
    ModelCard,
    checkpoint_iteration,
    load_adapter_weights,
    load_checkpoint,
    save_checkpoint,
)
from agentrl.learner.lora import add_lora
from agentrl.learner.samples import episode_samples
from agentrl.learner.update import Learner, resolve_old_logprobs
from agentrl.policy.llm import LLMPolicy
from agentrl.policy.model import base_model_reference, load_model, resolve_compute_dtype
from agentrl.rollout import EpisodeSpec, RolloutStats, group_specs, request_stop
from agentrl.runtime import make_pool
from agentrl.stats import fmt_rate, paired_bootstrap
from agentrl.store import queries as q
from agentrl.store.db import Store
from agentrl.store.records import EpisodeRecord
from agentrl.trackers import make_trackers


@dataclass
class TrainSummary:
    """A finished run's held-out success before training (iteration 0) and after (its last eval):
    rates, won episodes (`*_won`) of `*_n`, and `change`: (mean, lo, hi) of the per-task change
    with its 95% paired-bootstrap interval over the `paired_tasks` tasks both evals played (None
    when they share none)."""

    run_id: int
    iterations: int
    eval_before: float | None
    eval_after: float | None
    wall_s: float
    before_won: int = 0
    before_n: int = 0
    after_won: int = 0
    after_n: int = 0
    change: tuple[float, float, float] | None = None
    paired_tasks: int = 0


def credit_episodes(recs: list[EpisodeRecord]) -> list[CreditEpisode]:
    return [
        CreditEpisode(
            group=r.group_id,
            steps=[
                CreditStep(reward=s.reward, anchor=s.anchor, valid=s.valid, signals=dict(s.info.get("signals", {})))
                for s in r.steps
            ],
            signals=dict(r.info.get("signals", {})),
        )
        for r in recs
    ]


@dataclass
class RolloutMetrics:
    """The iteration's training episodes (errored ones left out) and the rollout's counters."""

    success: float
    return_: float
    length: float
    episodes: int
    errors: int
    tokens_per_s: float  # generated tokens per second of policy time
    dropped_turns: int

    def as_dict(self) -> dict[str, float]:
        return {
            "success": self.success,
            "return": self.return_,
            "length": self.length,
            "episodes": self.episodes,
            "errors": self.errors,
            "rollout_tokens_per_s": self.tokens_per_s,
            "dropped_turns": self.dropped_turns,
        }


@dataclass
class UpdateMetrics:
    """The policy update: `Learner.update`'s metrics (empty without samples) and the episodes it used."""

    learner: dict[str, float]
    episodes: int

    def as_dict(self) -> dict[str, float]:
        return {**self.learner, "update_episodes": float(self.episodes)}


@dataclass
class EvalMetrics:
    """A held-out evaluation."""

    success: float
    return_: float
    length: float
    episodes: int
    wall_s: float

    def as_dict(self) -> dict[str, float]:
        return {
            "eval_success": self.success,
            "eval_return": self.return_,
            "eval_length": self.length,
            "eval_episodes": self.episodes,
            "eval_s": self.wall_s,
        }


@dataclass
class Timings:
    """Wall seconds per phase; None = the phase did not run (left out of the stored dict)."""

    rollout: float = 0.0
    signals: float = 0.0  # the signal provider's compute (0 without one)
    credit: float = 0.0
    update: float = 0.0
    signals_update: float | None = None
    weights_sync: float | None = None  # new weights to the engine (vllm: a reload or a new LoRA; hf: nothing)
    checkpoint: float | None = None
    eval: float | None = None
    total: float | None = None

    def as_dict(self) -> dict[str, float]:
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}


@dataclass
class IterationResult:
    """One training iteration. `metrics()` / `wall.as_dict()` are what the store keeps (the
    `iterations` table's JSON: plot, inspect, export and bench read those keys)."""

    rollout: RolloutMetrics
    update: UpdateMetrics
    credit: dict[str, float]  # the signal provider's compute and update metrics (method-specific)
    wall: Timings
    eval: EvalMetrics | None = None

    def metrics(self) -> dict[str, float]:
        return {
            **self.rollout.as_dict(),
            **self.update.as_dict(),
            **self.credit,
            **(self.eval.as_dict() if self.eval is not None else {}),
        }


def _missing(specs: list[EpisodeSpec], stored: list[EpisodeRecord]) -> list[EpisodeSpec]:
    """The specs not yet covered by stored episodes: matched by (group id, sample index); episodes
    stored before the sample index was recorded are matched by counting their group."""
    have = {(r.group_id, r.info["sample"]) for r in stored if "sample" in r.info}
    legacy = Counter(r.group_id for r in stored if "sample" not in r.info)
    out = []
    for s in specs:
        if (s.group_id, s.sample) in have:
            continue
        if legacy[s.group_id] > 0:
            legacy[s.group_id] -= 1
            continue
        out.append(s)
    return out


def seed_iteration(seed: int, iteration: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs from (seed, iteration) at the start of an
    iteration, so an iteration redone after a crash draws what the uninterrupted run drew."""
    s = (seed * 1_000_003 + iteration * 7_919 + 17) % (2**31)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def in_spec_order(specs: list[EpisodeSpec], recs: list[EpisodeRecord]) -> list[EpisodeRecord]:
    """Episodes in the order of their specs, whatever order they finished (or were stored) in, so
    that an iteration resumed from stored episodes feeds credit and the learner exactly as an
    uninterrupted one."""
    rank = {(s.group_id, s.sample): i for i, s in enumerate(specs)}
    return sorted(recs, key=lambda r: rank.get((r.group_id, r.info.get("sample")), len(rank)))


class Trainer:
    def __init__(self, recipe: Recipe, store: Store, console: Console, show_progress: bool = True):
        if recipe.policy != "llm":
            raise UserError(f"train needs policy: llm (the recipe says '{recipe.policy}')")
        self.recipe, self.store, self.console, self.show = recipe, store, console, show_progress
        # train.report_to: the trackers' libraries imported now (a missing extra is a UserError before any work)
        self.trackers = make_trackers(recipe.train.report_to, recipe.train.output_dir, console)
        self.suite = checked_suite(recipe, ("train", "eval"))  # empty splits, bad task ids: UserError
        check_model_device(recipe)  # before the model is loaded
        model, self.tokenizer = load_model(recipe.model, seed=recipe.seed)
        self.model = add_lora(model, recipe.learner)
        device = next(self.model.parameters()).device
        compute = resolve_compute_dtype(recipe.model, device)
        # the engine: hf generates with self.model itself; vllm holds its own copy, synced after every update
        self.engine = make_engine(recipe, self.model, self.tokenizer)
        self.ahead = recipe.train.max_staleness  # rollouts that may run ahead of the learner
        if self.ahead and not (self.engine.name == "vllm" or getattr(self.engine, "remote", False)):
            raise UserError(
                "train.max_staleness > 0 needs an engine with its own copy of the weights "
                "(rollout.engine: vllm, or runtime.backend: ray); the local hf engine runs the learner's model"
            )
        # the same model at the same compute dtype as the learner, and no stale weights
        same_numerics = self.engine.name == "hf" and not self.ahead
        self.learner = Learner(
            self.model,
            recipe.learner,
            temperature=recipe.rollout.temperature,
            compute_dtype=compute,
            recompute_old=resolve_old_logprobs(recipe.learner, self.engine.name, same_numerics),
        )
        options = env_options(recipe.env)  # the adapter's system_intro may depend on them
        self.policy = LLMPolicy(
            self.engine, self.tokenizer, recipe.rollout, greedy=False, seed=recipe.seed, env_options=options
        )
        self.eval_policy = LLMPolicy(
            self.engine,
            self.tokenizer,
            recipe.rollout,
            greedy=recipe.eval.greedy,
            seed=recipe.seed,
            env_options=options,
        )
        self.name = f"llm:{recipe.model.path}"
        self.pool = None  # the env pool, made at the first rollout
        self._engine_lock = threading.Lock()  # one user of the engine at a time: a rollout or an eval
        self._published = None  # (weights snapshot or None, version) for the engine, when ahead
        # the method and its signal provider (SPA estimator, OPRL PRM, IGPO answer probabilities; None for
        # grpo, rloo, gigpo), built last: the provider's own weights draw on the torch RNG after the policy's
        self.credit = build_credit(recipe.credit, self.model, self.tokenizer, recipe)

    def warm_start(self, ref: str) -> str:
        """Start from the policy adapter of `ref` (`train.init_from`: RUN or RUN:N of this database, a
        training or sft run, default its last checkpoint), with this run's fresh optimiser. Returns
        what was loaded, for the log."""
        from agentrl.command import parse_checkpoint_ref, resolve_checkpoint

        run_ref, it = parse_checkpoint_ref(ref, "train.init_from")
        src, path, src_id = resolve_checkpoint(self.store, run_ref, it)
        if src.model.path != self.recipe.model.path:
            raise UserError(
                f"train.init_from: run {src_id} trained an adapter of model '{src.model.path}', "
                f"this recipe's model is '{self.recipe.model.path}'"
            )
        loaded = load_adapter_weights(path, self.model)
        self.sync_weights(0)
        return f"run {src_id} checkpoint {loaded}"

    def close(self) -> None:
        """End the env pool's workers (or actors) and a remote engine's actors."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        close = getattr(self.engine, "close", None)
        if callable(close) and getattr(self.engine, "remote", False):
            close()

    # -- phases ----------------------------------------------------------------------------
    def _rollout(self, policy, specs, run_id, stored, label) -> tuple[list[EpisodeRecord], RolloutStats]:
        todo = _missing(specs, stored)
        if todo and self.pool is None:  # one pool for the run: its workers start once and stay warm
            self.pool = make_pool(self.recipe)
        recs, stats = (
            rollout_with_progress(
                self.recipe, policy, self.name, todo, self.store, run_id, label, self.console, self.show, pool=self.pool
            )
            if todo
            else ([], RolloutStats())
        )
        return in_spec_order(specs, stored + recs), stats

    def evaluate(self, run_id: int, iteration: int) -> EvalMetrics:
        r = self.recipe
        tasks = self.suite.eval[: r.eval.episodes] if r.eval.episodes else self.suite.eval
        specs = group_specs(tasks, r.eval.group_size, "eval", iteration, r.seed, tag="eval/")
        stored = q.episodes(self.store, run_id, iteration=iteration, split="eval")
        t0 = time.perf_counter()
        with self._engine_lock:  # after the rollout in flight, if any; with the newest weights
            self._apply_published()
            recs, _ = self._rollout(self.eval_policy, specs, run_id, stored, f"eval @ iteration {iteration}")
        success, ret, length = episode_means(recs)
        return EvalMetrics(success, ret, length, len(recs), time.perf_counter() - t0)

    def train_specs(self, iteration: int) -> list[EpisodeSpec]:
        r = self.recipe
        rng = random.Random(r.seed * 7919 + iteration)
        pool = self.suite.train
        k = r.rollout.groups_per_iteration
        tasks = rng.sample(pool, k) if k <= len(pool) else [rng.choice(pool) for _ in range(k)]
        return group_specs(tasks, r.rollout.group_size, "train", iteration, r.seed)

    def collect(self, run_id: int, it: int) -> tuple[list[EpisodeRecord], RolloutStats, float]:
        """Iteration `it`'s train episodes (those stored already, the rest rolled out): (episodes,
        stats, wall seconds). With `train.max_staleness` > 0 this runs in the rollout thread, holding
        the engine; the newest published weights are applied first (`publish`)."""
        t0 = time.perf_counter()
        with self._engine_lock:
            self._apply_published()
            stored = q.episodes(self.store, run_id, iteration=it, split="train", with_steps=True)
            recs, stats = self._rollout(self.policy, self.train_specs(it), run_id, stored, f"rollout {it}")
        return recs, stats, time.perf_counter() - t0

    def publish(self, version: int, changed: bool) -> float:
        """After update `version`: a snapshot of the learner's weights for the engine, applied before
        the next rollout starts (never under a running one). Returns the seconds the snapshot took."""
        t0 = time.perf_counter()
        self._published = (self.engine.export(self.model) if changed else None, version)
        return time.perf_counter() - t0

    def _apply_published(self) -> None:
        if self._published is None:
            return
        payload, version = self._published
        self._published = None
        if payload is None:  # no update: the weights the engine has are those of `version` too
            self.engine.weights_version = version
        else:
            self.engine.apply_weights(payload, version)

    def iteration(self, run_id: int, it: int, collected=None) -> IterationResult:
        r = self.recipe
        method, provider = self.credit
        wall = Timings()
        seed_iteration(r.seed, it)  # every global RNG (dropout, learned parts) from (seed, iteration)
        if collected is None:  # synchronous: roll out now, with the weights of update it - 1
            collected = self.collect(run_id, it)
        recs, stats, wall.rollout = collected  # else rolled out ahead, in the rollout thread

        t0 = time.perf_counter()
        recs = [e for e in recs if e.status != "error"]
        signal_metrics: dict = {}
        if provider is not None:  # fills step.info["signals"] / episode.info["signals"]
            signal_metrics.update(provider.compute(recs))
        wall.signals = time.perf_counter() - t0
        t0 = time.perf_counter()
        advs = method.advantages(credit_episodes(recs))
        rows = [(s.id, a, dict(s.info.get("signals", {}))) for e, adv in zip(recs, advs) for s, a in zip(e.steps, adv)]
        self.store.write_advantages(r.credit.method, rows)
        wall.credit = time.perf_counter() - t0

        t0 = time.perf_counter()
        lc = r.learner
        drop = lc.drop_zero_advantage and lc.kl_coef == 0 and lc.entropy_coef == 0
        samples = episode_samples(recs, advs, self.tokenizer, r.rollout.action_mode, drop_zero=drop)
        lm = self.learner.update(samples) if samples else {}
        update = UpdateMetrics({k: float(v) for k, v in lm.items()}, len({s.episode for s in samples}))
        wall.update = time.perf_counter() - t0
        if provider is not None:  # train the learned part on this batch (after its signals were used)
            t0 = time.perf_counter()
            signal_metrics.update(provider.update(recs))
            wall.signals_update = time.perf_counter() - t0
        if self.ahead:  # applied by the rollout thread before its next rollout
            wall.weights_sync = self.publish(it, changed=bool(samples))
        elif samples:
            wall.weights_sync = self.sync_weights(it)
        else:  # no update: the weights the engine has are those after iteration `it` too
            self.engine.weights_version = it

        success, ret, length = episode_means(recs)
        rollout = RolloutMetrics(
            success,
            ret,
            length,
            len(recs),
            stats.errors,
            stats.generated_tokens / stats.policy_s if stats.policy_s else 0.0,
            stats.dropped_turns,
        )
        stale = [e.info.get("staleness", 0) for e in recs]
        if self.ahead and stale:  # updates between the weights that played an episode and the learner's
            signal_metrics.update(staleness_mean=sum(stale) / len(stale), staleness_max=max(stale))
        return IterationResult(rollout, update, {k: float(v) for k, v in signal_metrics.items()}, wall)

    def sync_weights(self, version: int) -> float:
        """The engine generates with the learner's current weights from now on, as weights version
        `version` (the number of updates they have had; stored with every episode). Returns seconds."""
        return self.engine.load_weights(self.model, version)  # hf: runs self.model itself, records the version

    def model_card(self, metrics: dict) -> ModelCard:
        base, note = base_model_reference(self.recipe.model.path)
        return ModelCard(
            base, note, recipe_to_yaml(self.recipe), {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        )

    # -- the loop --------------------------------------------------------------------------
    def run(self, run_id: int, start: int, history: list[dict]) -> TrainSummary:
        r = self.recipe
        t_start = time.perf_counter()
        ckpt_root = Path(r.train.output_dir) / f"{r.name}-{run_id}"
        before = next((h["metrics"].get("eval_success") for h in history if h["index"] == 0), None)
        how = " (rollout.engine: auto)" if r.rollout.engine == "auto" else ""
        self.console.print(f"rollout engine: {self.engine.name}{how}", markup=False, highlight=False)
        if start == 1 and before is None:
            ev = self.evaluate(run_id, 0)
            self.store.add_iteration(run_id, 0, ev.as_dict(), {"eval": ev.wall_s})
            self.trackers.log_iteration(self.store, run_id, 0, ev.as_dict(), {"eval": ev.wall_s})
            before = ev.success
            self.console.print(
                f"held-out success before training: {fmt_rate(round(before * ev.episodes), ev.episodes)} "
                f"({ev.episodes} episodes)",
                markup=False,
                highlight=False,
            )
        table = _IterationPrinter(self.console)
        # train.max_staleness > 0: one rollout thread runs up to that many iterations ahead of the
        # learner; rollout j is queued once update j - 1 - max_staleness is published, so its weights
        # are at most max_staleness updates old
        rollouts = ThreadPoolExecutor(1, thread_name_prefix="agentrl-rollout") if self.ahead else None
        queued: dict[int, Future] = {}
        try:
            for it in range(start, r.train.iterations + 1):
                t0 = time.perf_counter()
                if rollouts is not None:
                    for j in range(it, min(it + self.ahead, r.train.iterations) + 1):
                        if j not in queued:
                            queued[j] = rollouts.submit(self.collect, run_id, j)
                    res = self.iteration(run_id, it, queued.pop(it).result())
                else:
                    res = self.iteration(run_id, it)
                self._finish_iteration(run_id, it, res, t0, ckpt_root, table)
        except BaseException:
            if rollouts is not None:  # end the rollout thread at its next turn boundary
                request_stop()
            raise
        finally:
            if rollouts is not None:
                rollouts.shutdown(wait=True, cancel_futures=True)
        return train_summary(self.store, run_id, r.train.iterations, time.perf_counter() - t_start)

    def _finish_iteration(self, run_id, it, res, t0, ckpt_root, table) -> None:
        """Checkpoint, eval when due, store and print the iteration."""
        r = self.recipe
        provider = self.credit.provider
        last = it == r.train.iterations
        if it % r.train.checkpoint_every == 0 or last:
            t1 = time.perf_counter()
            metrics = res.metrics()  # without this iteration's eval, which comes after the checkpoint
            path = save_checkpoint(
                ckpt_root / f"iter-{it:04d}",
                self.model,
                self.learner.optimizer,
                self.learner.scheduler,
                it,
                extra={"run_id": run_id},
                extra_state_dicts=provider.state_dict() if provider is not None else None,
                card=self.model_card(metrics),
            )
            self.store.add_checkpoint(run_id, it, str(path), metrics)
            res.wall.checkpoint = time.perf_counter() - t1
        if last or (r.train.eval_every and it % r.train.eval_every == 0):
            res.eval = self.evaluate(run_id, it)
            res.wall.eval = res.eval.wall_s
        res.wall.total = time.perf_counter() - t0
        metrics, wall = res.metrics(), res.wall.as_dict()
        self.store.add_iteration(run_id, it, metrics, wall)
        self.trackers.log_iteration(self.store, run_id, it, metrics, wall)
        table.row(it, metrics, wall)


def _compact(v: float, width: int, rate: bool = False) -> str:
    """A number in at most `width` characters where possible: 3, 2, then 1 significant digits,
    exponents without '+' and leading zeros (1.2e-5); rates (tokens/s) as integers first."""
    tries = ([f"{v:.0f}"] if rate else []) + [f"{v:.{d}g}" for d in (3, 2, 1)]
    tries = [t.replace("e+0", "e").replace("e-0", "e-").replace("e+", "e") for t in tries]
    return next((t for t in tries if len(t) <= width), min(tries, key=len))


def _seconds(x: float) -> str:
    """A phase's wall time in at most 4 characters: 59s, 17m, 3h."""
    if x < 999.5:
        return f"{x:.0f}s"
    if x < 59_940:
        return f"{x / 60:.0f}m"
    return f"{x / 3600:.0f}h"


class _IterationPrinter:
    """One line per training iteration, at most 100 columns: success %, mean return and length,
    the update's loss / approx. KL / clip fraction / entropy / gradient norm, tokens per second
    generating (gen/s) and learning (learn/s), held-out success when the iteration had an eval,
    and the wall time of rollout / update / eval. No 95% intervals here (they would not fit the
    100 columns): the training summary, `agentrl runs` and `agentrl plot` show them."""

    # header, metric key, width, kind (pct | num | rate)
    COLS = [
        ("iter", None, 4, ""),
        ("success", "success", 7, "pct"),
        ("return", "return", 7, "num"),
        ("len", "length", 4, "num"),
        ("loss", "loss", 7, "num"),
        ("kl", "kl", 7, "num"),
        ("clip", "clip_frac", 6, "pct"),
        ("entropy", "entropy", 7, "num"),
        ("gnorm", "grad_norm", 6, "num"),
        ("gen/s", "rollout_tokens_per_s", 6, "rate"),
        ("learn/s", "tokens_per_s", 7, "rate"),
        ("eval", "eval_success", 6, "pct"),
    ]

    def __init__(self, console: Console):
        self.console = console
        self.console.print(
            " ".join(f"{c:>{w}}" for c, _, w, _ in self.COLS) + " wall r/u/e", markup=False, highlight=False
        )

    def row(self, it: int, m: dict, wall: dict) -> None:
        cells = [f"{it:>4}"]
        for _, key, width, kind in self.COLS[1:]:
            v = m.get(key)
            if v is None:
                text = "-"
            elif kind == "pct":
                text = f"{100 * v:.1f}%"
            else:
                text = _compact(float(v), width, rate=kind == "rate")
            cells.append(f"{text:>{width}}")
        w = "/".join(_seconds(wall.get(k, 0)) for k in ("rollout", "update", "eval"))
        self.console.print(" ".join(cells) + f" {w}", markup=False, highlight=False)
        if "mismatch_abs" in m:  # the learner recomputed the engine's log-probs (learner.old_logprobs)
            self.console.print(
                f"{'':>4} engine vs learner: mean |dlogp| {_compact(m['mismatch_abs'], 7)}, "
                f"KL {_compact(m['mismatch_kl'], 7)}, TIS-capped {100 * m['tis_clip_frac']:.1f}% of tokens"
                + (f", weights sync {wall['weights_sync']:.1f}s" if "weights_sync" in wall else ""),
                markup=False,
                highlight=False,
            )
        if "staleness_mean" in m:  # train.max_staleness > 0: how old the weights that played were
            self.console.print(
                f"{'':>4} staleness: mean {m['staleness_mean']:.2f}, max {m['staleness_max']:.0f} updates",
                markup=False,
                highlight=False,
            )


def run_train(
    recipe: Recipe | None,
    store: Store,
    resume: str | None = None,
    overrides=(),
    console: Console | None = None,
    show_progress: bool = True,
) -> TrainSummary:
    console = console or Console(stderr=True)
    reset_warnings()  # each distinct warning (e.g. an env's) once per run
    if resume is not None:
        run = q.get_run(store, resume, kind="train")
        if run.kind != "train":
            hint = f"; resume it with: agentrl sft --resume {run.id}" if run.kind == "sft" else ""
            raise UserError(f"run {run.id} is an {run.kind} run, not a training run{hint}")
        recipe = recipe_from_dict(yaml.safe_load(run.recipe), overrides, source=f"run {run.id}")
        cps = q.checkpoints(store, run.id)
        done = checkpoint_iteration(cps[-1]["path"]) if cps else 0  # checked before a model is loaded
        if done >= recipe.train.iterations:
            raise UserError(
                f"run {run.id} already finished its {recipe.train.iterations} iterations "
                f"(raise train.iterations to continue, e.g. --set train.iterations={done + 1})"
            )
        trainer = Trainer(recipe, store, console, show_progress)
        start = 1
        if not cps and recipe.train.init_from:  # stopped before its first checkpoint: warm-start again
            _print_warm_start(console, trainer.warm_start(recipe.train.init_from))
        if cps:
            loaded = load_checkpoint(
                cps[-1]["path"], trainer.model, trainer.learner.optimizer, trainer.learner.scheduler
            )
            start = loaded.iteration + 1
            trainer.sync_weights(loaded.iteration)
            if trainer.credit.provider is not None:
                trainer.credit.provider.load_state_dict(loaded.extra_state_dicts)
            console.print(f"resuming run {run.id} after checkpoint {loaded.iteration}")
        run_id = run.id
        store.set_run_status(run_id, "running")
    else:
        assert recipe is not None
        trainer = Trainer(recipe, store, console, show_progress)
        if recipe.train.init_from:  # before the run exists: a bad reference writes nothing
            try:
                _print_warm_start(console, trainer.warm_start(recipe.train.init_from))
            except BaseException:
                trainer.close()
                raise
        run_id = store.create_run(recipe.name, recipe_to_yaml(recipe), kind="train")
        start = 1
    outcome = RunOutcome()  # the trackers' run status too
    try:
        with stored_run(store, run_id, f"interrupted; resume with: agentrl train --resume {run_id}", outcome):
            # the same tracker runs again on --resume where the tracker can (agentrl/trackers/)
            trainer.trackers.start(
                run_id, f"{recipe.name}-{run_id}", recipe.model_dump(mode="json"), start if resume else None
            )
            summary = trainer.run(run_id, start, q.iterations(store, run_id))
    finally:
        trainer.trackers.finish(outcome.status)
        trainer.close()
    return summary


def _print_warm_start(console: Console, what: str) -> None:
    console.print(f"starting from the adapter of {what} (train.init_from)", markup=False, highlight=False)


def train_summary(store: Store, run_id: int, iterations: int, wall_s: float) -> TrainSummary:
    """The run's held-out success before training and at its last eval, read from the store, with
    the per-task change before -> after paired by task (paired bootstrap)."""
    counts = q.eval_counts(store, run_id)  # iteration -> (episodes, won)
    last = max((i for i in counts if i > 0), default=None)
    bn, bwon = counts.get(0, (0, 0))
    an, awon = counts[last] if last is not None else (0, 0)
    diffs = q.eval_change_by_task(store, run_id)
    return TrainSummary(
        run_id,
        iterations,
        bwon / bn if bn else None,
        awon / an if an else None,
        wall_s,
        bwon,
        bn,
        awon,
        an,
        paired_bootstrap(diffs) if diffs else None,
        len(diffs),
    )


def _change(s: TrainSummary) -> str:
    """'+12.5 pts [3.1, 21.9]': after minus before, with the paired interval when there is one."""
    if s.eval_before is None or s.eval_after is None:
        return "-"
    text = f"{100 * (s.eval_after - s.eval_before):+.1f} pts"
    if s.change is not None:
        text += f" [{100 * s.change[1]:+.1f}, {100 * s.change[2]:+.1f}]"
    return text


def summary_table(s: TrainSummary, kind: str = "training run") -> Table:
    how = f"paired bootstrap over {s.paired_tasks} tasks" if s.change is not None else "none (no task in both evals)"
    t = Table(
        title=f"{kind} {s.run_id}: held-out success",
        caption=Text(f"95% intervals: Wilson; change: {how}"),
    )
    for c in ("before", "after", "change", "iterations", "wall"):
        t.add_column(c, justify="right")
    t.add_row(
        Text(fmt_rate(s.before_won, s.before_n)),
        Text(fmt_rate(s.after_won, s.after_n)),
        Text(_change(s)),
        str(s.iterations),
        f"{s.wall_s / 60:.1f} min",
    )
    return t
