"""Errors a user can cause. The CLI turns them into one line and an exit code."""


class AgentRLError(Exception):
    """Base class. `exit_code` is what the CLI exits with."""

    exit_code = 1


class UserError(AgentRLError):
    """Bad input: recipe, env name, model path, database, episode id (exit 2)."""

    exit_code = 2


class WorkError(AgentRLError):
    """A failure while doing the work (exit 1)."""

    exit_code = 1


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Print `warning: MESSAGE` on stderr (literally, one line), once until `reset_warnings()`:
    a run calls that when it starts, so each distinct warning is printed once per run."""
    line = " ".join(str(message).split())
    if line in _warned:
        return
    _warned.add(line)
    import sys

    sys.stderr.write(f"warning: {line}\n")
    sys.stderr.flush()


def reset_warnings() -> None:
    _warned.clear()
