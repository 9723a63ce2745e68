"""The error every call to an agent fails with: one line for the user, and cli.md's exit code.

Its own module so that the transport (agent_client.py) and the request helpers (client.py)
both use it without importing each other.
"""

from __future__ import annotations


class AgentError(Exception):
    """A call to the agent failed; ``exit_code`` is what cli.md makes of it."""

    def __init__(self, message: str, exit_code: int, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.http_status = http_status

    @property
    def unreachable(self) -> bool:
        return self.http_status is None

    @property
    def transient(self) -> bool:
        """Worth asking again: no answer at all, or the agent failed (5xx, e.g. starting)."""
        return self.http_status is None or self.http_status >= 500


__all__ = ["AgentError"]
