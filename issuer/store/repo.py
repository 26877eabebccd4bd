"""Repository functions for issuances, the audit trail and replay guards.

Each takes a session and never commits (the service owns the transaction). The
hot path (:func:`record_issuance`) uses Core statements, not the ORM unit of work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from issuer.store.models import Attestation, Certificate, Identity, ReplayGuard
from issuer.store.records import (
    AuditEntry,
    CertificateRecord,
    IdentityRecord,
    NewCertificate,
    NewIdentity,
    record_of,
)
from issuer.store.renewal_due import past_renewal_point

__all__ = [
    "add_attestation",
    "add_replay_guard",
    "certificates_of",
    "delete_expired_replay_guards",
    "get_certificate",
    "get_identity",
    "identity_had_key",
    "list_certificates",
    "lock_certificate",
    "record_issuance",
    "replay_guard_exists",
    "stale_certificates",
    "supersede_certificate",
    "upsert_identity",
]


# The hot path's statements are built once, on the tables, and run with a dict of values:
# building a statement per call (and the ORM's bookkeeping around it) cost more than Postgres.
_IDENTITIES = Identity.metadata.tables[Identity.__tablename__]
_CERTIFICATES = Certificate.metadata.tables[Certificate.__tablename__]
_ATTESTATIONS = Attestation.metadata.tables[Attestation.__tablename__]
_REPLAY_GUARDS = ReplayGuard.metadata.tables[ReplayGuard.__tablename__]


def _upsert_identity_statement(dialect_insert: Any) -> Any:
    statement = dialect_insert(_IDENTITIES)
    refreshed = {name: statement.excluded[name] for name in ("account_id", "region", "attributes", "last_seen")}
    return statement.on_conflict_do_update(
        index_elements=[_IDENTITIES.c.method, _IDENTITIES.c.principal], set_=refreshed
    ).returning(_IDENTITIES.c.id)


_UPSERT_IDENTITY = {
    "postgresql": _upsert_identity_statement(pg_insert),
    "sqlite": _upsert_identity_statement(sqlite_insert),
}
_INSERT_CERTIFICATE = insert(_CERTIFICATES).returning(_CERTIFICATES.c.id)
_INSERT_ATTESTATION = insert(_ATTESTATIONS)
_ADD_REPLAY_GUARD = {
    name: dialect_insert(_REPLAY_GUARDS)
    .on_conflict_do_nothing(index_elements=[_REPLAY_GUARDS.c.digest])
    .returning(_REPLAY_GUARDS.c.id)
    for name, dialect_insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}


async def upsert_identity(session: AsyncSession, identity: NewIdentity, *, now: datetime) -> int:
    """The id of the identity row for (method, principal), created or refreshed.

    One ``INSERT … ON CONFLICT DO UPDATE``: many machines share a principal (every
    task of an ECS service has the same role ARN), and their first issuances race.
    """
    connection = await session.connection()
    values = {
        "method": identity.method,
        "principal": identity.principal,
        "account_id": identity.account_id,
        "region": identity.region,
        "attributes": dict(identity.attributes),
        "first_seen": now,
        "last_seen": now,
    }
    result = await connection.execute(_UPSERT_IDENTITY[connection.dialect.name], values)
    return int(result.scalar_one())


# On Postgres the three writes of an issuance are one statement (one round trip): data-modifying
# CTEs run exactly once, in order, whether or not the outer query reads them.
_RECORD_PG = text(
    """
