"""What the store hands to the rest of the service: frozen values, never ORM rows.

ORM rows are built and changed only inside ``issuer.store``; everything else reads
these records and calls repository functions with values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

__all__ = [
    "AuditEntry",
    "BindingRecord",
    "CertificateRecord",
    "IdentityRecord",
    "IssuerRecord",
    "NewCertificate",
    "NewIdentity",
    "RootRecord",
    "TokenRecord",
    "record_of",
]

R = TypeVar("R")


def record_of(cls: type[R], row: Any) -> R:
    """Copy the attributes ``cls`` declares from an ORM row (or any object) into a frozen record."""
    return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: int
    name: str
    role: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by_request_id: str | None
    certificate_serial: str | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class BindingRecord:
    """An EC2 instance's trust-on-first-use binding."""

    account_id: str
    instance_id: str
    region: str
    role: str
    nonce_hash: str
    pending_time: datetime
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class IdentityRecord:
    id: int
    method: str
    principal: str
    account_id: str | None
    region: str | None
    attributes: Mapping[str, Any]
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    id: int
    serial: str
    identity_id: int
    issuer_id: int
    role: str
    method: str
    fingerprint_sha256: str
    public_key_sha256: str
    key_type: str
    subject: str
    sans: list[str]
    identity_attributes: Mapping[str, Any]
    not_before: datetime
    not_after: datetime
    renewed_from: int | None
    chain_started_at: datetime
    status: str
    revoked_at: datetime | None
    revocation_reason: str | None
    certificate_pem: str
    request_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class IssuerRecord:
    """One issuing CA of the registry."""

    id: int
    fingerprint_sha256: str
    subject: str
    serial: str
    certificate_pem: str
    chain_pem: str
    key_ref: str
    state: str
    not_before: datetime
    not_after: datetime
    created_at: datetime
    updated_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None


@dataclass(frozen=True, slots=True)
class RootRecord:
    id: int
    fingerprint_sha256: str
    subject: str
    certificate_pem: str
    key_ref: str | None
    state: str
    not_before: datetime
    not_after: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class NewIdentity:
    method: str
    principal: str
    account_id: str | None
    region: str | None
    attributes: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class NewCertificate:
    serial: str
    issuer_id: int
    role: str
    method: str
    fingerprint_sha256: str
    public_key_sha256: str
    key_type: str
    subject: str
    sans: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    certificate_pem: str
    request_id: str
    chain_started_at: datetime
    renewed_from: int | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row of the audit trail: an attempt, success or failure."""

    method: str
    outcome: str  # success | failure
    request_id: str
    code: str | None = None
    reason: str | None = None
    principal: str | None = None
    role: str | None = None
    certificate_serial: str | None = None
    remote_addr: str | None = None


@dataclass(frozen=True, slots=True)
class OperatorRow:
    """One operator action as it is written: who, what, with what, and how it ended."""

    actor: str
    action: str
    outcome: str  # success | failure
    request_id: str
    arguments: Mapping[str, Any]
    code: str | None = None
    reason: str | None = None
    principal: str | None = None  # the identity acted on, when there is one
    remote_addr: str | None = None
