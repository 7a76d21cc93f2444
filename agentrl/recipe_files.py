"""The packaged recipes (`agentrl/recipes/<name>.yaml`, package data) and how a RECIPE argument resolves.

A RECIPE argument that is an existing file is that file; otherwise a bare name (`quickstart`,
`tw-quick-random`) is the packaged recipe of that name. Each packaged recipe opens with two comment
lines: the command that runs it (`# agentrl train quickstart`) and a one-line description
(`agentrl recipes list`). (This module is not `agentrl/recipes.py`: that name is the data folder's.)
"""

from __future__ import annotations

from pathlib import Path

import click

from agentrl.errors import UserError

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")) if RECIPES_DIR.is_dir() else []


def _known() -> str:
    return ", ".join(recipe_names()) or "none"


def recipe_path(name: str) -> Path:
    """The packaged recipe `name`; UserError listing the known names if there is none."""
    path = RECIPES_DIR / f"{name}.yaml"
    if name and "/" not in name and "\\" not in name and name not in (".", "..") and path.is_file():
        return path
    raise UserError(f"unknown recipe '{name}' (packaged recipes: {_known()})")


def resolve_recipe(arg: str | Path) -> Path:
    """A RECIPE argument -> the file to load: an existing file as given, else the packaged recipe
    of that name. A path-like argument (a folder separator, or ending in .yaml/.yml) is never a name."""
    path = Path(arg)
    if path.is_file():
        return path
    text = str(arg)
    if "/" in text or "\\" in text or text.endswith((".yaml", ".yml")):
        raise UserError(f"recipe not found: {text} (no such file; packaged recipes, by name: {_known()})")
    candidate = RECIPES_DIR / f"{text}.yaml"
    if text and text not in (".", "..") and candidate.is_file():
        if Path(f"{text}.yaml").is_file():  # e.g. left by `agentrl recipes copy`: say which one runs
            click.echo(f"note: running the packaged recipe '{text}'; for ./{text}.yaml give the file name", err=True)
        return candidate
    raise UserError(f"recipe not found: '{text}' is neither a file nor a packaged recipe (packaged: {_known()})")


def describe(path: Path) -> tuple[str, str]:
    """(command, description) from a recipe's opening comment lines: the first is the command that
    runs it, the next non-empty one its description."""
    command, description = "", ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not text:
            continue
        if not command and text.startswith("agentrl "):
            command = text
        elif not description:
            description = text
            break
    return command, description
