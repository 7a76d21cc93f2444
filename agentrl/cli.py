"""The `agentrl` command line (ARCHITECTURE.md §8). Thin: parse, call, print.

Exit codes: 0 ok, 1 failure during work, 2 usage or input error. Errors a user can
cause print one line; set AGENTRL_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import json
import os
import sys
from functools import wraps

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agentrl.errors import AgentRLError, UserError


class _OutputClosed(BrokenPipeError):
    """The reader of our output went away (`agentrl export 1 | head`)."""


def _lit(text) -> str:
    """User and model text (run names, observations, actions, generations, errors, task ids) for
    a rich string: printed as it is, never read as markup ('[/INST]', '[red]')."""
    return escape("" if text is None else str(text))


def _output_closed() -> None:  # rich calls this on a BrokenPipeError; main() ends quietly
    raise _OutputClosed


class _PipeBroke(Exception):
    """A BrokenPipeError carried past click, which would turn it into a silent exit 1."""


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError as e:
            raise _PipeBroke(e) from e


out = Console(emoji=False)  # emoji=False: ':smile:' in an observation is printed as it is
err = Console(stderr=True, emoji=False)
for _c in (out, err):
    if not _c.is_terminal:  # piped or captured: wide enough that tables and metric lines stay unwrapped
        _c.width = max(_c.width, 160)
    _c.on_broken_pipe = _output_closed


def _db_option(f):
    @click.option(
        "--db",
        "db",
        default=None,
        envvar="AGENTRL_DB",
        show_envvar=True,
        help="Path of the runs database (default ./runs.db).",
    )
    @wraps(f)
    def wrapper(*args, db=None, **kwargs):
        from agentrl.store.db import default_db_path

        return f(*args, db=db or default_db_path(), **kwargs)

    return wrapper


def _json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)


def _print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


@click.group(cls=_Group)
@click.version_option(package_name="agentrl")
def cli() -> None:
    """agentrl: reinforcement learning for LLM agents in multi-turn text environments."""


# -- eval ----------------------------------------------------------------------------------
@cli.command("eval", short_help="Evaluate a policy; every turn is stored.")
@click.argument("recipe", required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key (repeatable).")
@click.option("--episodes", type=click.IntRange(min=1), default=None, help="Number of eval episodes.")
@click.option("--run", "run_ref", default=None, help="Evaluate a training run's checkpoint instead of a recipe.")
@click.option("--checkpoint", type=int, default=None, help="With --run: the checkpoint iteration (default last).")
@click.option(
    "--split",
    type=click.Choice(["eval", "train"]),
    default="eval",
    show_default=True,
    help="The suite's split to play (train: e.g. expert demonstrations for `agentrl sft`).",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_db_option
@_json_option
def eval_cmd(recipe, overrides, episodes, run_ref, checkpoint, split, no_progress, db, as_json):
    """Evaluate a policy on a suite's eval split (or its train split); every turn is stored."""
    from agentrl.config import load_recipe
    from agentrl.evaluate import run_eval
    from agentrl.stats import fmt_rate, wilson
    from agentrl.store.db import open_store

    adapter, parent = None, None
    if run_ref is not None:
        from agentrl.command import resolve_checkpoint

        store = open_store(db, create=False)
        rec, adapter, parent = resolve_checkpoint(store, run_ref, checkpoint, overrides)
    else:
        if recipe is None:
            raise UserError("give a RECIPE or --run RUN")
        rec = load_recipe(recipe, overrides)
        store = open_store(db)
    summary = run_eval(
        rec,
        store,
        episodes=episodes,
        adapter_path=adapter,
        parent_run_id=parent,
        console=err,
        show_progress=not no_progress and not as_json,
        split=split,
    )
    if as_json:
        _print_json({**summary.as_dict(), "success_ci": list(wilson(summary.won, summary.episodes))})
        return
    t = Table(title=f"eval run {summary.run_id}: {_lit(rec.name)} on {_lit(rec.env.suite)}")
    for col in (
        "policy",
        "episodes",
        "success (95% CI)",
        "mean return",
        "mean length",
        "errors",
        "truncated",
        "steps/s",
        "wall",
    ):
        t.add_column(col, justify="right" if col != "policy" else "left")
    t.add_row(
        _lit(summary.policy),
        str(summary.episodes),
        _lit(fmt_rate(summary.won, summary.episodes)),
        f"{summary.mean_return:.3f}",
        f"{summary.mean_length:.1f}",
        str(summary.errors),
        str(summary.truncated),
        f"{summary.steps_per_s:.1f}",
        f"{summary.wall_s:.1f}s",
    )
    out.print(t)


