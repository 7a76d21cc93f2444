"""Joining (or starting) the Ray cluster a recipe's `runtime` names (ARCHITECTURE.md §10).

Nothing reaches outside: Ray's usage statistics are switched off before Ray is imported, no
dashboard is started, and actors' output does not reach the terminal (`log_to_driver=False`;
errors come back as exceptions). `address: auto` joins the cluster of `$AGENTRL_RAY_ADDRESS` or
`$RAY_ADDRESS` when set (the driver must run on a node of it), else starts a Ray instance in this
process; `local` always starts one; `host:port` joins that head.
"""

from __future__ import annotations

import os

from agentrl.config import RuntimeConfig
from agentrl.errors import UserError


def import_ray():
    """`ray`, or a one-line UserError saying how to install it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise UserError("runtime.backend: ray needs Ray: pip install 'agentrl[ray]'") from None
    return ray


def connect(cfg: RuntimeConfig):
    """Ray, initialised for `cfg` (once per process); returns the `ray` module."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    address = cfg.address
    if address == "auto":
        address = os.environ.get("AGENTRL_RAY_ADDRESS") or os.environ.get("RAY_ADDRESS") or None
    elif address == "local":
        address = None
    from agentrl.quiet import debug

    if not debug():  # Ray's start-up notes ("Started a local Ray instance", token auth) are not the run's
        import logging

        logging.getLogger("ray").setLevel(logging.ERROR)
    kwargs = dict(log_to_driver=False, namespace="agentrl", configure_logging=False)
    try:
        if address is None:
            ray.init(include_dashboard=False, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except ConnectionError as e:
        raise UserError(f"runtime.address: cannot join the Ray cluster at {address}: {e}") from None
    return ray


def node_ip() -> str:
    """The IP address of the Ray node this code runs on."""
    import ray

    return ray.util.get_node_ip_address()
