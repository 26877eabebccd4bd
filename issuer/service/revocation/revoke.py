"""Revoking certificates: the operator's use case behind ``issuer revoke``, and the RFC 5280 reasons.

A certificate is revoked by serial, or every certificate of an identity at once: by principal
(instance ID, IAM ARN, token name) or by EC2 instance. Revoking an identity revokes its *live*
certificates — the active one and those a renewal superseded but that have not expired, since a
superseded certificate still verifies until its ``notAfter``. A revoked certificate cannot renew
(:func:`issuer.policy.check_renewal`), appears on its issuer's CRL and on ``GET /v1/revoked`` at
once, and every revocation leaves an audit row (``attestations``, method ``revoke``).

Revoking an identity does not stop it from attesting again. For an EC2 instance the caller
chooses whether its trust-on-first-use binding is kept (the instance can attest again with the
nonce it holds) or forgotten (that nonce stops working; the next attestation binds the instance anew).

Certificates of an issuer whose backend keeps its own revocation list (AWS Private CA) are also
revoked there, after the local revocation has committed (:mod:`issuer.service.revocation.upstream`):
a backend that cannot be reached leaves the local revocation in force and is reported in
``Revocation.upstream``; revoking again retries.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cryptography import x509
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from issuer.errors import ClientError, Conflict, NotFound
from issuer.service.issuance.model import normalise_serial
from issuer.service.revocation.upstream import UpstreamResult, UpstreamRevocations, UpstreamTarget
from issuer.store import audit, bindings, identities
from issuer.store import revocations as store
from issuer.store.records import AuditEntry, CertificateRecord, IdentityRecord

__all__ = [
    "REASONS",
    "BindingFate",
    "Revocation",
    "RevocationTarget",
    "RevokedCertificate",
    "parse_reason",
    "reason_flag",
    "revoke",
]

log = logging.getLogger("issuer.revocation")

Sessions = async_sessionmaker[AsyncSession]
TargetKind = Literal["serial", "principal", "instance"]
BindingFate = Literal["none", "kept", "forgotten"]

# RFC 5280 §5.3.1 CRLReason names, as the CRL and the revocation list spell them
# (removeFromCRL is for delta CRLs only; value 7 is unused).
REASONS: dict[str, x509.ReasonFlags] = {
    flag.value: flag
    for flag in (
        x509.ReasonFlags.unspecified,
        x509.ReasonFlags.key_compromise,
        x509.ReasonFlags.ca_compromise,
        x509.ReasonFlags.affiliation_changed,
        x509.ReasonFlags.superseded,
        x509.ReasonFlags.cessation_of_operation,
        x509.ReasonFlags.certificate_hold,
        x509.ReasonFlags.privilege_withdrawn,
        x509.ReasonFlags.aa_compromise,
    )
}
_BY_KEY = {name.lower(): name for name in REASONS}
_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8}(?:[0-9a-f]{9})?")
# Rounds of locking an identity's certificates until no renewal adds one meanwhile.
_LOCK_ROUNDS = 10
_MAX_NOTE = 1000


def parse_reason(text: str) -> str:
    """The canonical RFC 5280 name of a reason given in any case, with hyphens, underscores or spaces.

    ``key-compromise``, ``KEY_COMPROMISE`` and ``keyCompromise`` all give ``keyCompromise``.
    Raises :class:`ClientError` ``reason_invalid`` naming the accepted reasons.
    """
    key = re.sub(r"[-_\s]", "", text).lower()
    if key not in _BY_KEY:
        raise ClientError(
            f"{text!r} is not a revocation reason; use one of {', '.join(REASONS)}", code="reason_invalid"
        )
    return _BY_KEY[key]


def reason_flag(name: str | None) -> x509.ReasonFlags | None:
    """The CRL reason for a stored reason name; None for a name this release does not know."""
    return REASONS.get(name) if name else None


@dataclass(frozen=True, slots=True)
class RevocationTarget:
    """What to revoke: one certificate (``serial``), or every live certificate of a principal or an EC2 instance."""

    kind: TargetKind
    value: str

    def __post_init__(self) -> None:
        if not self.value.strip():
            raise ClientError(f"the {self.kind} to revoke is empty", code=f"{self.kind}_invalid")


@dataclass(frozen=True, slots=True)
class RevokedCertificate:
    """A certificate the revocation touched; ``status`` is what it was before (``revoked``: already was)."""

    serial: str
    principal: str
    method: str
    role: str
    status: str
    not_after: datetime
    revoked_at: datetime | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Revocation:
    """What :func:`revoke` did (or, with ``dry_run``, would do); everything in it is committed."""

    target: RevocationTarget
    reason: str
    revoked_at: datetime
    request_id: str  # of the audit rows
    dry_run: bool
    revoked: tuple[RevokedCertificate, ...]
    already_revoked: tuple[RevokedCertificate, ...]
    binding: BindingFate | None  # instance targets only
    # What backends that keep their own list (AWS Private CA) said, one per certificate of theirs.
    upstream: tuple[UpstreamResult, ...] = ()

    @property
    def upstream_failed(self) -> tuple[UpstreamResult, ...]:
        return tuple(r for r in self.upstream if not r.ok)


async def revoke(
    sessions: Sessions,
    target: RevocationTarget,
    *,
    reason: str,
    now: datetime,
    note: str | None = None,
    actor: str | None = None,
    dry_run: bool = False,
    reset_binding: bool = False,
    upstream: UpstreamRevocations | None = None,
) -> Revocation:
    """Revoke ``target``'s certificates for ``reason`` (a name :func:`parse_reason` accepts) at ``now``.

    One transaction: the certificates are marked revoked, an audit row per certificate is written
    (and for ``reset_binding`` the instance's binding is deleted, with its own audit row); with
    ``dry_run`` nothing is written. A certificate revoked before stays as it was. ``actor`` (who
    ran it) and ``note`` go to the audit trail. With ``upstream``, once committed, the certificates
    (those revoked now and before) of issuers whose backend revokes upstream are sent there too;
    its failures are in ``Revocation.upstream``, never raised.

    Raises :class:`ClientError` ``reason_invalid``, ``serial_invalid``, ``instance_invalid``,
    ``reset_binding_needs_instance``; :class:`NotFound` ``certificate_not_found``,
    ``principal_not_found``, ``instance_not_found``; :class:`Conflict` ``revocation_raced`` when
    renewals kept adding certificates while they were being locked.
    """
    reason = parse_reason(reason)
    if reset_binding and target.kind != "instance":
        raise ClientError("only an EC2 instance has a binding to reset", code="reset_binding_needs_instance")
    if note is not None and len(note) > _MAX_NOTE:
        raise ClientError(f"the note is longer than {_MAX_NOTE} characters", code="note_too_long")
    request_id = f"revoke-{secrets.token_hex(8)}"
    audit_reason = reason + (f" by {actor}" if actor else "") + (f": {note}" if note else "")
    binding: BindingFate | None = None
    async with sessions() as session, session.begin():
        if target.kind == "serial":
            live, already, identities = await _by_serial(session, target.value)
        else:
            if target.kind == "instance" and not _INSTANCE_ID.fullmatch(target.value):
                raise ClientError(f"{target.value!r} is not an EC2 instance ID (i-…)", code="instance_invalid")
            method = "aws-ec2" if target.kind == "instance" else None
            found = await store.find_identities(session, principal=target.value, method=method)
            ids = [i.id for i in found]
            identities = {i.id: i for i in found}
            live = await _lock_live(session, ids, now=now) if ids else []
            already = (
                await store.lock_certificates(session, identity_ids=ids, statuses=("revoked",), now=now) if ids else []
            )
            if target.kind == "instance":
                bound = await store.bindings_of(session, instance_id=target.value)
                if not found and not bound:
                    raise NotFound(f"no certificate or binding for instance {target.value}", code="instance_not_found")
                binding = "none" if not bound else "forgotten" if reset_binding else "kept"
            elif not found:
                raise NotFound(f"no identity with principal {target.value!r}", code="principal_not_found")
        if not dry_run:
            changed = await store.mark_revoked(
                session, certificate_ids=[c.id for c in live], revoked_at=now, reason=reason
            )
            live = [c for c in live if c.id in changed]  # (with the row locks held, that is all of them)
            for cert in live:
                await audit.record(
                    session,
                    AuditEntry(
                        method="revoke",
                        outcome="success",
                        request_id=request_id,
                        code="certificate_revoked",
                        reason=audit_reason,
                        principal=identities[cert.identity_id].principal,
                        role=cert.role,
                        certificate_serial=cert.serial,
                    ),
                    now=now,
                )
            if binding == "forgotten":
                await bindings.delete_binding(session, instance_id=target.value)
                await audit.record(
                    session,
                    AuditEntry(
                        method="revoke",
                        outcome="success",
                        request_id=request_id,
                        code="binding_reset",
                        reason=audit_reason,
                        principal=target.value,
                    ),
                    now=now,
                )
    for cert in live if not dry_run else ():
        principal = identities[cert.identity_id].principal
        log.info(
            "revoked serial=%s principal=%s role=%s reason=%s",
            cert.serial,
            principal,
            cert.role,
            reason,
            extra={
                "event": "revoked",
                "serial": cert.serial,
                "principal": principal,
                "role": cert.role,
                "code": "certificate_revoked",
                "reason": reason,
                "revocation_request_id": request_id,
            },
        )
    told: tuple[UpstreamResult, ...] = ()
    if upstream is not None and not dry_run:
        targets = [
            UpstreamTarget(c.serial, c.issuer_id, identities[c.identity_id].principal, c.role)
            for c in (*live, *already)
        ]
        told = await upstream(targets, reason=reason_flag(reason), request_id=request_id, audit_reason=audit_reason)
    return Revocation(
        target=target,
        reason=reason,
        revoked_at=now,
        request_id=request_id,
        dry_run=dry_run,
        revoked=tuple(_touched(c, identities) for c in live),
        already_revoked=tuple(_touched(c, identities) for c in already),
        binding=binding,
        upstream=told,
    )


async def _by_serial(
    session: AsyncSession, text: str
) -> tuple[list[CertificateRecord], list[CertificateRecord], dict[int, IdentityRecord]]:
    serial = normalise_serial(text)
    rows = await store.lock_certificates(session, serial=serial, statuses=("active", "superseded", "revoked"))
    if not rows:
        raise NotFound(f"no certificate with serial {text}", code="certificate_not_found")
    (cert,) = rows
    identity = await identities.get_identity(session, cert.identity_id)
    assert identity is not None  # a foreign key
    # An expired certificate is revoked all the same (the record says so); the lists only carry live ones.
    if cert.status == "revoked":
        return [], [cert], {identity.id: identity}
    return [cert], [], {identity.id: identity}


async def _lock_live(session: AsyncSession, identity_ids: Sequence[int], *, now: datetime) -> list[CertificateRecord]:
    """The identities' live certificates, locked; repeated until no renewal added one meanwhile.

    A renewal locks the certificate it replaces, inserts the new one and commits. Locking waits for
    such a renewal, and the next round (a new snapshot) sees the certificate it added; a renewal that
    starts after our lock waits for us and then finds its certificate revoked.
    """
    rows = await store.lock_certificates(session, identity_ids=identity_ids, now=now)
    for _ in range(_LOCK_ROUNDS):
        again = await store.lock_certificates(session, identity_ids=identity_ids, now=now)
        if {r.id for r in again} == {r.id for r in rows}:
            return again
        rows = again
    raise Conflict(
        "the identity's certificates kept changing (renewals in flight); run the revocation again",
        code="revocation_raced",
    )


def _touched(cert: CertificateRecord, identities: dict[int, IdentityRecord]) -> RevokedCertificate:
    identity = identities[cert.identity_id]
    return RevokedCertificate(
        serial=cert.serial,
        principal=identity.principal,
        method=cert.method,
        role=cert.role,
        status=cert.status,
        not_after=cert.not_after,
        revoked_at=cert.revoked_at,
        reason=cert.revocation_reason,
    )
