"""The check every ``issuer ca init`` makes first: a registry that already holds an issuing CA refuses a second one."""

from __future__ import annotations

from issuer.cli.database import Sessions, run, with_sessions
from issuer.cli.errors import fail
from issuer.settings import Settings

__all__ = ["refuse_second_init"]


def refuse_second_init(settings: Settings, *, instead: str) -> None:
    """Raise the one-line ``ca_exists`` error when the registry has an issuing CA; ``instead`` says what to run."""
    if run(with_sessions(settings, _has_issuers)):
        raise fail(
            "the CA registry already has an issuing CA (see `issuer ca status`); "
            f"a second `ca init` would split trust — {instead}",
            code="ca_exists",
        )


async def _has_issuers(sessions: Sessions) -> bool:
    from issuer.store import issuers

    async with sessions() as session:
        return bool(await issuers.list_issuers(session))
