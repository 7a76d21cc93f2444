"""`agentrl sft`: supervised fine-tuning of the LoRA policy on stored episodes (a warm start for RL).

The recipe's `sft.from` selects the demonstrations: episodes of some runs (expert play, the won
episodes of any run), from this database or another. Each selected episode is rendered turn by
turn as the LLM policy under this recipe would be prompted for it (`agentrl.policy.teacher`), and
the adapter learns the demonstrated actions (`agentrl.learner.sft`: NLL of the action tokens).

A run of kind `sft`, with a training run's guarantees: held-out greedy eval before (iteration 0)
and after the last epoch, a checkpoint after every epoch (iteration N = epoch N), every epoch's
metrics in the store, `--resume` after a crash or SIGKILL redoes what came after the last
checkpoint (the demonstrations are the episode ids recorded at the first checkpoint, and each
epoch draws its order from (seed, epoch)). Its checkpoints are used like a training run's:
`eval --run`, `replay --policy`, and `train.init_from: RUN[:N]` to start RL from them.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import yaml
from rich.console import Console

from agentrl.command import stored_run
from agentrl.config import Recipe, RolloutConfig, SFTSource, recipe_from_dict, recipe_to_yaml
from agentrl.envs.suites import env_options
from agentrl.errors import UserError, reset_warnings
from agentrl.learner.checkpoint import checkpoint_extra, load_checkpoint, save_checkpoint
from agentrl.learner.sft import SFTLearner, demo_samples
from agentrl.policy.teacher import demonstrations
from agentrl.stats import fmt_rate
from agentrl.store import queries as q
from agentrl.store.db import Store, open_store
from agentrl.store.export_sft import rollout_of_run
from agentrl.store.records import EpisodeRecord
from agentrl.train import Trainer, TrainSummary, _print_warm_start, seed_iteration, train_summary


def _policy_matches(episode_policy: str, wanted: str | None) -> bool:
    """`wanted` None = any; "llm" = any LLM policy (`llm:<model>...`); else the exact name."""
    if wanted is None:
        return True
    if wanted == "llm":
        return episode_policy.startswith("llm:")
    return episode_policy == wanted


def select_demonstrations(
    store: Store, source: SFTSource, ids: list[int] | None = None
) -> list[tuple[EpisodeRecord, RolloutConfig]]:
    """The episodes `source` selects, each with the rollout config of the run that played it: the
    runs in the order given, each run's episodes by id; errored episodes left out. `ids`: exactly
    these episodes (a resumed run's recorded selection). UserError for a missing run or an empty
    selection."""
    src = open_store(source.db, create=False, readonly=True) if source.db else store
    out: list[tuple[EpisodeRecord, RolloutConfig]] = []
    keep = set(ids) if ids is not None else None
    for ref in source.runs:
        run = q.get_run(src, ref)
        cfg = rollout_of_run(run)
        won = True if source.won_only else None
        for page in q.iter_episodes(src, run.id, split=source.split, won=won, with_steps=True):
            for ep in page:
                if keep is not None:
                    if ep.id in keep:
                        out.append((ep, cfg))
                elif ep.status != "error" and ep.steps and _policy_matches(ep.policy, source.policy):
                    out.append((ep, cfg))
    if keep is None and source.max_episodes is not None:
        out = out[: source.max_episodes]
    if keep is not None and len(out) != len(keep):
        raise UserError(
            f"the demonstrations this run recorded are gone: {len(keep) - len(out)} of {len(keep)} "
            f"episodes no longer in {src.path}"
        )
    if not out:
        what = f"split {source.split}" if source.split else "any split"
        raise UserError(
            f"sft.from selects no episodes: runs {', '.join(source.runs)}, {what}"
            + (", won only" if source.won_only else "")
            + (f", policy {source.policy}" if source.policy else "")
        )
    return out


def _print(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False)


def run_sft(
    recipe: Recipe | None,
    store: Store,
    resume: str | None = None,
    overrides=(),
    console: Console | None = None,
    show_progress: bool = True,
) -> TrainSummary:
    console = console or Console(stderr=True)
    reset_warnings()  # each distinct warning (e.g. an env's) once per run
    demo_ids: list[int] | None = None
    cps: list[dict] = []
    if resume is not None:
        run = q.get_run(store, resume, kind="sft")
        recipe = recipe_from_dict(yaml.safe_load(run.recipe), overrides, source=f"run {run.id}")
        cps = q.checkpoints(store, run.id)
        if cps:
            demo_ids = checkpoint_extra(cps[-1]["path"]).get("demo_episodes")
    assert recipe is not None
    if recipe.sft is None:
        raise UserError("the recipe has no `sft:` section (sft.from names the runs whose episodes to learn from)")
    cfg = recipe.sft
    if resume is not None and cps and cps[-1]["iteration"] >= cfg.epochs:
        raise UserError(
            f"run {run.id} already finished its {cfg.epochs} epochs (raise sft.epochs to continue, "
            f"e.g. --set sft.epochs={cfg.epochs + 1})"
        )
    selected = select_demonstrations(store, cfg.source, demo_ids)  # before a model is loaded
    trainer = Trainer(recipe, store, console, show_progress)
    try:
        demos = [  # a demonstration's episode index: the episode's position in the selection
            replace(d, episode=i)
            for i, (ep, src_cfg) in enumerate(selected)
            for d in demonstrations([ep], trainer.tokenizer, recipe.rollout, src_cfg, env_options(recipe.env))
        ]
        samples = demo_samples(demos)
        if not samples:
            raise UserError("the selected episodes hold no valid action to learn from")
        learner = SFTLearner(trainer.model, recipe.learner, cfg.lr, trainer.learner.compute_dtype)
        if resume is not None:
            run_id, start = run.id, 1
            if cps:
                loaded = load_checkpoint(cps[-1]["path"], trainer.model, learner.optimizer, learner.scheduler)
                start = loaded.iteration + 1
                trainer.sync_weights(loaded.iteration)
                _print(console, f"resuming run {run_id} after epoch {loaded.iteration}")
            elif recipe.train.init_from:
                _print_warm_start(console, trainer.warm_start(recipe.train.init_from))
            store.set_run_status(run_id, "running")
        else:
            if recipe.train.init_from:
                _print_warm_start(console, trainer.warm_start(recipe.train.init_from))
            run_id, start = store.create_run(recipe.name, recipe_to_yaml(recipe), kind="sft"), 1
    except BaseException:
        trainer.close()
        raise
    ids = [ep.id for ep, _ in selected]
    _print(
        console,
        f"sft: {len(samples)} demonstrated turns from {len(selected)} episodes "
        f"({sum(len(s.action_ids) for s in samples)} action tokens), {cfg.epochs} epochs",
    )
    try:
        with stored_run(store, run_id, f"interrupted; resume with: agentrl sft --resume {run_id}"):
            summary = _epochs(trainer, learner, samples, ids, run_id, start)
    finally:
        trainer.close()
    return summary


def _epochs(trainer: Trainer, learner: SFTLearner, samples, demo_ids: list[int], run_id: int, start: int):
    r = trainer.recipe
    cfg = r.sft
    store = trainer.store
    t_start = time.perf_counter()
    if start == 1 and 0 not in q.eval_counts(store, run_id):
        ev = trainer.evaluate(run_id, 0)
        store.add_iteration(run_id, 0, ev.as_dict(), {"eval": ev.wall_s})
        _print(trainer.console, f"held-out success before: {fmt_rate(round(ev.success * ev.episodes), ev.episodes)}")
    root = Path(r.train.output_dir) / f"{r.name}-{run_id}"
    for epoch in range(start, cfg.epochs + 1):
        seed_iteration(r.seed, epoch)
        t0 = time.perf_counter()
        m = learner.epoch(samples, seed=r.seed * 1_000_003 + epoch)
        m["demos"] = len(samples)
        wall = {"update": time.perf_counter() - t0}
        wall["weights_sync"] = trainer.sync_weights(epoch)
        t1 = time.perf_counter()
        path = save_checkpoint(
            root / f"iter-{epoch:04d}",
            trainer.model,
            learner.optimizer,
            learner.scheduler,
            epoch,
            extra={"run_id": run_id, "demo_episodes": demo_ids},
            card=trainer.model_card(m),
        )
        store.add_checkpoint(run_id, epoch, str(path), m)
        wall["checkpoint"] = time.perf_counter() - t1
        line = f"epoch {epoch}: loss {m['loss']:.4f}, action p {m['action_prob']:.3f}, {m['steps']} steps"
        if epoch == cfg.epochs or (cfg.eval_every and epoch % cfg.eval_every == 0):
            ev = trainer.evaluate(run_id, epoch)
            m.update(ev.as_dict())
            wall["eval"] = ev.wall_s
            line += f", held-out {fmt_rate(round(ev.success * ev.episodes), ev.episodes)}"
        wall["total"] = time.perf_counter() - t0
        store.add_iteration(run_id, epoch, m, wall)
        _print(trainer.console, line + f" ({wall['total']:.0f}s)")
    return train_summary(store, run_id, cfg.epochs, time.perf_counter() - t_start)
