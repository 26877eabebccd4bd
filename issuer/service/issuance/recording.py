"""What recording an issued certificate writes, read from the certificate the signer returned, and
the log line that says it was issued: shared by both ways the pipeline records (see
:mod:`issuer.service.issuance.pipeline`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ca.csr import CheckedCSR
from issuer.service.issuance.model import Attempt, serial_hex
from issuer.service.issuance.phases import Identified
from issuer.store.records import AuditEntry, NewCertificate, NewIdentity

__all__ = ["Rows", "log_issued", "rows_of"]

log = logging.getLogger("issuer.service")


@dataclass(frozen=True, slots=True)
class Rows:
    identity: NewIdentity
    certificate: NewCertificate
    audit: AuditEntry


def rows_of(
    identified: Identified[Any],
    csr: CheckedCSR,
    certificate: x509.Certificate,
    issuer_id: int,
    attempt: Attempt,
    now: datetime,
) -> Rows:
    """What recording ``certificate`` writes: its identity, its row, its success audit row."""
    identity, role, prior = identified.identity, identified.role, identified.prior
    serial = serial_hex(certificate.serial_number)
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return Rows(
        identity=NewIdentity(
            method=identity.method,
            principal=identity.principal,
            account_id=identity.account_id,
            region=identity.region,
            attributes=identity.attributes,
        ),
        certificate=NewCertificate(
            serial=serial,
            issuer_id=issuer_id,
            role=role.name,
            method=identity.method,
            fingerprint_sha256=certificate.fingerprint(hashes.SHA256()).hex(),
            public_key_sha256=csr.public_key_sha256_hex,
            key_type=csr.key_type,
            subject=certificate.subject.rfc4514_string(),
            sans=tuple(str(name.value) for name in sans),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
            request_id=attempt.ctx.request_id,
            chain_started_at=prior.chain_started_at if prior is not None else now,
            renewed_from=prior.id if prior is not None else None,
        ),
        audit=AuditEntry(
            method=attempt.method,
            outcome="success",
            request_id=attempt.ctx.request_id,
            principal=identity.principal,
            role=role.name,
            certificate_serial=serial,
            remote_addr=attempt.ctx.remote_addr,
            reason=f"renewed {prior.serial}" if prior is not None else None,
        ),
    )


def log_issued(rows: Rows, identified: Identified[Any], attempt: Attempt) -> None:
    serial, prior = rows.certificate.serial, identified.prior
    not_after = rows.certificate.not_after.isoformat()
    log.info(
        "issued serial=%s method=%s principal=%s role=%s not_after=%s%s",
        serial,
        attempt.method,
        identified.identity.principal,
        identified.role.name,
        not_after,
        f" renewed_from={prior.serial}" if prior is not None else "",
        extra={
            "event": "issued",
            "serial": serial,
            "method": attempt.method,
            "principal": identified.identity.principal,
            "role": identified.role.name,
            "not_after": not_after,
            "renewed_from": prior.serial if prior is not None else None,
        },
    )