# -- train ---------------------------------------------------------------------------------
def _train_options(resume_help: str):
    """The arguments `train` and `sft` share: RECIPE, --set, --resume, --no-progress, --db."""

    def wrap(f):
        for option in reversed(
            (
                click.argument("recipe", required=False),
                click.option(
                    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key (repeatable)."
                ),
                click.option("--resume", "resume", default=None, metavar="RUN", help=resume_help),
                click.option("--no-progress", is_flag=True, help="Hide progress bars."),
                _db_option,
            )
        ):
            f = option(f)
        return f

    return wrap


@cli.command("train", short_help="Train a LoRA policy with PPO.")
@_train_options("Continue a run from its last checkpoint.")
def train_cmd(recipe, overrides, resume, no_progress, db):
    """Train a LoRA policy with PPO on a suite's train split; every turn is stored."""
    from agentrl.train import run_train

    _train_like(run_train, "training run", recipe, overrides, resume, no_progress, db)


def _train_like(run, kind: str, recipe, overrides, resume, no_progress, db) -> None:
    """`train` and `sft`: a RECIPE or --resume RUN, the run, its summary table."""
    from agentrl.config import load_recipe
    from agentrl.store.db import open_store
    from agentrl.train import summary_table

    if resume is None and recipe is None:
        raise UserError("give a RECIPE or --resume RUN")
    if resume is not None and recipe is not None:
        raise UserError(
            "give a RECIPE or --resume RUN, not both (a resumed run uses its stored recipe; change it with --set)"
        )
    rec = load_recipe(recipe, overrides) if resume is None else None
    store = open_store(db, create=resume is None)
    summary = run(
        rec, store, resume=resume, overrides=overrides if resume else (), console=err, show_progress=not no_progress
    )
    out.print(summary_table(summary, kind))


# -- sft -----------------------------------------------------------------------------------
@cli.command("sft", short_help="Fine-tune the LoRA policy on stored episodes (warm start).")
@_train_options("Continue an sft run from its last checkpoint.")
def sft_cmd(recipe, overrides, resume, no_progress, db):
    """Supervised fine-tuning on the episodes the recipe's `sft.from` selects (e.g. expert play),
    rendered as the policy is prompted; start RL from it with `train.init_from: RUN`."""
    from agentrl.sft import run_sft

    _train_like(run_sft, "sft run", recipe, overrides, resume, no_progress, db)


# -- runs ----------------------------------------------------------------------------------
@cli.command("runs")
@_db_option
@_json_option
def runs_cmd(db, as_json):
    """List runs in the database."""
    from agentrl.stats import fmt_rate
    from agentrl.store.db import open_store
    from agentrl.store.queries import list_runs

    rows = list_runs(open_store(db, create=False, readonly=True))
    if as_json:
        _print_json(rows)
        return
    t = Table(title=f"runs in {_lit(str(db))}")
    for col in ("id", "name", "kind", "status", "created", "episodes", "eval success (95% CI)", "last iter"):
        t.add_column(col)
    for r in rows:
        # a training run: held-out success before -> after training (its last eval); an eval run: its success
        success = fmt_rate(r["eval_won"], r["eval_episodes"])
        if r["kind"] == "train":
            success = f"{_pct(r['eval_before'])} → {success}"
        t.add_row(
            str(r["id"]),
            _lit(r["name"]),
            _lit(r["kind"]),
            r["status"],
            r["created_at"],
            str(r["episodes"]),
            _lit(success),
            "-" if r["last_iteration"] is None else str(r["last_iteration"]),
        )
    out.print(t)


# -- inspect -------------------------------------------------------------------------------
def _short(text: str, n: int = 160) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


