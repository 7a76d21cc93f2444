"""Suites: named lists of task ids with train/eval splits, one YAML file each.

The built-in suites ship inside the package as data files, `agentrl/suites/<name>.yaml`
($AGENTRL_ENVS_DIR names another folder to use instead); `load_suite` also accepts a path to
a `.yaml` file. Format:

    name: textworld-w2-o3-q4          # must equal the file name (without .yaml)
    env: textworld                    # the adapter every task id must belong to
    description: one line
    train: {pattern: "textworld/w2-o3-q4/seed-{i}", seeds: [0, 63]}   # inclusive range
    eval:  {pattern: "textworld/w2-o3-q4/seed-{i}", seed_list: [1000, 1001, 1005]}

A split is `{pattern, seeds: [first, last]}` (inclusive range), `{pattern, seed_list: [...]}`
(explicit seeds) or `{tasks: [task ids]}`. Train and eval must not share a task id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import agentrl
from agentrl.envs.registry import env_name_of
from agentrl.errors import UserError


@dataclass
class Suite:
    name: str
    env: str
    description: str
    train: list[str]
    eval: list[str]


BUILTIN_SUITES = Path(agentrl.__file__).resolve().parent / "suites"  # package data, in the wheel too


def envs_dir() -> Path:
    """The suites folder: $AGENTRL_ENVS_DIR, else the package's own `agentrl/suites/`."""
    override = os.environ.get("AGENTRL_ENVS_DIR")
    return Path(override) if override else BUILTIN_SUITES


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
    unknown = set(data) - {"name", "env", "description", "train", "eval"}
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
    return Suite(name, env, str(data.get("description", "")), train, evals)


def list_suites() -> list[Suite]:
    """All suites in the suites folder, by name (UserError at the first invalid file)."""
    folder = envs_dir()
    return [_parse(p) for p in sorted(folder.glob("*.yaml"))] if folder.is_dir() else []


def scan_suites() -> tuple[list[Suite], list[tuple[Path, str]]]:
    """(valid suites, [(file, why it is invalid)]) of the suites folder: one broken file does not
    hide the others (`agentrl envs list`)."""
    folder = envs_dir()
    suites, broken = [], []
    for p in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
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
    candidate = envs_dir() / f"{name}.yaml"
    if "/" not in name and candidate.is_file():
        return _parse(candidate)
    known = sorted(p.stem for p in envs_dir().glob("*.yaml")) if envs_dir().is_dir() else []
    raise UserError(f"unknown suite '{name}' (known: {', '.join(known) or 'none'}; folder {envs_dir()})")
