"""The `agentrl` command line (DESIGN §7). Thin: parse, call, print.

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
from rich.table import Table

from agentrl.errors import AgentRLError, UserError

out = Console()
err = Console(stderr=True)
for _c in (out, err):
    if not _c.is_terminal:  # piped or captured: wide enough that tables and metric lines stay unwrapped
        _c.width = max(_c.width, 160)


def _db_option(f):
    @click.option("--db", "db", default=None, envvar="AGENTRL_DB", show_envvar=True,
                  help="Path of the runs database (default ./runs.db).")
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


@click.group()
@click.version_option(package_name="agentrl")
def cli() -> None:
    """agentrl: reinforcement learning for LLM agents in multi-turn text environments."""


# -- eval ----------------------------------------------------------------------------------
@cli.command("eval")
@click.argument("recipe", required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key (repeatable).")
@click.option("--episodes", type=click.IntRange(min=1), default=None, help="Number of eval episodes.")
@click.option("--run", "run_ref", default=None, help="Evaluate a training run's checkpoint instead of a recipe.")
@click.option("--checkpoint", type=int, default=None, help="With --run: the checkpoint iteration (default last).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_db_option
@_json_option
def eval_cmd(recipe, overrides, episodes, run_ref, checkpoint, no_progress, db, as_json):
    """Evaluate a policy on a suite's eval split; every turn is stored."""
    from agentrl.config import load_recipe
    from agentrl.evaluate import run_eval
    from agentrl.store.db import open_store

    adapter, parent = None, None
    if run_ref is not None:
        from agentrl.train import resolve_checkpoint

        store = open_store(db, create=False)
        rec, adapter, parent = resolve_checkpoint(store, run_ref, checkpoint, overrides)
    else:
        if recipe is None:
            raise UserError("give a RECIPE or --run RUN")
        rec = load_recipe(recipe, overrides)
        store = open_store(db)
    summary = run_eval(rec, store, episodes=episodes, adapter_path=adapter, parent_run_id=parent,
                       console=err, show_progress=not no_progress and not as_json)
    if as_json:
        _print_json(summary.as_dict())
        return
    t = Table(title=f"eval run {summary.run_id}: {rec.name} on {rec.env.suite}")
    for col in ("policy", "episodes", "success", "mean return", "mean length", "errors", "truncated", "steps/s", "wall"):
        t.add_column(col, justify="right" if col != "policy" else "left")
    t.add_row(summary.policy, str(summary.episodes), _pct(summary.success), f"{summary.mean_return:.3f}",
              f"{summary.mean_length:.1f}", str(summary.errors), str(summary.truncated),
              f"{summary.steps_per_s:.1f}", f"{summary.wall_s:.1f}s")
    out.print(t)