@cli.command("inspect", short_help="Show a run's episodes or one episode.")
@click.argument("run_ref", required=False)
@click.option("--episode", "episode_id", default=None, help="Show one episode turn by turn.")
@click.option("--iteration", type=int, default=None, help="Only episodes of this iteration.")
@click.option("--failed", is_flag=True, help="Only episodes that were not won.")
@click.option(
    "--split",
    type=click.Choice(["train", "eval"]),
    default=None,
    help="Only episodes of this split: train (training rollouts) or eval (held-out evaluations).",
)
@click.option("--full", is_flag=True, help="Do not shorten observations.")
@click.option("--credit", is_flag=True, help="Summarise credit assignment per training iteration.")
@_db_option
@_json_option
def inspect_cmd(run_ref, episode_id, iteration, failed, split, full, credit, db, as_json):
    """Show a run's episodes, or one episode's transcript with --episode."""
    from agentrl.stats import fmt_rate
    from agentrl.store import queries as q
    from agentrl.store.db import open_store

    store = open_store(db, create=False, readonly=True)
    if episode_id is not None:
        ep = q.get_episode(store, episode_id)
        advs = q.advantages_for_episode(store, ep.id)
        if as_json:
            data = _episode_json(ep)
            for st in data["steps"]:
                st["advantages"] = advs.get(st["id"], [])
            _print_json(data)
            return
        _print_episode(ep, advs, full)
        return
    if run_ref is None:
        raise UserError("give a RUN (see `agentrl runs`) or --episode ID")
    run = q.get_run(store, run_ref, kind="train" if credit else None)
    if credit:
        rows = q.credit_summary(store, run.id)
        if as_json:
            _print_json(rows)
            return
        if not rows:
            raise UserError(f"run {run.id} has no stored advantages (only training runs have them)")
        keys = list(dict.fromkeys(k for r in rows for k in r if k not in ("iteration", "method")))
        methods = sorted({r["method"] for r in rows})
        several = len(methods) > 1  # advantages of another method written beside the run's: a row each
        t = Table(title=f"credit assignment in run {run.id} ({_lit(', '.join(methods))})")
        for col in ["iter", *(["method"] if several else []), *keys]:
            t.add_column(col, justify="right")
        for r in rows:
            t.add_row(
                str(r["iteration"]),
                *([_lit(r["method"])] if several else []),
                *[("-" if r.get(k) is None else (str(r[k]) if isinstance(r[k], int) else f"{r[k]:.4g}")) for k in keys],
            )
        out.print(t)
        return
    if iteration is not None:  # an iteration the run does not have is a mistake, not an empty table
        have = q.episode_iterations(store, run.id, split=split)
        if iteration not in have:
            what = f"{split} episodes" if split else "episodes"
            raise UserError(
                f"run {run.id} has no {what} at iteration {iteration} (iterations with {what}: "
                f"{', '.join(map(str, have)) or 'none'})"
            )
    eps = q.episodes(store, run.id, iteration=iteration, split=split, failed=failed)
    if as_json:
        _print_json([_episode_json(e, steps=False) for e in eps])
        return
    t = Table(title=f"run {run.id} ({_lit(run.name)}, {q.display_status(run)}): {len(eps)} episodes")
    for col in ("episode", "iter", "split", "task", "status", "won", "return", "length"):
        t.add_column(col)
    for e in eps:
        t.add_row(
            str(e.id),
            str(e.iteration),
            _lit(e.split),
            _lit(e.task_id),
            _lit(e.status),
            "yes" if e.won else "no",
            f"{e.ret:.2f}",
            str(e.info.get("length", len(e.steps))),
        )
    out.print(t)
    n = len(eps)
    if n:
        won = sum(e.won for e in eps)
        out.print(
            f"success {won}/{n} ({fmt_rate(won, n)}), mean return {sum(e.ret for e in eps) / n:.3f}",
            markup=False,
            highlight=False,
        )


def _episode_json(ep, steps: bool = True) -> dict:
    from dataclasses import asdict

    d = asdict(ep)
    d["length"] = len(ep.steps) if steps else ep.info.get("length")
    if not steps:
        d.pop("steps")
    return d


def _print_episode(ep, advs: dict, full: bool) -> None:
    n = None if full else 300
    out.print(
        f"[bold]episode {ep.id}[/] run {ep.info.get('run_id')} · {_lit(ep.split)} · iteration {ep.iteration} · "
        f"task {_lit(ep.task_id)} · group {_lit(ep.group_id)} · policy {_lit(ep.policy)}"
    )
    out.print(f"goal: {_lit(ep.goal)}")
    t = Table(show_lines=True)
    for col in ("t", "observation", "adm.", "action", "generated", "reward", "return", "advantage"):
        t.add_column(col)
    cum = 0.0
    for st in ep.steps:
        cum += st.reward
        a = advs.get(st.id, [])
        adv = ", ".join(f"{x['method']} {x['value']:+.3f}" for x in a) or "-"
        sig = {k: v for x in a for k, v in (x.get("signals") or {}).items()}
        if sig:
            adv += "\n" + " ".join(f"{k}={v:.3g}" for k, v in sig.items())
        gen = "" if st.raw == st.action else _short(st.raw, 80)
        flag = "" if st.valid else " [red](invalid)[/]"
        obs = st.observation if full else _short(st.observation, n)
        t.add_row(
            str(st.t),
            _lit(obs),
            "-" if st.admissible is None else str(len(st.admissible)),
            _lit(st.action) + flag,
            _lit(gen),
            f"{st.reward:+.2f}",
            f"{cum:.2f}",
            adv,
        )
    out.print(t)
    final = ep.final_observation if full else _short(ep.final_observation, n)
    out.print(f"final observation: {_lit(final)}")
    status = f"status {ep.status}, {'won' if ep.won else 'not won'}, return {ep.ret:.2f}, length {len(ep.steps)}"
    if ep.error:
        status += f", error: {_lit(ep.error)}"
    out.print(status)


