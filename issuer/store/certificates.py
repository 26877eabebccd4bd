"""Issued certificates: recorded once with their identity and audit row, then read, superseded and listed.

:func:`record_issuance` is the hot path. On Postgres its three writes are one statement
(one round trip) built once: data-modifying CTEs run exactly once, in order, whether or
not the outer query reads them; each step is spelled by the module that owns its table
(:mod:`issuer.store.identities`, :mod:`issuer.store.audit`). On SQLite the same writes are
three statements.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, exists, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from issuer.store import audit, hot, identities
from issuer.store.denials import IN_FORCE_JSON, InForce, denials_from_json
from issuer.store.models import Certificate, Identity, ReplayGuard
from issuer.store.records import AuditEntry, CertificateRecord, IdentityRecord, NewCertificate, NewIdentity, record_of
from issuer.store.renewal_due import past_renewal_point

__all__ = [
    "BURN_PRELUDE",
    "SUPERSEDE_BURNT_STEP",
    "SUPERSEDE_STEP",
    "RenewalFacts",
    "certificates_of",
    "get_certificate",
    "list_certificates",
    "lock_certificate",
    "record_claimed",
    "record_issuance",
    "renewal_facts",
    "stale_certificates",
    "supersede_certificate",
]

_CERTIFICATES = Certificate.metadata.tables[Certificate.__tablename__]
_INSERT = insert(_CERTIFICATES).returning(_CERTIFICATES.c.id)
_CERTIFICATE_COLUMNS = (
    "serial, identity_id, issuer_id, role, method, fingerprint_sha256, public_key_sha256, key_type, subject, sans, "
    "identity_attributes, not_before, not_after, renewed_from, chain_started_at, status, certificate_pem, "
    "request_id, created_at"
)


_CERT_STEP = f"""cert AS (
    INSERT INTO certificates ({_CERTIFICATE_COLUMNS})
    SELECT :serial, ident.id, :issuer_id, :role, :method, :fingerprint_sha256, :public_key_sha256, :key_type,
        :subject, :sans, :identity_attributes, :not_before, :not_after, :renewed_from, :chain_started_at, 'active',
        :certificate_pem, :request_id, :created_at
    FROM ident
    RETURNING id
)"""  # noqa: S608 - the interpolated part is this module's constant column list


def _record_sql(claim: str | None, prelude: str = "") -> str:
    """The record statement: identity upsert, certificate, audit row (and first, a claim step, after
    the steps of ``prelude`` if any: ``name AS (...)`` the claim may read)."""
    steps = [] if claim is None else [*([prelude] if prelude else []), f"claim AS ({claim}\n)"]
    steps += [
        f"ident AS ({identities.upsert_step(prefix='i_', after=None if claim is None else 'claim')}\n)",
        _CERT_STEP,
        f"audit AS ({audit.insert_after('cert', prefix='a_')}\n)",
    ]
    # The interpolated parts are this package's own constant SQL, never input.
    return "WITH " + ",\n".join(steps) + "\nSELECT id FROM cert"


# The record statement's parameters that need their column's type (JSON, arrays, timestamps).
_TYPED = {
    "i_attributes": identities.IDENTITIES.c.attributes.type,
    "sans": _CERTIFICATES.c.sans.type,
    "identity_attributes": _CERTIFICATES.c.identity_attributes.type,
    **{name: _CERTIFICATES.c.created_at.type for name in ("created_at", "not_before", "not_after", "chain_started_at")},
}
# The record statement's own steps; a prelude's are named ``name AS (`` at its start or after a comma.
_STEPS = ("claim", "ident", "cert", "audit")
_PRELUDE_STEP = re.compile(r"(?:^|,)\s*(\w+) AS \(")


def _record_statement(claim: str | None, prelude: str = "") -> hot.HotStatement:
    sql = _record_sql(claim, prelude)
    clause = text(sql).bindparams(*(bindparam(name, type_=type_) for name, type_ in _TYPED.items()))
    if claim is None:
        return hot.HotStatement(clause)
    # Claimed records run outside a transaction: concurrent requests' copies go as one statement.
    ctes = (*_STEPS, *_PRELUDE_STEP.findall(prelude))
    return hot.HotStatement(clause, batch=hot.copies_of_ctes(sql, ctes=ctes, types=_TYPED))


_RECORD_PG = _record_statement(None)
# One statement per claim step (a handful: one per method that claims this way), built on first use.
_RECORD_CLAIMED: dict[tuple[str, str], hot.HotStatement] = {}


async def record_issuance(
    session: AsyncSession, *, identity: NewIdentity, certificate: NewCertificate, audit_entry: AuditEntry, now: datetime
) -> int:
    """Record an issued certificate, its identity and its success audit row; the certificate's id."""
    connection = await session.connection()
    values = _values(certificate, identity, now)
    if connection.dialect.name == "postgresql":
        combined = {
            **values,
            **identities.parameters(identity, prefix="i_"),
            **audit.parameters(audit_entry, prefix="a_"),
        }
        rows = await hot.fetch(session, _RECORD_PG, combined)
        return int(rows[0]["id"])
    values["identity_id"] = await identities.upsert_identity(session, identity, now=now)
    cert_id = (await connection.execute(_INSERT, values)).scalar_one()
    await audit.record(session, audit_entry, now=now)
    return int(cert_id)


