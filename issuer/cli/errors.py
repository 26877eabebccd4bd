"""The one-line failure of an ``issuer`` command: :class:`CliError` and :func:`fail`."""

from __future__ import annotations

from issuer.errors import IssuerError

__all__ = ["CliError", "fail"]


class CliError(IssuerError):
    """A failure of a command, said in one line; ``exit_status`` is what the command exits with."""

    default_code = "cli_error"

    def __init__(self, detail: str, *, code: str | None = None, exit_status: int = 1) -> None:
        super().__init__(detail, code=code)
        self.exit_status = exit_status


def fail(message: str, *, code: str = "cli_error", exit_status: int = 1) -> CliError:
    """The :class:`CliError` to raise: ``issuer: error: <message>``, exit ``exit_status``."""
    return CliError(message, code=code, exit_status=exit_status)