# -- replay --------------------------------------------------------------------------------
@cli.command("replay", short_help="Re-execute a stored episode and check it.")
@click.argument("episode_id", required=False)
@click.option(
    "--policy",
    "policy_ref",
    default=None,
    metavar="RUN[:N]",
    help="Let checkpoint N (default: last) of training run RUN continue the episode.",
)
@click.option(
    "--from-step",
    type=click.IntRange(min=0),
    default=None,
    help="With --policy: replay this many stored steps first (default 0).",
)
@click.option(
    "--failed",
    "failed_run",
    default=None,
    metavar="RUN",
    help="With --policy: retry every failed episode of RUN's final eval and count how many are now won.",
)
@click.option(
    "--iteration",
    "eval_iteration",
    type=int,
    default=None,
    help="With --failed: the eval of this iteration instead of the final one (0: before training).",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_db_option
@_json_option
def replay_cmd(episode_id, policy_ref, from_step, failed_run, eval_iteration, no_progress, db, as_json):
    """Re-execute a stored episode and check every observation and reward; or, with --policy,
    let a checkpoint continue stored episodes."""
    from agentrl.store.db import open_store

    if policy_ref is None and from_step is not None:
        raise UserError("--from-step needs --policy RUN[:N] (the checkpoint that continues after the replayed steps)")
    if policy_ref is None and failed_run is not None:
        raise UserError("--failed needs --policy RUN[:N] (the checkpoint that retries the failed episodes)")
    if eval_iteration is not None and failed_run is None:
        raise UserError("--iteration needs --failed RUN (it picks which of RUN's evals to retry)")
    store = open_store(db, create=False, readonly=policy_ref is None)  # --policy stores a new run
    if policy_ref is not None:
        _replay_with_policy(
            store, episode_id, policy_ref, from_step or 0, failed_run, eval_iteration, no_progress, as_json
        )
        return
    if episode_id is None:
        raise UserError("give an EPISODE_ID (and --policy RUN[:N] to let a checkpoint continue it)")
    from agentrl.replay import replay_episode

    report = replay_episode(store, episode_id)
    bad = report.first_divergence
    if as_json:
        from dataclasses import asdict

        _print_json(
            {
                "episode": report.episode_id,
                "task": report.task_id,
                "match": report.ok,
                "first_divergence": None if bad is None else asdict(bad),
                "steps": [asdict(s) for s in report.steps],
            }
        )
    else:
        t = Table(title=f"replay of episode {report.episode_id} ({_lit(report.task_id)})")
        for col in ("t", "action", "observation", "reward"):
            t.add_column(col)
        for s in report.steps:
            t.add_row(
                "reset" if s.t < 0 else str(s.t),
                _lit(s.action),
                "[green]match[/]" if s.obs_match else "[red]DIFFERS[/]",
                "[green]match[/]" if s.reward_match else f"[red]{s.stored_reward} vs {s.replay_reward}[/]",
            )
        out.print(t)
        if bad is None:
            out.print(f"[green]full match[/]: {len(report.steps) - 1} steps")
        else:
            where = "the reset observation" if bad.t < 0 else f"step {bad.t} (action '{_lit(bad.action)}')"
            out.print(f"[red]diverges at {where}[/]" + (f": {_lit(bad.error)}" if bad.error else ""))
            if not bad.obs_match:
                out.print(f"  stored:   {_lit(_short(bad.stored_obs, 300))}")
                out.print(f"  replayed: {_lit(_short(bad.replay_obs, 300))}")
    if bad is not None:
        sys.exit(1)


def _replay_with_policy(store, episode_id, policy_ref, from_step, failed_run, eval_iteration, no_progress, as_json):
    from dataclasses import asdict

    from agentrl import replay
    from agentrl.store import queries as q

    which = None  # with --failed: which eval of the run, in words
    if failed_run is not None:
        run = q.get_run(store, failed_run)
        evals = q.episode_iterations(store, run.id, split="eval")
        if not evals:
            raise UserError(f"run {run.id} has no eval episodes")
        if eval_iteration is None:
            eval_iteration = evals[-1]
            which = f"run {run.id}'s final eval (iteration {eval_iteration})"
        elif eval_iteration not in evals:
            raise UserError(
                f"run {run.id} has no eval at iteration {eval_iteration} "
                f"(iterations with eval episodes: {', '.join(map(str, evals))})"
            )
        else:
            which = f"run {run.id}'s eval at iteration {eval_iteration}"
        ids = [e.id for e in q.episodes(store, run.id, iteration=eval_iteration, split="eval", failed=True)]
        if not ids:
            raise UserError(f"{which} has no failed episodes")
        if not as_json:
            err.print(f"retrying the {len(ids)} failed episodes of {which}", markup=False, highlight=False)
    elif episode_id is not None:
        ids = [q.get_episode(store, episode_id).id]
    else:
        raise UserError("give an EPISODE_ID or --failed RUN")
    new_run, conts = replay.continue_episodes(
        store, ids, policy_ref, from_step, console=err, show_progress=not no_progress and not as_json
    )
    won = sum(c.won for c in conts)
    if as_json:
        _print_json(
            {
                "run": new_run,
                "episodes": len(conts),
                "now_won": won,
                "eval_run": run.id if failed_run is not None else None,
                "eval_iteration": eval_iteration if failed_run is not None else None,
                "continuations": [asdict(c) for c in conts],
            }
        )
        return
    t = Table(
        title=f"{_lit(policy_ref)} continues {len(conts)} episode(s) from step {from_step} (stored as run {new_run})"
    )
    for col in ("episode", "task", "was", "now", "length", "new episode"):
        t.add_column(col)
    for c in conts:
        t.add_row(
            str(c.episode_id),
            _lit(c.task_id),
            "won" if c.was_won else "lost",
            "[green]won[/]" if c.won else "lost",
            str(c.length),
            str(c.new_episode_id),
        )
    out.print(t)
    out.print(
        f"now won {won} of {len(conts)}" + (f" (the failed episodes of {which})" if which else ""),
        markup=False,
        highlight=False,
    )


# -- export --------------------------------------------------------------------------------
@cli.command("export", short_help="Export a run: jsonl, parquet or SFT chats.")
@click.argument("run_ref")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "parquet", "sft"]),
    default="jsonl",
    help="jsonl: a run header, then one JSON object per episode with everything stored (default); "
    "parquet: one row per step (needs -o FILE and the parquet extra); "
    "sft: one chat-messages record per policy turn (JSON lines) for supervised fine-tuning.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Output file (default stdout; parquet needs a file).",
)
@click.option("--iteration", type=int, default=None, help="Only episodes of this iteration.")
@click.option(
    "--split",
    type=click.Choice(["train", "eval"]),
    default=None,
    help="Only episodes of this split: train (training rollouts) or eval (held-out evaluations).",
)
@click.option("--won", is_flag=True, help="Only won episodes.")
@_db_option
def export_cmd(run_ref, fmt, output, iteration, split, won, db):
    """Export a run as JSON lines, Parquet or SFT chat records.

    jsonl: a run header (the recipe, the metrics of every iteration, the checkpoints), then every
    episode with its steps: token ids, log-probs, stored advantages and signals (fields in
    agentrl/store/export.py).

    parquet: one row per step with the run's and episode's fields repeated, one adv_<method>
    column per credit method (columns in agentrl/store/export_parquet.py).

    sft: one {"messages": [...]} record per policy turn: the prompt the policy saw at that turn
    as chat messages, ending with its action (rendering in agentrl/store/export_sft.py).

    --iteration, --split and --won select the episodes of every format."""
    from agentrl.store import queries as q
    from agentrl.store.db import open_store

    if fmt == "parquet":
        if output in (None, "-"):
            raise UserError("--format parquet needs an output file: -o FILE.parquet (it cannot go to stdout)")
        parent = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(parent):
            raise UserError(f"cannot write {output}: no directory {parent}")
        if not os.access(parent, os.W_OK):
            raise UserError(f"cannot write {output}: {parent} is not writable")
        from agentrl.store.export_parquet import require_pyarrow

        require_pyarrow()  # a missing extra is said before any work
    store = open_store(db, create=False, readonly=True)
    run = q.get_run(store, run_ref)
    sel = dict(iteration=iteration, split=split, won=True if won else None)
    if fmt == "parquet":
        from agentrl.store.export_parquet import export_parquet

        n_eps, n_rows = export_parquet(store, run, output, **sel)
        err.print(f"wrote {n_rows} steps of {n_eps} episodes to {output}", markup=False, highlight=False)
        return
    if fmt == "sft":
        from agentrl.store.export_sft import rollout_of_run

        rollout_of_run(run)  # a stored recipe it cannot read is said before the file is opened
    try:  # a missing or unwritable folder is an input error (exit 2), not an unexpected one
        f = click.open_file(output or "-", "w")
    except OSError as e:
        raise UserError(f"cannot write {output}: {e.strerror or e}") from None
    with f:
        if fmt == "sft":
            from agentrl.store.export_sft import export_sft

            n_eps, n_recs = export_sft(store, run, f, **sel)
            what = f"{n_recs} turns of {n_eps} episodes"
        else:
            from agentrl.store.export import export_jsonl

            what = f"{export_jsonl(store, run, f, **sel)} episodes"
    if output not in (None, "-"):
        err.print(f"wrote {what} to {output}", markup=False, highlight=False)


