"""``issuer ca status``: every issuer and root of the registry, their leaves, and what needs doing.

Reads only the database and (to say whether a root key is here or offline) the CA directory;
no key and no passphrase are needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.service.ca.lifecycle import (
    EXPIRY_WARNING,
    LeafCounts,
    Phase,
    expiry_warnings,
    issued_by,
    phase_of,
    short,
    when,
)
from issuer.service.ca.registry import certificates_of, truststore_of
from issuer.service.ca.rotation import leaf_counts
from issuer.service.ca.signers import resolve_file_ref
from issuer.store import issuers as store
from issuer.store.records import IssuerRecord, RootRecord

__all__ = ["CAStatus", "IssuerStatus", "RootStatus", "ca_status", "key_location"]


@dataclass(frozen=True, slots=True)
class IssuerStatus:
    record: IssuerRecord
    phase: Phase
    leaves: LeafCounts
    root_fingerprint: str | None  # the registered root it chains to
    in_truststore: bool


@dataclass(frozen=True, slots=True)
class RootStatus:
    record: RootRecord
    key: str  # "here", "offline", "none", or a non-file key reference
    issuers: int  # issuers under it that are not retired


@dataclass(frozen=True, slots=True)
class CAStatus:
    """The registry at ``now``: ``warnings`` are expiries within the window (what ``--check`` fails on),
    ``notes`` the next steps of a rotation in progress."""

    now: datetime
    issuers: tuple[IssuerStatus, ...]
    roots: tuple[RootStatus, ...]
    warnings: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def expiring(self) -> bool:
        return bool(self.warnings)


def key_location(key_ref: str | None, *, ca_dir: Path) -> str:
    """Where a root key is, seen from this machine: ``here``, ``offline`` (a file not present), ``none``."""
    if not key_ref:
        return "none"
    if not key_ref.startswith("file:"):
        return key_ref
    return "here" if resolve_file_ref(key_ref, ca_dir=ca_dir).exists() else "offline"


async def ca_status(
    sessions: async_sessionmaker[AsyncSession], *, now: datetime, ca_dir: Path, warn_within: timedelta = EXPIRY_WARNING
) -> CAStatus:
    """The registry's issuers (newest first) and roots with leaf counts, warnings and notes.

    Raises ConfigError when the registry is empty.
    """
    async with sessions() as session:
        issuers = await store.list_issuers(session)
        roots = await store.list_roots(session)
        counts = await leaf_counts(session, now=now)
    trusted = {
        c.fingerprint(hashes.SHA256()) for c in x509.load_pem_x509_certificates(truststore_of(issuers, roots, now=now))
    }
    root_certs = [(r, x509.load_pem_x509_certificate(r.certificate_pem.encode())) for r in roots]
    rows = []
    for record in sorted(issuers, key=lambda r: -r.id):
        chain = certificates_of(record)
        anchor = next((r for r, cert in root_certs if issued_by(chain[-1], cert)), None)
        rows.append(
            IssuerStatus(
                record=record,
                phase=phase_of(record, now=now),
                leaves=counts.get(record.id, LeafCounts()),
                root_fingerprint=anchor.fingerprint_sha256 if anchor else None,
                in_truststore=chain[0].fingerprint(hashes.SHA256()) in trusted,
            )
        )
    root_rows = tuple(
        RootStatus(
            record=r,
            key=key_location(r.key_ref, ca_dir=ca_dir),
            issuers=sum(1 for i in rows if i.root_fingerprint == r.fingerprint_sha256 and i.phase != "retired"),
        )
        for r in roots
    )
    return CAStatus(
        now=now,
        issuers=tuple(rows),
        roots=root_rows,
        warnings=tuple(expiry_warnings(issuers, roots, now=now, warn_within=warn_within)),
        notes=tuple(_notes(rows, now=now)),
    )


def _notes(rows: Sequence[IssuerStatus], *, now: datetime) -> list[str]:
    notes = []
    for row in rows:
        fp = short(row.record.fingerprint_sha256)
        if row.phase == "prepared":
            notes.append(
                f"{fp} is prepared: make sure API Gateway's truststore holds it, then `issuer ca activate {fp}`"
            )
        elif row.phase == "previous" and row.leaves.live:
            assert row.leaves.last_expiry is not None
            notes.append(
                f"{fp} still has {row.leaves.live} live leaves; retire it after {when(row.leaves.last_expiry)}"
            )
        elif row.phase == "previous":
            notes.append(f"{fp} has no live leaves left: `issuer ca retire {fp}`, then publish the truststore")
        elif row.phase == "expired":
            notes.append(f"{fp} has expired (it is out of the truststore): `issuer ca retire {fp}` tidies it")
    return notes
