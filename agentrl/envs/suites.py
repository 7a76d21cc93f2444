"""Suites: named lists of task ids with train/eval splits, one YAML file each.

Suites are found on a search path (`suite_dirs`), first match wins: the folders of
$AGENTRL_ENVS_DIR (several joined with `os.pathsep`), then the built-in suites shipped inside the
package as data files (`agentrl/suites/<name>.yaml`), then the suites third-party packages ship
(entry-point group `agentrl.suites`: the value names a package whose folder holds the `.yaml`
files). `load_suite` also accepts a path to a `.yaml` file. Format:

    name: textworld-w2-o3-q4          # must equal the file name (without .yaml)
    env: textworld                    # the adapter every task id must belong to
    description: one line
    train: {pattern: "textworld/w2-o3-q4/seed-{i}", seeds: [0, 63]}   # inclusive range
    eval:  {pattern: "textworld/w2-o3-q4/seed-{i}", seed_list: [1000, 1001, 1005]}
    options: {}                       # optional: keyword arguments of the adapter's factory

A split is `{pattern, seeds: [first, last]}` (inclusive range), `{pattern, seed_list: [...]}`
(explicit seeds) or `{tasks: [task ids]}`. Train and eval must not share a task id. A recipe's
`env.options` are merged over the suite's `options` (`env_options`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

import agentrl
from agentrl.envs.registry import env_name_of
from agentrl.errors import UserError, warn_once


@dataclass
class Suite:
    name: str
    env: str
    description: str
    train: list[str]
    eval: list[str]
    options: dict[str, Any] = field(default_factory=dict)  # the adapter's options (env.options overrides them)
    path: Path | None = None  # the file it was read from


BUILTIN_SUITES = Path(agentrl.__file__).resolve().parent / "suites"  # package data, in the wheel too
SUITES_ENTRY_POINT_GROUP = "agentrl.suites"


@lru_cache(maxsize=1)
def package_suite_dirs() -> tuple[Path, ...]:
    """The folders of suites that installed packages ship (entry-point group `agentrl.suites`, whose
    value names a package: `mypkg.suites`). One that cannot be found is skipped with a warning."""
    try:
        eps = sorted(metadata.entry_points(group=SUITES_ENTRY_POINT_GROUP), key=lambda e: e.name)
    except Exception:  # pragma: no cover - broken metadata
        return ()
    out: list[Path] = []
    for ep in eps:
        try:
            from importlib.resources import files

            folder = Path(str(files(ep.module)))
        except Exception as e:
            warn_once(
                f"ignoring suites entry point '{ep.name} = {ep.value}' (group {SUITES_ENTRY_POINT_GROUP}): "
                f"{type(e).__name__}: {e}"
            )
            continue
        if not folder.is_dir():
            warn_once(f"ignoring suites entry point '{ep.name} = {ep.value}': {folder} is not a folder")
            continue
        if folder not in out:
            out.append(folder)
    return tuple(out)


def suite_dirs() -> list[Path]:
    """Where suites are looked up, in order (first match wins): the folders of $AGENTRL_ENVS_DIR
    (joined with os.pathsep), the built-in `agentrl/suites/`, then the packages' suite folders."""
    user = [Path(p) for p in os.environ.get("AGENTRL_ENVS_DIR", "").split(os.pathsep) if p.strip()]
    out: list[Path] = []
    for d in [*user, BUILTIN_SUITES, *package_suite_dirs()]:
        if d not in out:
            out.append(d)
    return out


def _suite_files() -> list[Path]:
    """One file per suite name along the search path (the first; a later one of the same name is hidden)."""
    seen: dict[str, Path] = {}
    for d in suite_dirs():
        for p in sorted(d.glob("*.yaml")) if d.is_dir() else []:
            seen.setdefault(p.stem, p)
    return [seen[k] for k in sorted(seen)]