WITH ident AS (
    INSERT INTO identities (method, principal, account_id, region, attributes, first_seen, last_seen)
    VALUES (:i_method, :i_principal, :i_account_id, :i_region, :i_attributes, :created_at, :created_at)
    ON CONFLICT (method, principal) DO UPDATE SET account_id = EXCLUDED.account_id, region = EXCLUDED.region,
        attributes = EXCLUDED.attributes, last_seen = EXCLUDED.last_seen
    RETURNING id
), cert AS (
    INSERT INTO certificates (serial, identity_id, issuer_id, role, method, fingerprint_sha256, public_key_sha256,
        key_type, subject, sans, identity_attributes, not_before, not_after, renewed_from, chain_started_at, status,
        certificate_pem, request_id, created_at)
    SELECT :serial, ident.id, :issuer_id, :role, :method, :fingerprint_sha256, :public_key_sha256, :key_type,
        :subject, :sans, :identity_attributes, :not_before, :not_after, :renewed_from, :chain_started_at, 'active',
        :certificate_pem, :request_id, :created_at
    FROM ident
    RETURNING id
), audit AS (
    INSERT INTO attestations (method, outcome, code, reason, principal, role, certificate_serial, remote_addr,
        request_id, created_at)
    SELECT :a_method, :a_outcome, :a_code, :a_reason, :a_principal, :a_role, :a_certificate_serial, :a_remote_addr,
        :a_request_id, :created_at
    FROM cert
)
SELECT id FROM cert
"""
).bindparams(
    bindparam("i_attributes", type_=_IDENTITIES.c.attributes.type),
    bindparam("sans", type_=_CERTIFICATES.c.sans.type),
    bindparam("identity_attributes", type_=_CERTIFICATES.c.identity_attributes.type),
    *(
        bindparam(name, type_=_CERTIFICATES.c.created_at.type)
        for name in ("created_at", "not_before", "not_after", "chain_started_at")
    ),
)


async def record_issuance(
    session: AsyncSession, *, identity: NewIdentity, certificate: NewCertificate, audit: AuditEntry, now: datetime
) -> int:
    """Record an issued certificate, its identity and its success audit row; the certificate's id."""
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        combined = {
            **_certificate_values(certificate, identity, now),
            "i_method": identity.method,
            "i_principal": identity.principal,
            "i_account_id": identity.account_id,
            "i_region": identity.region,
            "i_attributes": dict(identity.attributes),
            **{f"a_{name}": value for name, value in _audit_values(audit).items()},
        }
        return int((await connection.execute(_RECORD_PG, combined)).scalar_one())
    values = {
        **_certificate_values(certificate, identity, now),
        "identity_id": await upsert_identity(session, identity, now=now),
    }
    cert_id = (await connection.execute(_INSERT_CERTIFICATE, values)).scalar_one()
    await add_attestation(session, audit, now=now)
    return int(cert_id)


def _certificate_values(certificate: NewCertificate, identity: NewIdentity, now: datetime) -> dict[str, Any]:
    return {
        "serial": certificate.serial,
        "issuer_id": certificate.issuer_id,
        "role": certificate.role,
        "method": certificate.method,
        "fingerprint_sha256": certificate.fingerprint_sha256,
        "public_key_sha256": certificate.public_key_sha256,
        "key_type": certificate.key_type,
        "subject": certificate.subject,
        "sans": list(certificate.sans),
        "identity_attributes": dict(identity.attributes),
        "not_before": certificate.not_before,
        "not_after": certificate.not_after,
        "renewed_from": certificate.renewed_from,
        "chain_started_at": certificate.chain_started_at,
        "status": "active",
        "revoked_at": None,
        "revocation_reason": None,
        "certificate_pem": certificate.certificate_pem,
        "request_id": certificate.request_id,
        "created_at": now,
    }


def _audit_values(entry: AuditEntry) -> dict[str, Any]:
    return {
        "method": entry.method,
        "outcome": entry.outcome,
        "code": entry.code,
        "reason": entry.reason,
        "principal": entry.principal,
        "role": entry.role,
        "certificate_serial": entry.certificate_serial,
        "remote_addr": entry.remote_addr,
        "request_id": entry.request_id,
    }


async def add_attestation(session: AsyncSession, entry: AuditEntry, *, now: datetime) -> None:
    connection = await session.connection()
    await connection.execute(_INSERT_ATTESTATION, {**_audit_values(entry), "created_at": now})


# A renewal reads its certificate and identity on every request: columns, not ORM rows.
_GET_CERTIFICATE = select(*(_CERTIFICATES.c[f.name] for f in fields(CertificateRecord))).where(
    _CERTIFICATES.c.serial == bindparam("p_serial")
)
_LOCK_CERTIFICATE = _GET_CERTIFICATE.with_for_update()
_GET_IDENTITY = select(*(_IDENTITIES.c[f.name] for f in fields(IdentityRecord))).where(
    _IDENTITIES.c.id == bindparam("p_id")
)


async def get_certificate(session: AsyncSession, serial: str) -> CertificateRecord | None:
    """The certificate with ``serial`` (normalised lower-case hex, no leading zeros)."""
    connection = await session.connection()
    row = (await connection.execute(_GET_CERTIFICATE, {"p_serial": serial})).mappings().first()
    return None if row is None else CertificateRecord(**row)


async def lock_certificate(session: AsyncSession, serial: str) -> CertificateRecord | None:
    """Like :func:`get_certificate`, holding a row lock until the transaction ends (Postgres)."""
    connection = await session.connection()
    row = (await connection.execute(_LOCK_CERTIFICATE, {"p_serial": serial})).mappings().first()
    return None if row is None else CertificateRecord(**row)


async def supersede_certificate(session: AsyncSession, *, certificate_id: int) -> bool:
    """Mark an active certificate superseded; False if it was not active (revoked or renewed meanwhile)."""
    result = await session.execute(
        update(Certificate)
        .where(Certificate.id == certificate_id, Certificate.status == "active")
        .values(status="superseded")
        .returning(Certificate.id)
    )
    return result.scalar_one_or_none() is not None


