"""Operator use cases behind the CLI: join tokens, certificate and instance listings.

Each function takes the session factory and owns its one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.attest.token import new_token
from issuer.errors import ClientError, NotFound
from issuer.hashing import hash_secret
from issuer.service.issuance.model import normalise_serial
from issuer.service.issuance.roles import RoleBook
from issuer.settings import Settings
from issuer.store import bindings, certificates, identities, tokens
from issuer.store.records import BindingRecord, CertificateRecord, IdentityRecord, TokenRecord

__all__ = [
    "CreatedToken",
    "certificate_history",
    "create_token",
    "list_certificates",
    "list_instances",
    "list_tokens",
    "reset_instance",
    "revoke_token",
    "show_certificate",
    "stale_certificates",
]

Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True, slots=True)
class CreatedToken:
    token: str  # shown once, never stored
    name: str
    role: str
    expires_at: datetime


async def create_token(
    sessions: Sessions, settings: Settings, *, role: str, name: str, ttl: timedelta, now: datetime
) -> CreatedToken:
    """Create a one-time join token for ``role``; the token text is returned once and stored hashed.

    Raises ClientError ``role_unknown`` (no such role, or it does not allow tokens) or ``token_name_invalid``.
    """
    try:
        RoleBook(settings.roles).get(role, method="token")
    except ClientError:
        names = [r.name for r in settings.roles if "token" in r.methods]
        raise ClientError(
            f"no role {role!r} allows join tokens (roles that do: {', '.join(names) or 'none'})",
            code="role_unknown",
        ) from None
    if not name or len(name) > 128:
        raise ClientError("a token needs a name of 1 to 128 characters", code="token_name_invalid")
    token = new_token()
    async with sessions() as session, session.begin():
        await tokens.add_join_token(
            session, token_hash=hash_secret(token), name=name, role=role, now=now, expires_at=now + ttl
        )
    return CreatedToken(token=token, name=name, role=role, expires_at=now + ttl)


async def list_tokens(sessions: Sessions, *, include_used: bool) -> Sequence[TokenRecord]:
    async with sessions() as session:
        return await tokens.list_join_tokens(session, include_used=include_used)


async def revoke_token(sessions: Sessions, *, name: str, now: datetime) -> int:
    """Make every unused join token named ``name`` unusable; how many. NotFound ``token_not_found`` for none."""
    async with sessions() as session, session.begin():
        count = await tokens.revoke_join_token(session, name=name, now=now)
    if not count:
        raise NotFound(f"no unused, unexpired join token named {name!r}", code="token_not_found")
    return count


async def list_certificates(
    sessions: Sessions, *, limit: int, status: str | None, principal: str | None
) -> Sequence[tuple[CertificateRecord, IdentityRecord]]:
    async with sessions() as session:
        return await certificates.list_certificates(session, limit=limit, status=status, principal=principal)


async def show_certificate(sessions: Sessions, serial: str) -> tuple[CertificateRecord, IdentityRecord]:
    """The certificate (serial as openssl or we print it) and its identity; NotFound ``certificate_not_found``."""
    async with sessions() as session:
        row = await certificates.get_certificate(session, normalise_serial(serial))
        if row is None:
            raise NotFound(f"no certificate with serial {serial}", code="certificate_not_found")
        identity = await identities.get_identity(session, row.identity_id)
        assert identity is not None
        return row, identity


async def stale_certificates(
    sessions: Sessions, *, now: datetime, late_by: timedelta, renew_fraction: float, include_expired: bool
) -> Sequence[tuple[CertificateRecord, IdentityRecord]]:
    """Certificates still unrenewed ``late_by`` past their own renewal point: rotations that did not happen."""
    async with sessions() as session:
        return await certificates.stale_certificates(
            session, now=now, late_by=late_by, renew_fraction=renew_fraction, include_expired=include_expired
        )


async def certificate_history(sessions: Sessions, *, principal: str) -> Sequence[tuple[CertificateRecord, str | None]]:
    """The certificates of ``principal``, oldest first, each with the serial it renewed (None: attested)."""
    async with sessions() as session:
        return await certificates.certificates_of(session, principal=principal)


async def list_instances(sessions: Sessions, *, limit: int) -> Sequence[BindingRecord]:
    async with sessions() as session:
        return await bindings.list_bindings(session, limit=limit)


async def reset_instance(sessions: Sessions, *, instance_id: str) -> int:
    """Forget an instance's trust-on-first-use binding; the number of bindings removed."""
    async with sessions() as session, session.begin():
        return await bindings.delete_binding(session, instance_id=instance_id)
