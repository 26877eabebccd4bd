"""SQLAlchemy 2 models: the facts DESIGN §6 says the store keeps.

Security-relevant uniqueness (token hash, replay digests, instance bindings,
certificate serials) lives in constraints here, so it holds across replicas.
Every timestamp is timezone-aware UTC, on Postgres and on SQLite alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that refuses naive values and always returns aware UTC.

    SQLite keeps no zone; Postgres returns aware values. This makes both the same.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# BIGINT keys on Postgres; SQLite only auto-increments INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Identity(Base):
    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("method", "principal"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    method: Mapped[str] = mapped_column(String(16))
    principal: Mapped[str] = mapped_column(String(2048))
    account_id: Mapped[str | None] = mapped_column(String(12))
    region: Mapped[str | None] = mapped_column(String(32))
    attributes: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())


class CaRoot(Base):
    """A trust anchor: the root certificates clients and the truststore trust."""

    __tablename__ = "ca_roots"
    __table_args__ = (CheckConstraint("state IN ('active', 'retired')", name="state"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    fingerprint_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    subject: Mapped[str] = mapped_column(String(1024))
    certificate_pem: Mapped[str] = mapped_column(Text)
    # Where the root key lives (file:/path, kms:arn); it may be offline (only `ca rotate` needs it).
    key_ref: Mapped[str | None] = mapped_column(String(1024))
    state: Mapped[str] = mapped_column(String(16))
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The last CRL number of this root's CRLs (signed here or imported): it only ever grows.
    crl_number: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class CaRootCrl(Base):
    """A root's current CRL — signed by the root key here, or made where the key is and imported."""

    __tablename__ = "ca_root_crls"
    __table_args__ = (
        UniqueConstraint("root_id", "crl_number"),
        CheckConstraint("source IN ('signed', 'imported')", name="source"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    root_id: Mapped[int] = mapped_column(Id, ForeignKey("ca_roots.id"))
    crl_number: Mapped[int] = mapped_column(BigInteger)
    this_update: Mapped[datetime] = mapped_column(UTCDateTime())
    next_update: Mapped[datetime] = mapped_column(UTCDateTime())
    # SHA-256 of the entries listed (the issuing CAs revoked under this root), as for ca_crls.
    entries_sha256: Mapped[str] = mapped_column(String(64))
    revoked_count: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    der: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CaIssuer(Base):
    """An issuing CA: prepared (in the truststore, not signing), active (signing; at most one), retired."""

    __tablename__ = "ca_issuers"
    __table_args__ = (
        CheckConstraint("state IN ('prepared', 'active', 'retired')", name="state"),
        # At most one issuer signs at a time, whichever replica activated it.
        Index(
            "uq_ca_issuers_one_active",
            "state",
            unique=True,
            postgresql_where=text("state = 'active'"),
            sqlite_where=text("state = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    fingerprint_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    subject: Mapped[str] = mapped_column(String(1024))
    serial: Mapped[str] = mapped_column(String(64))
    certificate_pem: Mapped[str] = mapped_column(Text)
    # The intermediates between this issuer and a root, PEM, nearest first (empty when a root signed it).
    chain_pem: Mapped[str] = mapped_column(Text, default="")
    key_ref: Mapped[str] = mapped_column(String(1024))
    state: Mapped[str] = mapped_column(String(16))
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The last CRL number this issuer used: only ever incremented, with the CRL that carries it.
    crl_number: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class CaCrl(Base):
    """An issuer's current CRL, as every replica serves it; unique per (issuer, CRL number)."""

    __tablename__ = "ca_crls"
    __table_args__ = (UniqueConstraint("issuer_id", "crl_number"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    issuer_id: Mapped[int] = mapped_column(Id, ForeignKey("ca_issuers.id"))
    crl_number: Mapped[int] = mapped_column(BigInteger)
    this_update: Mapped[datetime] = mapped_column(UTCDateTime())
    next_update: Mapped[datetime] = mapped_column(UTCDateTime())
    # SHA-256 of the entries listed (serial, date, reason): a CRL is current only while they still are.
    entries_sha256: Mapped[str] = mapped_column(String(64))
    revoked_count: Mapped[int] = mapped_column(Integer)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Certificate(Base):
    __tablename__ = "certificates"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'revoked', 'superseded')", name="status"),
        Index("ix_certificates_identity_id", "identity_id"),
        Index("ix_certificates_issuer_id", "issuer_id"),
        Index("ix_certificates_not_after", "not_after"),
        # The revoked, unexpired certificates (CRL, /v1/revoked) without scanning every live one.
        Index(
            "ix_certificates_revoked_not_after",
            "not_after",
            postgresql_where=text("status = 'revoked'"),
            sqlite_where=text("status = 'revoked'"),
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)  # lower-case hex
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"))
    issuer_id: Mapped[int] = mapped_column(ForeignKey("ca_issuers.id"))
    role: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(16))
    fingerprint_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    public_key_sha256: Mapped[str] = mapped_column(String(64), index=True)
    key_type: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(1024))
    sans: Mapped[list[str]] = mapped_column(Json, default=list)
    # The verified facts this certificate was issued for (renewals keep them).
    identity_attributes: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    renewed_from: Mapped[int | None] = mapped_column(ForeignKey("certificates.id"))
    # When the machine last attested (not renewed): how long a renewal chain has run.
    chain_started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="active")
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revocation_reason: Mapped[str | None] = mapped_column(String(64))
    certificate_pem: Mapped[str] = mapped_column(Text)
    request_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Attestation(Base):
    """Every attempt, success or failure: the audit trail."""

    __tablename__ = "attestations"
    __table_args__ = (
        CheckConstraint("outcome IN ('success', 'failure')", name="outcome"),
        Index("ix_attestations_created_at", "created_at"),
        Index("ix_attestations_principal", "principal"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    method: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(8))
    code: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    principal: Mapped[str | None] = mapped_column(String(2048))
    role: Mapped[str | None] = mapped_column(String(64))
    certificate_serial: Mapped[str | None] = mapped_column(String(64))
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Operator actions (method 'admin'): who (an IAM ARN, or local:user@host), what, with which arguments.
    actor: Mapped[str | None] = mapped_column(String(2048))
    action: Mapped[str | None] = mapped_column(String(64))
    arguments: Mapped[dict[str, Any] | None] = mapped_column(Json)


class Denial(Base):
    """The deny list: identities that may not attest, renew or bootstrap again, until removed or ``until``."""

    __tablename__ = "denials"
    __table_args__ = (
        CheckConstraint("kind IN ('principal', 'instance', 'account')", name="kind"),
        Index("ix_denials_removed_at", "removed_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(2048))  # a principal pattern, an instance ID, an account ID
    reason: Mapped[str] = mapped_column(Text)
    until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    request_id: Mapped[str] = mapped_column(String(64))
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    removed_by: Mapped[str | None] = mapped_column(String(2048))


class InstanceBinding(Base):
    """Trust on first use for EC2: the first success binds an instance to a nonce."""

    __tablename__ = "instance_bindings"
    __table_args__ = (UniqueConstraint("account_id", "instance_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(12))
    instance_id: Mapped[str] = mapped_column(String(32))
    region: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(64))
    nonce_hash: Mapped[str] = mapped_column(String(64))
    pending_time: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReplayGuard(Base):
    """Single-use proofs (STS signatures): a second use violates the unique digest."""

    __tablename__ = "replay_guards"
    __table_args__ = (Index("ix_replay_guards_expires_at", "expires_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class JoinToken(Base):
    __tablename__ = "join_tokens"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    used_by_request_id: Mapped[str | None] = mapped_column(String(64))
    certificate_serial: Mapped[str | None] = mapped_column(String(64))
    # Set by `issuer token revoke` (which also moves expires_at to that moment).
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditChainEntry(Base):
    """The hash chain over ``attestations``: one entry per sealed row, in the order it was sealed.

    Written only by the sealer (``issuer.audit.sealer``), after the rows' own transactions
    committed, so it depends on no writer of audit rows. See ``issuer.audit.canonical``.
    """

    __tablename__ = "audit_chain"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    attestation_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    format: Mapped[int] = mapped_column(SmallInteger)
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))
    sealed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditCheckpoint(Base):
    """A signed statement "the chain's hash at ``seq`` was ``head_hash``", by a key the database cannot use."""

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    head_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    # x509:<issuing CA certificate SHA-256> (an issuer's key) or kms:<key ARN> (a dedicated KMS key).
    key_ref: Mapped[str] = mapped_column(String(1024))
    algorithm: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(Text)  # base64
    format: Mapped[int] = mapped_column(SmallInteger)


class EventCursor(Base):
    """How far a consumer of the sealed chain (the EventBridge relay) has got: the last ``seq`` it handled."""

    __tablename__ = "event_cursor"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class EventOutbox(Base):
    """Events that no audit row records (a certificate expiring unrenewed), once per ``dedupe_key``."""

    __tablename__ = "event_outbox"
    __table_args__ = (
        Index(
            "ix_event_outbox_unpublished",
            "id",
            postgresql_where=text("published_at IS NULL"),
            sqlite_where=text("published_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(256), unique=True)
    detail_type: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