async def record_claimed(
    session: AsyncSession,
    *,
    claim: str,
    claim_params: Mapping[str, Any],
    prelude: str = "",
    identity: NewIdentity,
    certificate: NewCertificate,
    audit_entry: AuditEntry,
    now: datetime,
) -> int | None:
    """Postgres: claim and record in one statement, outside any transaction; the certificate's id,
    or None when the claim matched nothing (and so nothing was written).

    ``claim`` is the SQL of a data-modifying CTE step that returns one row when the claim holds
    (a token consumed, a certificate superseded); its parameters are ``claim_params`` (named
    ``c_*``) and the record's own (``:created_at``, ``:request_id``, ``:serial``, ...). The
    identity, the certificate and the audit row are written only after it returned a row, and
    the whole statement commits or fails as one. ``prelude``: CTE steps before the claim, which
    it may read (a replay guard burnt with the claim); they are written even when the claim
    matches nothing.
    """
    statement = _RECORD_CLAIMED.get((prelude, claim))
    if statement is None:
        statement = _RECORD_CLAIMED[(prelude, claim)] = _record_statement(claim, prelude)
    combined = {
        **_values(certificate, identity, now),
        **identities.parameters(identity, prefix="i_"),
        **audit.parameters(audit_entry, prefix="a_"),
        **claim_params,
    }
    # Two copies in one batch must not write the same identity row (nor the token or certificate it claims).
    exclusive = (identity.method, identity.principal)
    rows = await hot.fetch(session, statement, combined, autocommit=True, exclusive=exclusive)
    return int(rows[0]["id"]) if rows else None


def _values(certificate: NewCertificate, identity: NewIdentity, now: datetime) -> dict[str, Any]:
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


# A renewal reads its certificate on every request: columns, not ORM rows.
_GET = select(*(_CERTIFICATES.c[f.name] for f in fields(CertificateRecord))).where(
    _CERTIFICATES.c.serial == bindparam("p_serial")
)
_LOCK = hot.HotStatement(_GET.with_for_update())
_GET_HOT = hot.HotStatement(_GET)
_SUPERSEDE = hot.HotStatement(
    update(_CERTIFICATES)
    .where(_CERTIFICATES.c.id == bindparam("p_id"), _CERTIFICATES.c.status == "active")
    .values(status="superseded")
    .returning(_CERTIFICATES.c.id)
)


_GUARDS = ReplayGuard.metadata.tables[ReplayGuard.__tablename__]
_EARLIER = _CERTIFICATES.alias("earlier")
_I = "i__"  # identity columns' prefix in the renewal read
_RENEWAL_COLUMNS = (
    *(_CERTIFICATES.c[f.name] for f in fields(CertificateRecord)),
    *(identities.IDENTITIES.c[f.name].label(_I + f.name) for f in fields(IdentityRecord)),
    exists().where(_GUARDS.c.digest == bindparam("p_digest")).label("spent"),
    exists()
    .where(
        _EARLIER.c.identity_id == _CERTIFICATES.c.identity_id,
        _EARLIER.c.public_key_sha256 == bindparam("p_key"),
    )
    .label("had_key"),
)