async def get_identity(session: AsyncSession, identity_id: int) -> IdentityRecord | None:
    connection = await session.connection()
    row = (await connection.execute(_GET_IDENTITY, {"p_id": identity_id})).mappings().first()
    return None if row is None else IdentityRecord(**row)


async def identity_had_key(session: AsyncSession, *, identity_id: int, public_key_sha256: str) -> bool:
    """Whether any certificate of the identity was issued for the key with this hash (any status).

    Looked up through ``ix_certificates_public_key_sha256``: a key hash names at most a few rows.
    """
    found = await session.scalar(
        select(Certificate.id)
        .where(Certificate.public_key_sha256 == public_key_sha256, Certificate.identity_id == identity_id)
        .limit(1)
    )
    return found is not None


async def list_certificates(
    session: AsyncSession, *, limit: int = 50, status: str | None = None, principal: str | None = None
) -> Sequence[tuple[CertificateRecord, IdentityRecord]]:
    query = select(Certificate, Identity).join(Identity, Certificate.identity_id == Identity.id)
    if status:
        query = query.where(Certificate.status == status)
    if principal:
        query = query.where(Identity.principal == principal)
    rows = await session.execute(query.order_by(Certificate.id.desc()).limit(limit))
    return [(record_of(CertificateRecord, c), record_of(IdentityRecord, i)) for c, i in rows]


async def stale_certificates(
    session: AsyncSession,
    *,
    now: datetime,
    late_by: timedelta,
    renew_fraction: float,
    include_expired: bool,
    limit: int = 500,
) -> Sequence[tuple[CertificateRecord, IdentityRecord]]:
    """Active certificates (no successor, not revoked) whose renewal point passed more than ``late_by``
    before ``now``, soonest expiry first.

    An active certificate is the head of its renewal chain; one still active well past the point
    its machine was told to renew at is a missed rotation — each measured by its own lifetime, so
    healthy short-lived certificates are never listed. Expired ones only with ``include_expired``.
    """
    dialect = (await session.connection()).dialect.name
    query = (
        select(Certificate, Identity)
        .join(Identity, Certificate.identity_id == Identity.id)
        .where(
            Certificate.status == "active",
            past_renewal_point(dialect, renew_fraction=renew_fraction, cutoff=now - late_by),
        )
    )
    if not include_expired:
        query = query.where(Certificate.not_after > now)
    rows = await session.execute(query.order_by(Certificate.not_after).limit(limit))
    return [(record_of(CertificateRecord, c), record_of(IdentityRecord, i)) for c, i in rows]


async def certificates_of(
    session: AsyncSession, *, principal: str, limit: int = 500
) -> Sequence[tuple[CertificateRecord, str | None]]:
    """Every certificate of ``principal`` (any method), oldest first, with the serial it renewed."""
    previous = aliased(Certificate)
    rows = await session.execute(
        select(Certificate, previous.serial)
        .join(Identity, Certificate.identity_id == Identity.id)
        .outerjoin(previous, Certificate.renewed_from == previous.id)
        .where(Identity.principal == principal)
        .order_by(Certificate.id)
        .limit(limit)
    )
    return [(record_of(CertificateRecord, c), renewed) for c, renewed in rows]


# Replay guards ------------------------------------------------------------------------


async def add_replay_guard(
    session: AsyncSession, *, kind: str, digest: str, expires_at: datetime, now: datetime
) -> bool:
    """Record a single-use proof; False if the digest was recorded before (a replay).

    The unique ``digest`` decides (``ON CONFLICT DO NOTHING``), so it holds across replicas.
    """
    connection = await session.connection()
    values = {"kind": kind, "digest": digest, "expires_at": expires_at, "created_at": now}
    result = await connection.execute(_ADD_REPLAY_GUARD[connection.dialect.name], values)
    return result.scalar_one_or_none() is not None


async def replay_guard_exists(session: AsyncSession, *, digest: str) -> bool:
    """Whether a single-use proof with this digest was burnt already (a read; :func:`add_replay_guard` decides)."""
    return await session.scalar(select(ReplayGuard.id).where(ReplayGuard.digest == digest)) is not None


async def delete_expired_replay_guards(session: AsyncSession, *, now: datetime, batch: int = 5000) -> int:
    """Delete up to ``batch`` guards whose proofs can no longer be replayed; how many went."""
    ids = select(ReplayGuard.id).where(ReplayGuard.expires_at < now).limit(batch).scalar_subquery()
    result = await session.execute(delete(ReplayGuard).where(ReplayGuard.id.in_(ids)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def count_replay_guards(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(ReplayGuard)) or 0)