# -- train ---------------------------------------------------------------------------------
@cli.command("train")
@click.argument("recipe", required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key (repeatable).")
@click.option("--resume", "resume", default=None, metavar="RUN", help="Continue a run from its last checkpoint.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@_db_option
def train_cmd(recipe, overrides, resume, no_progress, db):
    """Train a LoRA policy with PPO on a suite's train split; every turn is stored."""
    from agentrl.config import load_recipe
    from agentrl.store.db import open_store
    from agentrl.train import run_train, summary_table

    if resume is None and recipe is None:
        raise UserError("give a RECIPE or --resume RUN")
    rec = load_recipe(recipe, overrides) if resume is None else None
    store = open_store(db, create=resume is None)
    summary = run_train(rec, store, resume=resume, overrides=overrides if resume else (), console=err,
                        show_progress=not no_progress)
    out.print(summary_table(summary))


# -- runs ----------------------------------------------------------------------------------
@cli.command("runs")
@_db_option
@_json_option
def runs_cmd(db, as_json):
    """List runs in the database."""
    from agentrl.store.db import open_store
    from agentrl.store.queries import list_runs

    rows = list_runs(open_store(db, create=False))
    if as_json:
        _print_json(rows)
        return
    t = Table(title=f"runs in {db}")
    for col in ("id", "name", "kind", "status", "created", "episodes", "eval success", "last iter"):
        t.add_column(col)
    for r in rows:
        t.add_row(str(r["id"]), r["name"], r["kind"], r["status"], r["created_at"], str(r["episodes"]),
                  _pct(r["eval_success"]), "-" if r["last_iteration"] is None else str(r["last_iteration"]))
    out.print(t)


# -- inspect -------------------------------------------------------------------------------
def _short(text: str, n: int = 160) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


@cli.command("inspect")
@click.argument("run_ref", required=False)
@click.option("--episode", "episode_id", default=None, help="Show one episode turn by turn.")
@click.option("--iteration", type=int, default=None, help="Only episodes of this iteration.")
@click.option("--failed", is_flag=True, help="Only episodes that were not won.")
@click.option("--split", type=click.Choice(["train", "eval"]), default=None)
@click.option("--full", is_flag=True, help="Do not shorten observations.")
@click.option("--credit", is_flag=True, help="Summarise credit assignment per training iteration.")
@_db_option
@_json_option
def inspect_cmd(run_ref, episode_id, iteration, failed, split, full, credit, db, as_json):
    """Show a run's episodes, or one episode's transcript with --episode."""
    from agentrl.store.db import open_store
    from agentrl.store import queries as q

    store = open_store(db, create=False)
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
    run = q.get_run(store, run_ref)
    if credit:
        rows = q.credit_summary(store, run.id)
        if as_json:
            _print_json(rows)
            return
        if not rows:
            raise UserError(f"run {run.id} has no stored advantages (only training runs have them)")
        keys = [k for k in rows[0] if k not in ("iteration", "method")]
        t = Table(title=f"credit assignment in run {run.id} ({rows[0]['method']})")
        for col in ["iter", *keys]:
            t.add_column(col, justify="right")
        for r in rows:
            t.add_row(str(r["iteration"]), *[("-" if r.get(k) is None else
                                              (str(r[k]) if isinstance(r[k], int) else f"{r[k]:.4g}")) for k in keys])
        out.print(t)
        return
    eps = q.episodes(store, run.id, iteration=iteration, split=split, failed=failed)
    if as_json:
        _print_json([_episode_json(e, steps=False) for e in eps])
        return
    t = Table(title=f"run {run.id} ({run.name}, {q.display_status(run)}): {len(eps)} episodes")
    for col in ("episode", "iter", "split", "task", "status", "won", "return", "length"):
        t.add_column(col)
    for e in eps:
        t.add_row(str(e.id), str(e.iteration), e.split, e.task_id, e.status, "yes" if e.won else "no",
                  f"{e.ret:.2f}", str(e.info.get("length", len(e.steps))))
    out.print(t)
    n = len(eps)
    if n:
        won = sum(e.won for e in eps)
        out.print(f"success {won}/{n} ({100 * won / n:.1f}%), mean return {sum(e.ret for e in eps) / n:.3f}")


def _episode_json(ep, steps: bool = True) -> dict:
    from dataclasses import asdict

    d = asdict(ep)
    d["length"] = len(ep.steps) if steps else ep.info.get("length")
    if not steps:
        d.pop("steps")
    return d


def _print_episode(ep, advs: dict, full: bool) -> None:
    n = None if full else 300
    out.print(f"[bold]episode {ep.id}[/] run {ep.info.get('run_id')} · {ep.split} · iteration {ep.iteration} · "
              f"task {ep.task_id} · group {ep.group_id} · policy {ep.policy}")
    out.print(f"goal: {ep.goal}")
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
        t.add_row(str(st.t), obs, "-" if st.admissible is None else str(len(st.admissible)),
                  st.action + flag, gen, f"{st.reward:+.2f}", f"{cum:.2f}", adv)
    out.print(t)
    final = ep.final_observation if full else _short(ep.final_observation, n)
    out.print(f"final observation: {final}")
    status = f"status {ep.status}, {'won' if ep.won else 'not won'}, return {ep.ret:.2f}, length {len(ep.steps)}"
    if ep.error:
        status += f", error: {ep.error}"
    out.print(status)


# -- replay --------------------------------------------------------------------------------
@cli.command("replay")
@click.argument("episode_id", required=False)
@click.option("--policy", "policy_ref", default=None, metavar="RUN[:N]",
              help="Let checkpoint N (default: last) of training run RUN continue the episode.")
@click.option("--from-step", type=click.IntRange(min=0), default=0, help="With --policy: replay this many stored steps first.")
@click.option("--failed", "failed_run", default=None, metavar="RUN",
              help="With --policy: continue every failed eval episode of RUN and count how many are now won.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_db_option
@_json_option
def replay_cmd(episode_id, policy_ref, from_step, failed_run, no_progress, db, as_json):
    """Re-execute a stored episode and check every observation and reward; or, with --policy,
    let a checkpoint continue stored episodes."""
    from agentrl.store.db import open_store

    store = open_store(db, create=False)
    if policy_ref is not None:
        _replay_with_policy(store, episode_id, policy_ref, from_step, failed_run, no_progress, as_json)
        return
    if failed_run is not None or episode_id is None:
        raise UserError("give an EPISODE_ID (and --policy RUN[:N] to let a checkpoint continue it)")
    from agentrl.replay import replay_episode

    report = replay_episode(store, episode_id)
    bad = report.first_divergence
    if as_json:
        from dataclasses import asdict

        _print_json({"episode": report.episode_id, "task": report.task_id, "match": report.ok,
                     "first_divergence": None if bad is None else asdict(bad),
                     "steps": [asdict(s) for s in report.steps]})
    else:
        t = Table(title=f"replay of episode {report.episode_id} ({report.task_id})")
        for col in ("t", "action", "observation", "reward"):
            t.add_column(col)
        for s in report.steps:
            t.add_row("reset" if s.t < 0 else str(s.t), s.action,
                      "[green]match[/]" if s.obs_match else "[red]DIFFERS[/]",
                      "[green]match[/]" if s.reward_match else f"[red]{s.stored_reward} vs {s.replay_reward}[/]")
        out.print(t)
        if bad is None:
            out.print(f"[green]full match[/]: {len(report.steps) - 1} steps")
        else:
            where = "the reset observation" if bad.t < 0 else f"step {bad.t} (action '{bad.action}')"
            out.print(f"[red]diverges at {where}[/]" + (f": {bad.error}" if bad.error else ""))
            if not bad.obs_match:
                out.print(f"  stored:   {_short(bad.stored_obs, 300)}")
                out.print(f"  replayed: {_short(bad.replay_obs, 300)}")
    if bad is not None:
        sys.exit(1)


def _replay_with_policy(store, episode_id, policy_ref, from_step, failed_run, no_progress, as_json):
    from dataclasses import asdict

    from agentrl.replay import continue_episodes
    from agentrl.store import queries as q

    if failed_run is not None:
        run = q.get_run(store, failed_run)
        ids = [e.id for e in q.episodes(store, run.id, split="eval", failed=True)]
        if not ids:
            raise UserError(f"run {run.id} has no failed eval episodes")
    elif episode_id is not None:
        ids = [q.get_episode(store, episode_id).id]
    else:
        raise UserError("give an EPISODE_ID or --failed RUN")
    new_run, conts = continue_episodes(store, ids, policy_ref, from_step, console=err,
                                       show_progress=not no_progress and not as_json)
    won = sum(c.won for c in conts)
    if as_json:
        _print_json({"run": new_run, "episodes": len(conts), "now_won": won, "continuations": [asdict(c) for c in conts]})
        return
    t = Table(title=f"{policy_ref} continues {len(conts)} episode(s) from step {from_step} (stored as run {new_run})")
    for col in ("episode", "task", "was", "now", "length", "new episode"):
        t.add_column(col)
    for c in conts:
        t.add_row(str(c.episode_id), c.task_id, "won" if c.was_won else "lost",
                  "[green]won[/]" if c.won else "lost", str(c.length), str(c.new_episode_id))
    out.print(t)
    out.print(f"now won: {won}/{len(conts)}")


# -- export --------------------------------------------------------------------------------
@cli.command("export")
@click.argument("run_ref")
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default="-",
              help="Output file (default stdout).")
@_db_option
def export_cmd(run_ref, fmt, output, db):
    """Export a run's episodes (with every step and token ids) as JSON lines."""
    from agentrl.store.db import open_store
    from agentrl.store import queries as q

    store = open_store(db, create=False)
    run = q.get_run(store, run_ref)
    with click.open_file(output, "w") as f:
        for ep in q.episodes(store, run.id, with_steps=True):
            f.write(json.dumps(_episode_json(ep), default=str) + "\n")


# -- plot ----------------------------------------------------------------------------------
@cli.command("plot")
@click.argument("run_refs", nargs=-1, required=True)
@click.option("--output", "-o", default=None, help="PNG path (default <name>-<id>.png here).")
@_db_option
def plot_cmd(run_refs, output, db):
    """Plot success rate, return and loss per iteration (several runs: compared on one figure)."""
    from agentrl.plot import plot_run, plot_runs
    from agentrl.store.db import open_store

    store = open_store(db, create=False)
    path = plot_run(store, run_refs[0], output) if len(run_refs) == 1 else plot_runs(store, list(run_refs), output)
    out.print(f"wrote {path}")


# -- envs ----------------------------------------------------------------------------------
@cli.group("envs")
def envs_group():
    """Environment suites: list them, build their games."""


@envs_group.command("list")
@_json_option
def envs_list(as_json):
    """List env adapters and task suites."""
    from agentrl.envs.registry import list_envs
    from agentrl.envs.suites import list_suites

    suites = list_suites()
    if as_json:
        _print_json({"adapters": list_envs(), "suites": [
            {"name": s.name, "env": s.env, "train": len(s.train), "eval": len(s.eval),
             "description": s.description} for s in suites]})
        return
    out.print("adapters: " + ", ".join(list_envs()))
    t = Table(title="suites")
    for col in ("name", "env", "train", "eval", "description"):
        t.add_column(col)
    for s in suites:
        t.add_row(s.name, s.env, str(len(s.train)), str(len(s.eval)), s.description)
    out.print(t)


@envs_group.command("build")
@click.argument("suite")
@click.option("--split", type=click.Choice(["train", "eval", "all"]), default="all")
@click.option("--workers", type=click.IntRange(min=1), default=max(1, os.cpu_count() or 1))
@click.option("--n", "n", type=click.IntRange(min=1), default=None, help="alfworld: number of games to generate.")
@click.option("--seed", type=int, default=0, help="alfworld: sampling seed.")
@click.option("--task-types", default=None, help="alfworld: comma-separated task types.")
@click.option("--floorplans", default=None, help="alfworld: comma-separated floorplans (e.g. FloorPlan1,FloorPlan2).")
@click.option("--small", is_flag=True, help="alfworld: small rooms, few objects.")
def envs_build(suite, split, workers, n, seed, task_types, floorplans, small):
    """Generate (and cache) the games of a suite, or of ALFWorld with the generator options."""
    from agentrl.envs.build import build

    built = build(suite, split=split, workers=workers, n=n, seed=seed,
                  task_types=task_types.split(",") if task_types else None,
                  floorplans=floorplans.split(",") if floorplans else None, small=small, console=err)
    out.print(f"{len(built)} games ready for {suite}")


def main() -> None:
    debug = bool(os.environ.get("AGENTRL_DEBUG"))
    try:
        rc = cli.main(standalone_mode=False, prog_name="agentrl")
        sys.exit(rc if isinstance(rc, int) else 0)
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