def _renewal_read(*columns: Any) -> Any:
    return (
        select(*_RENEWAL_COLUMNS, *columns)
        .join_from(_CERTIFICATES, identities.IDENTITIES, identities.IDENTITIES.c.id == _CERTIFICATES.c.identity_id)
        .where(_CERTIFICATES.c.serial == bindparam("p_serial"))
    )


# On Postgres the deny list comes along (a JSON column); SQLite reads it apart, in the transaction.
_RENEWAL_FACTS = hot.HotStatement(_renewal_read(IN_FORCE_JSON), elsewhere=_renewal_read(), batch="union")
_GUARD_SEEN = hot.HotStatement(select(_GUARDS.c.id).where(_GUARDS.c.digest == bindparam("p_digest")), batch="union")


@dataclass(frozen=True, slots=True)
class RenewalFacts:
    """What a renewal needs to know before deciding, read in one statement."""

    certificate: CertificateRecord | None
    identity: IdentityRecord | None
    spent: bool  # the renewal token's digest is a replay guard already
    had_key: bool  # the identity had a certificate for the new key (any status, this one included)
    denials: Sequence[InForce] = ()  # the deny list in force, read in the same statement


# A renewal's claim in the statement that records its successor (see record_claimed).
SUPERSEDE_STEP = "UPDATE certificates SET status = 'superseded' WHERE id = :c_prior AND status = 'active' RETURNING id"
# The same, when the renewal token is burnt in that statement too: the prelude records its digest
# (a replay of it matches nothing), and the claim holds only if that happened.
BURN_PRELUDE = (
    "burn AS (INSERT INTO replay_guards (kind, digest, expires_at, created_at) "
    "VALUES ('renew', :c_digest, :c_expires_at, :created_at) ON CONFLICT (digest) DO NOTHING RETURNING id)"
)
SUPERSEDE_BURNT_STEP = (
    "UPDATE certificates SET status = 'superseded' "
    "WHERE id = :c_prior AND status = 'active' AND EXISTS (SELECT 1 FROM burn) RETURNING id"
)


async def renewal_facts(
    session: AsyncSession, *, serial: str, key_sha256: str, guard_digest: str | None, now: datetime
) -> RenewalFacts:
    """The certificate with ``serial`` and its identity, whether ``guard_digest`` was burnt, and whether
    the identity ever had ``key_sha256``: one read, outside any transaction on Postgres.
    """
    params = {"p_serial": serial, "p_key": key_sha256, "p_digest": guard_digest, "p_now": now}
    row = await hot.fetch_one(session, _RENEWAL_FACTS, params, autocommit=True)
    if row is None:
        spent = guard_digest is not None and (
            await hot.fetch_one(session, _GUARD_SEEN, {"p_digest": guard_digest}, autocommit=True) is not None
        )
        return RenewalFacts(certificate=None, identity=None, spent=spent, had_key=False)
    identity = IdentityRecord(**{f.name: row[_I + f.name] for f in fields(IdentityRecord)})
    certificate = CertificateRecord(**{f.name: row[f.name] for f in fields(CertificateRecord)})
    spent, had_key = bool(row["spent"]), bool(row["had_key"])
    denials = denials_from_json(row["denials"]) if "denials" in row else []
    return RenewalFacts(certificate=certificate, identity=identity, spent=spent, had_key=had_key, denials=denials)


async def get_certificate(session: AsyncSession, serial: str) -> CertificateRecord | None:
    """The certificate with ``serial`` (normalised lower-case hex, no leading zeros)."""
    row = await hot.fetch_one(session, _GET_HOT, {"p_serial": serial})
    return None if row is None else CertificateRecord(**row)


async def lock_certificate(session: AsyncSession, serial: str) -> CertificateRecord | None:
    """Like :func:`get_certificate`, holding a row lock until the transaction ends (Postgres)."""
    row = await hot.fetch_one(session, _LOCK, {"p_serial": serial})
    return None if row is None else CertificateRecord(**row)


async def supersede_certificate(session: AsyncSession, *, certificate_id: int) -> bool:
    """Mark an active certificate superseded; False if it was not active (revoked or renewed meanwhile)."""
    return await hot.fetch_one(session, _SUPERSEDE, {"p_id": certificate_id}) is not None


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
