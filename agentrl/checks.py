"""Checks run before any work starts (no model loaded, no run row written), shared by train, eval
and replay: the suite's splits are not empty, every task id is valid for its adapter, and the device
a model would be loaded on exists. Each failure is a one-line UserError (exit 2)."""

from __future__ import annotations

from agentrl.config import Recipe
from agentrl.envs.registry import check_tasks
from agentrl.envs.suites import Suite, load_suite
from agentrl.errors import UserError


def checked_suite(recipe: Recipe, need: tuple[str, ...] = ("eval",)) -> Suite:
    """The recipe's suite, with UserError when a split in `need` ("train", "eval") is empty or when
    any of its task ids (both splits) is not valid for its adapter, or the adapter does not take the
    env options (the suite's `options` and the recipe's `env.options`)."""
    suite = load_suite(recipe.env.suite)
    for split in need:
        if not getattr(suite, split):
            raise UserError(f"suite {suite.name} has no {split} tasks")
    check_tasks(suite.train + suite.eval, {**suite.options, **recipe.env.options})  # and the adapter's options
    return suite


def check_device(device: str) -> None:
    """UserError when `device` is not a torch device, or names a CUDA device this torch cannot use."""
    if device == "auto":
        return
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device '{device}' (auto | cpu | cuda | cuda:N)") from None
    if dev.type != "cuda":
        return
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise UserError(f"model.device={device}: CUDA is not available ({why}); use model.device=cpu or auto")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise UserError(f"model.device={device}: no such GPU (this machine has {count}: cuda:0-{count - 1})")


def check_model_device(recipe: Recipe) -> None:
    """`check_device` for the model a recipe loads (only the llm policy loads one), and Ray for the ray
    runtime (a one-line error before any model is loaded when it is not installed)."""
    if recipe.runtime.backend == "ray":
        from agentrl.runtime.cluster import import_ray

        import_ray()
    if recipe.policy == "llm":
        check_device(recipe.model.device)