# -- plot ----------------------------------------------------------------------------------
@cli.command("plot", short_help="Plot per-iteration curves of runs.")
@click.argument("run_refs", nargs=-1, required=True)
@click.option("--output", "-o", default=None, help="PNG path (default <name>-<id>.png here).")
@_db_option
def plot_cmd(run_refs, output, db):
    """Plot success rate, return and loss per iteration (several runs: compared on one figure)."""
    from agentrl.plot import plot_run, plot_runs
    from agentrl.store.db import open_store

    store = open_store(db, create=False, readonly=True)
    path = plot_run(store, run_refs[0], output) if len(run_refs) == 1 else plot_runs(store, list(run_refs), output)
    out.print(f"wrote {path}", markup=False, highlight=False)


# -- compare -------------------------------------------------------------------------------
@cli.command("compare", short_help="Compare runs: held-out success per method, paired differences.")
@click.argument("run_refs", nargs=-1, required=True)
@click.option(
    "--baseline",
    default=None,
    metavar="RUN",
    help="The baseline: its method's runs (default: the first run's method).",
)
@click.option("--output", "-o", default=None, help="PNG path (default compare.png here).")
@_db_option
@_json_option
def compare_cmd(run_refs, baseline, output, db, as_json):
    """Held-out success of each run and of each method (mean over seeds, 95% intervals), and the
    difference of every method to the baseline's, paired by seed and task (bootstrap 95% interval);
    wall time and tokens per method. A table and a PNG."""
    from agentrl.compare import compare
    from agentrl.store.db import open_store

    store = open_store(db, create=False, readonly=True)
    compare(store, list(run_refs), baseline, output, as_json, out)


