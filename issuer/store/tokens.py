"""Join tokens: stored hashed, consumed once by one conditional UPDATE."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from datetime import datetime

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.store import hot
from issuer.store.denials import IN_FORCE_JSON, InForce, denials_from_json
from issuer.store.models import Certificate, JoinToken
from issuer.store.records import TokenRecord, record_of

__all__ = [
    "CONSUME_STEP",
    "add_join_token",
    "consume_join_token",
    "find_join_token",
    "list_join_tokens",
    "peek_join_token",
    "revoke_join_token",
]


async def add_join_token(
    session: AsyncSession, *, token_hash: str, name: str, role: str, now: datetime, expires_at: datetime
) -> None:
    await session.execute(
        insert(JoinToken).values(token_hash=token_hash, name=name, role=role, created_at=now, expires_at=expires_at)
    )


_TOKENS = JoinToken.metadata.tables[JoinToken.__tablename__]
# Built once; run with a dict of values (the hot path of token issuance).
_CONSUME = hot.HotStatement(
    update(_TOKENS)
    .where(
        _TOKENS.c.token_hash == bindparam("p_hash"),
        _TOKENS.c.used_at.is_(None),
        _TOKENS.c.revoked_at.is_(None),
        _TOKENS.c.expires_at > bindparam("p_now"),
    )
    .values(used_at=bindparam("p_now"), used_by_request_id=bindparam("p_request"))
    .returning(*(_TOKENS.c[f.name] for f in fields(TokenRecord)))
)


# Issuance on Postgres reads first (the token's row and the deny list, one round trip), then
# consumes the token in the statement that records the certificate: CONSUME_STEP is that
# statement's claim step (see issuer.store.certificates.record_claimed). Its parameters:
# c_hash, and the record's own created_at, request_id and serial.
_PEEK = hot.HotStatement(
    select(*(_TOKENS.c[f.name] for f in fields(TokenRecord)), IN_FORCE_JSON).select_from(
        hot.ONE_ROW.outerjoin(_TOKENS, _TOKENS.c.token_hash == bindparam("p_hash"))
    ),
    batch="union",
)
CONSUME_STEP = (
    "UPDATE join_tokens SET used_at = :created_at, used_by_request_id = :request_id, certificate_serial = :serial "
    "WHERE token_hash = :c_hash AND used_at IS NULL AND revoked_at IS NULL AND expires_at > :created_at "
    "RETURNING id"
)


async def peek_join_token(
    session: AsyncSession, *, token_hash: str, now: datetime
) -> tuple[TokenRecord | None, list[InForce]]:
    """The token's record whatever its state (None: no such token) and the denials in force at ``now``.

    A read outside any transaction; nothing is consumed (see :data:`CONSUME_STEP`).
    """
    row = await hot.fetch_one(session, _PEEK, {"p_hash": token_hash, "p_now": now}, autocommit=True)
    assert row is not None  # one row always (the outer join keeps it)
    denials = denials_from_json(row.pop("denials"))
    return (TokenRecord(**row) if row["id"] is not None else None), denials


async def consume_join_token(
    session: AsyncSession, *, token_hash: str, now: datetime, request_id: str
) -> TokenRecord | None:
    """Mark the token used by ``request_id`` if it is unused and unexpired; the record, or None.

    The certificate it got is the one recorded with the same ``request_id`` (see :func:`list_join_tokens`).

    One conditional UPDATE: under concurrent use the database lets exactly one
    transaction see the row unused; the others find ``used_at`` set (Postgres
    re-checks the WHERE clause after the winner commits).
    """
    row = await hot.fetch_one(session, _CONSUME, {"p_hash": token_hash, "p_now": now, "p_request": request_id})
    return None if row is None else TokenRecord(**row)


async def find_join_token(session: AsyncSession, *, token_hash: str) -> TokenRecord | None:
    row = await session.scalar(select(JoinToken).where(JoinToken.token_hash == token_hash))
    return None if row is None else record_of(TokenRecord, row)


async def list_join_tokens(session: AsyncSession, *, include_used: bool = False) -> Sequence[TokenRecord]:
    """Unused tokens (every token with ``include_used``), newest first, each with the serial it got if used."""
    # Rows consumed before the serial was left to the certificate's own row still carry it.
    serial = func.coalesce(JoinToken.certificate_serial, Certificate.serial)
    query = select(JoinToken, serial).outerjoin(
        Certificate,
        (JoinToken.used_by_request_id.is_not(None)) & (Certificate.request_id == JoinToken.used_by_request_id),
    )
    if not include_used:
        query = query.where(JoinToken.used_at.is_(None), JoinToken.revoked_at.is_(None))
    rows = (await session.execute(query.order_by(JoinToken.id.desc()))).all()
    return [replace(record_of(TokenRecord, token), certificate_serial=used_by) for token, used_by in rows]


async def revoke_join_token(session: AsyncSession, *, name: str, now: datetime) -> int:
    """Revoke every unused, unexpired token named ``name`` at ``now``; how many were revoked.

    ``expires_at`` moves to ``now`` as well, so a replica that predates ``revoked_at`` refuses it too.
    """
    result = await session.execute(
        update(JoinToken)
        .where(
            JoinToken.name == name,
            JoinToken.used_at.is_(None),
            JoinToken.revoked_at.is_(None),
            JoinToken.expires_at > now,
        )
        .values(expires_at=now, revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
