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