# -- view ----------------------------------------------------------------------------------
@cli.command("view", short_help="Browse runs in a local web app (read-only).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (default: local only).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free port).")
@_db_option
def view_cmd(host, port, db):
    """Serve a read-only web view of the database: runs and their curves, a run's episodes with
    filters and text search, one episode turn by turn with its advantages and signals, a group's
    episodes side by side with GiGPO's step groups. Works while a run writes; Ctrl-C stops it."""
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError("agentrl view needs the viewer extra: pip install 'agentrl[viewer]'") from None
    from agentrl.viewer.app import serve

    serve(db, host, port, echo=lambda line: click.echo(line) or sys.stdout.flush())


# -- envs ----------------------------------------------------------------------------------
@cli.group("envs", short_help="Environment suites and adapters: list, build, check.")
def envs_group():
    """Environment suites and adapters: list them, build their games, check an adapter's contract."""


@envs_group.command("list")
@_json_option
def envs_list(as_json):
    """List env adapters and task suites."""
    from agentrl.envs.registry import list_envs
    from agentrl.envs.suites import scan_suites

    suites, broken = scan_suites()  # a broken file is flagged, the valid suites are still listed (exit 0)
    for path, why in broken:
        click.echo(f"warning: skipped invalid suite file {path.name}: {why}", err=True)
    if as_json:
        _print_json(
            {
                "adapters": list_envs(),
                "suites": [
                    {
                        "name": s.name,
                        "env": s.env,
                        "train": len(s.train),
                        "eval": len(s.eval),
                        "description": s.description,
                        "file": str(s.path) if s.path else None,
                    }
                    for s in suites
                ],
                "invalid": [{"file": str(p), "error": why} for p, why in broken],
            }
        )
        return
    out.print("adapters: " + ", ".join(list_envs()), markup=False, highlight=False)
    t = Table(title="suites")
    for col in ("name", "env", "train", "eval", "description"):
        t.add_column(col)
    for s in suites:
        t.add_row(_lit(s.name), _lit(s.env), str(len(s.train)), str(len(s.eval)), _lit(s.description))
    for path, why in broken:
        t.add_row(_lit(path.stem), "[red]invalid[/]", "-", "-", _lit(why))
    out.print(t)


