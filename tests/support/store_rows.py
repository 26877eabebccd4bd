"""Rows the store tests write directly: an active issuing CA and a certificate record for it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from issuer.store import issuers
from issuer.store.records import NewCertificate


async def add_active_issuer(sessions: Any, *, now: datetime) -> int:
    """An active issuing CA row (no key behind it), valid from a day before ``now``; its id."""
    async with sessions() as session, session.begin():
        return await issuers.add_issuer(
            session,
            fingerprint_sha256="a" * 64,
            subject="CN=Issuing",
            serial="1",
            certificate_pem="PEM",
            chain_pem="",
            key_ref="file:issuing.key.pem",
            state="active",
            not_before=now - timedelta(days=1),
            not_after=now + timedelta(days=300),
            now=now,
        )


def issued_row(
    serial: str,
    *,
    issuer_id: int,
    request_id: str,
    not_after: datetime,
    method: str = "aws-iam",
    renewed_from: int | None = None,
) -> NewCertificate:
    """A certificate record named after ``serial``: ``CN=<serial>``, SAN ``spiffe://example.org/<serial>``,
    an hour long, its renewal chain started three days before it ends."""
    return NewCertificate(
        serial=serial,
        issuer_id=issuer_id,
        role="web",
        method=method,
        fingerprint_sha256=serial.rjust(64, "f"),
        public_key_sha256=serial.rjust(64, "e"),
        key_type="ec-p256",
        subject=f"CN={serial}",
        sans=(f"spiffe://example.org/{serial}",),
        not_before=not_after - timedelta(hours=1),
        not_after=not_after,
        certificate_pem=f"PEM {serial}",
        request_id=request_id,
        chain_started_at=not_after - timedelta(days=3),
        renewed_from=renewed_from,
    )