def _split(where: str, spec: Any) -> list[str]:
    if not isinstance(spec, dict):
        raise UserError(f"{where}: expected a mapping with pattern+seeds, pattern+seed_list or tasks")
    unknown = set(spec) - {"pattern", "seeds", "seed_list", "tasks"}
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    given = [k for k in ("seeds", "seed_list", "tasks") if k in spec]
    if len(given) != 1:
        raise UserError(f"{where}: give exactly one of seeds: [first, last], seed_list: [...], tasks: [...]")
    if "tasks" in spec:
        tasks = spec["tasks"]
        if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
            raise UserError(f"{where}: tasks must be a list of task ids")
        return list(tasks)
    pattern = spec.get("pattern")
    if not isinstance(pattern, str) or "{i}" not in pattern:
        raise UserError(f"{where}: pattern must be a string containing {{i}}")
    seeds = spec.get("seeds", spec.get("seed_list"))
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise UserError(f"{where}: seeds must be a list of integers")
    if "seeds" in spec:
        if len(seeds) != 2 or seeds[0] > seeds[1]:
            raise UserError(f"{where}: seeds must be an inclusive range [first, last] with first <= last")
        seeds = list(range(seeds[0], seeds[1] + 1))
    return [pattern.replace("{i}", str(s)) for s in seeds]


def _parse(path: Path) -> Suite:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"cannot read suite file {path}: not a text file (a suite is YAML in UTF-8)") from None
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read suite file {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"suite file {path}: expected a mapping")
    unknown = set(data) - {"name", "env", "description", "train", "eval", "options"}
    if unknown:
        raise UserError(f"suite file {path}: unknown key(s) {', '.join(sorted(unknown))}")
    name, env = data.get("name"), data.get("env")
    if name != path.stem:
        raise UserError(f"suite file {path}: name must be '{path.stem}' (the file name), got {name!r}")
    if not isinstance(env, str) or not env:
        raise UserError(f"suite file {path}: env must name an adapter (e.g. textworld)")
    train = _split(f"suite {name} train", data.get("train"))
    evals = _split(f"suite {name} eval", data.get("eval"))
    for task in train + evals:
        if env_name_of(task) != env:
            raise UserError(f"suite {name}: task '{task}' does not belong to env '{env}'")
    both = set(train) & set(evals)
    if both:
        raise UserError(f"suite {name}: {len(both)} task(s) in both train and eval, e.g. {sorted(both)[0]}")
    options = data.get("options") or {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise UserError(f"suite {name}: options must be a mapping of option names to values")
    return Suite(name, env, str(data.get("description", "")), train, evals, dict(options), path)


def list_suites() -> list[Suite]:
    """All suites on the search path, by name (UserError at the first invalid file)."""
    return [_parse(p) for p in _suite_files()]


def scan_suites() -> tuple[list[Suite], list[tuple[Path, str]]]:
    """(valid suites, [(file, why it is invalid)]) on the search path: one broken file does not
    hide the others (`agentrl envs list`)."""
    suites, broken = [], []
    for p in _suite_files():
        try:
            suites.append(_parse(p))
        except UserError as e:
            broken.append((p, str(e)))
    return suites, broken


def load_suite(name: str) -> Suite:
    """A suite by name (or by path to its .yaml file); UserError listing the known ones if unknown."""
    path = Path(name)
    if name.endswith((".yaml", ".yml")) and path.is_file():
        return _parse(path)
    if "/" not in name and os.sep not in name:
        for d in suite_dirs():
            candidate = d / f"{name}.yaml"
            if candidate.is_file():
                return _parse(candidate)
    known = [p.stem for p in _suite_files()]
    where = os.pathsep.join(str(d) for d in suite_dirs())
    raise UserError(f"unknown suite '{name}' (known: {', '.join(known) or 'none'}; searched {where})")


def env_options(env_cfg) -> dict[str, Any]:
    """The adapter options of a recipe's `env` section: its suite's `options`, overridden key by key
    by the recipe's `env.options`."""
    return {**load_suite(env_cfg.suite).options, **dict(env_cfg.options or {})}