@envs_group.command("build", short_help="Generate and cache a suite's games.")
@click.argument("suite")
@click.option(
    "--split",
    type=click.Choice(["train", "eval", "all"]),
    default="all",
    help="Build the games of this split only (default: all).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=max(1, os.cpu_count() or 1),
    help="Parallel generator processes (default: the number of CPUs).",
)
@click.option("--n", "n", type=click.IntRange(min=1), default=None, help="alfworld: number of games to generate.")
@click.option("--seed", type=int, default=0, help="alfworld: sampling seed.")
@click.option("--task-types", default=None, help="alfworld: comma-separated task types.")
@click.option("--floorplans", default=None, help="alfworld: comma-separated floorplans (e.g. FloorPlan1,FloorPlan2).")
@click.option("--small", is_flag=True, help="alfworld: small rooms, few objects.")
def envs_build(suite, split, workers, n, seed, task_types, floorplans, small):
    """Generate (and cache) the games of a suite, or of ALFWorld with the generator options."""
    from agentrl.envs.build import build

    built = build(
        suite,
        split=split,
        workers=workers,
        n=n,
        seed=seed,
        task_types=task_types.split(",") if task_types else None,
        floorplans=floorplans.split(",") if floorplans else None,
        small=small,
        console=err,
    )
    out.print(f"{len(built)} games ready for {suite}", markup=False, highlight=False)


@envs_group.command("check", short_help="Check an adapter against the env contract.")
@click.argument("task_id")
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True, help="Steps per run.")
@click.option("--seed", type=int, default=0, show_default=True, help="The reset seed.")
@click.option("--suite", default=None, help="Build the adapter with this suite's options.")
@click.option(
    "--options",
    "options_yaml",
    default=None,
    metavar="YAML",
    help="Adapter options as a YAML mapping (over the suite's), e.g. '{info_keys: {admissible: valid}}'.",
)
@click.option("--model", default=None, help="Count prompt tokens with this model's tokenizer (default: estimate).")
@_json_option
def envs_check(task_id, steps, seed, suite, options_yaml, model, as_json):
    """Reset and step TASK_ID's env twice alone and twice interleaved with a second instance in this
    process, and compare observations, rewards, won, valid, admissible lists and anchors; check the
    task id parses; report the admissible lists' and prompts' sizes; warn about what training needs
    (expert plan, anchors, prompt length). Exit 1 at the first difference (docs/env-contract.md)."""
    import yaml

    from agentrl.envs.check import check_env

    options: dict = {}
    if suite is not None:
        from agentrl.envs.suites import load_suite

        options.update(load_suite(suite).options)
    if options_yaml is not None:
        try:
            extra = yaml.safe_load(options_yaml)
        except yaml.YAMLError:
            raise UserError(f"--options: not YAML: {options_yaml!r}") from None
        if not isinstance(extra, dict):
            raise UserError("--options must be a YAML mapping, e.g. '{size: 3}'")
        options.update(extra)
    tokenizer = None
    if model is not None:
        from agentrl.policy.model import load_tokenizer

        tokenizer = load_tokenizer(model)
    report = check_env(task_id, steps=steps, seed=seed, options=options, tokenizer=tokenizer)
    if as_json:
        _print_json(report.as_dict())
    else:
        if report.runs:
            t = Table(title=f"envs check {_lit(task_id)} (seed {seed}, up to {steps} steps)")
            for col in ("run", "steps", "result"):
                t.add_column(col)
            ref = report.runs[0]
            from agentrl.envs.check import first_difference

            for r in report.runs:
                bad = r.error if r is ref else first_difference(ref, r)
                t.add_row(
                    _lit(r.name),
                    str(max(0, len(r.snapshots) - 1)),
                    "reference" if r is ref and not bad else ("[red]DIFFERS[/]" if bad else "[green]same[/]"),
                )
            out.print(t)
        if report.admissible_max is None:
            sizes = "admissible lists: none"
        else:
            sizes = f"admissible lists: up to {report.admissible_max} commands (mean {report.admissible_mean:.1f})"
        approx = "" if report.tokens_exact else "~"
        sizes += (
            f"; largest one-turn prompt (no history): {report.prompt_chars_max} characters, "
            f"{approx}{report.prompt_tokens_max} tokens"
            + ("" if report.tokens_exact else " (estimated; --model counts)")
        )
        out.print(sizes, markup=False, highlight=False)
        for n in report.notes:
            out.print(n, markup=False, highlight=False)
        for w in report.warnings:
            err.print(f"warning: {w}", markup=False, highlight=False)
        if report.ok:
            out.print("contract kept: every run saw the same observations, rewards and flags", markup=False)
    if not report.ok:
        if not as_json:
            err.print(f"contract broken: {report.difference}", markup=False, highlight=False)
        sys.exit(1)


