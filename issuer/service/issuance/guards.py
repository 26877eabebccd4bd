"""Single-use proofs (signed STS requests, renewal tokens): burnt in a transaction of their own.

A proof is burnt — its digest recorded under a unique constraint — before anything
is done with it, and stays burnt whether or not the issuance then succeeds, so a
replay is refused even inside its validity window, across replicas, and never
reaches an upstream twice.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.store import replay_guards

__all__ = ["ReplayGuards"]


class ReplayGuards:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def burn(self, *, kind: str, digest: str, expires_at: datetime, now: datetime) -> bool:
        """Record ``digest``; False when it was recorded before (a replay). Commits on its own.

        One statement on Postgres (no BEGIN/COMMIT around it): the burn stands whatever follows.
        """
        async with self._sessions() as session, session.begin():
            return await replay_guards.add_replay_guard(
                session, kind=kind, digest=digest, expires_at=expires_at, now=now, autocommit=True
            )