# -- recipes -------------------------------------------------------------------------------
@cli.group("recipes", short_help="Packaged recipes: list, show, copy.")
def recipes_group():
    """The packaged recipes: list them, show one, copy one to edit. `agentrl train NAME` runs one by name."""


@recipes_group.command("list", short_help="List the packaged recipes.")
@_json_option
def recipes_list(as_json):
    """List the packaged recipes and their descriptions."""
    from agentrl.recipe_files import describe, recipe_names, recipe_path

    rows = [(name, *describe(recipe_path(name))) for name in recipe_names()]
    if as_json:
        _print_json([{"name": n, "command": c, "description": d, "file": str(recipe_path(n))} for n, c, d in rows])
        return
    t = Table(title="recipes")
    for col in ("name", "description", "command"):
        t.add_column(col)
    for name, command, description in rows:
        t.add_row(_lit(name), _lit(description), _lit(command))
    out.print(t)


@recipes_group.command("show", short_help="Print a packaged recipe's YAML.")
@click.argument("name")
def recipes_show(name):
    """Print the packaged recipe NAME (its YAML, as it is)."""
    from agentrl.recipe_files import recipe_path

    click.echo(recipe_path(name).read_text(encoding="utf-8"), nl=False)


@recipes_group.command("copy")
@click.argument("name")
@click.argument("dest", required=False, type=click.Path(dir_okay=True, path_type=str))
@click.option("--force", is_flag=True, help="Overwrite DEST if it exists.")
def recipes_copy(name, dest, force):
    """Copy a packaged recipe to a file to edit.

    Writes the recipe NAME to DEST (default ./NAME.yaml; DEST a folder: DEST/NAME.yaml)."""
    from pathlib import Path

    from agentrl.recipe_files import describe, recipe_path

    src = recipe_path(name)
    target = Path(dest) if dest else Path(f"{name}.yaml")
    if target.is_dir():
        target = target / f"{name}.yaml"
    if target.exists() and not force:
        raise UserError(f"{target} exists (give another DEST, or --force to overwrite it)")
    try:
        target.write_bytes(src.read_bytes())
    except OSError as e:
        raise UserError(f"cannot write {target}: {e.strerror or e}") from None
    words = describe(src)[0].split()
    verb = words[1] if len(words) > 1 and words[1] in ("train", "eval") else "train"
    out.print(f"wrote {target}; run it with: agentrl {verb} {target}", markup=False, highlight=False)


def _stdout_closed() -> bool:
    """Whether our stdout is a pipe nobody reads any more (a BrokenPipeError can also come from an
    env worker's pipe: that one is a failure, not the end of the output)."""
    try:
        import select

        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poll.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def main() -> None:
    debug = bool(os.environ.get("AGENTRL_DEBUG"))
    try:
        rc = cli.main(standalone_mode=False, prog_name="agentrl")
        sys.stdout.flush()  # here, not at exit: a reader that went away is handled below
        sys.exit(rc if isinstance(rc, int) else 0)
    except (BrokenPipeError, _PipeBroke) as e:
        if isinstance(e, _PipeBroke):
            e = e.args[0]
        if not (isinstance(e, _OutputClosed) or _stdout_closed()):
            if debug:
                raise
            click.echo(f"error: unexpected {type(e).__name__}: {e} (set AGENTRL_DEBUG=1 for the traceback)", err=True)
            sys.exit(1)
        # `agentrl export 1 | head`: the reader has what it wanted; end quietly, like Unix tools
        # (stdout onto /dev/null, so that flushing at exit cannot fail again)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except AgentRLError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # a bug: one line, the traceback on request
        if debug:
            raise
        click.echo(f"error: unexpected {type(e).__name__}: {e} (set AGENTRL_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
