"""Telling a signer backend that keeps its own revocation list (AWS Private CA) about a revocation.

The revocation here is the truth: it commits first, in its own transaction, and from that moment
the certificate cannot renew and is on ``GET /v1/revoked`` (what the Lambda authorizer enforces).
Then, for each revoked certificate whose issuer's backend declares ``revokes_upstream``, the
backend is told (Private CA: ``RevokeCertificate``, so its own CRL lists it within about 30
minutes). If the backend cannot be reached, the local revocation stands and the failure is
reported to the operator and audited (``upstream_revoke_failed``); running the same revocation
again retries: certificates revoked already are sent upstream again, and a backend that has the
revocation already counts that as done. Every attempt leaves an audit row (method ``revoke``,
``upstream_revoked`` or ``upstream_revoke_failed``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ca.errors import CAError
from ca.signer import Signer
from issuer.errors import IssuerError
from issuer.service.ca.registry import SignerLoader, certificates_of
from issuer.service.ca.signers import capabilities_of
from issuer.store import audit
from issuer.store import issuers as issuer_store
from issuer.store.records import AuditEntry, IssuerRecord, RootRecord

__all__ = ["UpstreamResult", "UpstreamRevocations", "UpstreamTarget"]

log = logging.getLogger("issuer.revocation")


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """A revoked certificate to tell its backend about."""

    serial: str  # hex, as stored
    issuer_id: int
    principal: str
    role: str


@dataclass(frozen=True, slots=True)
class UpstreamResult:
    """What the backend said about one certificate: ``ok``, or the error ``code`` and ``detail``."""

    serial: str
    issuer: str  # the issuing CA's subject
    ok: bool
    code: str | None = None
    detail: str | None = None


class UpstreamRevocations:
    """Sends revocations to the backends that keep their own list; the audit rows of each attempt.

    ``load_signer`` is the registry's signer loader: it is called only for issuers whose backend
    declares ``revokes_upstream`` (a file key's passphrase is never asked for).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        load_signer: SignerLoader,
        clock: Callable[[], datetime],
    ) -> None:
        self._sessions = sessions
        self._load_signer = load_signer
        self._clock = clock

    async def __call__(
        self,
        targets: Sequence[UpstreamTarget],
        *,
        reason: x509.ReasonFlags | None,
        request_id: str,
        audit_reason: str,
    ) -> tuple[UpstreamResult, ...]:
        """Tell each target's backend (those that revoke upstream); one result per such target. Never raises
        for a backend's failure: that is a result with ``ok`` False."""
        async with self._sessions() as session:
            issuers = {r.id: r for r in await issuer_store.list_issuers(session)}
            roots = await issuer_store.list_roots(session)
        wanted = [t for t in targets if t.issuer_id in issuers and _revokes_upstream(issuers[t.issuer_id])]
        signers: dict[int, Signer | BaseException] = {}
        results: list[UpstreamResult] = []
        for target in wanted:
            record = issuers[target.issuer_id]
            if target.issuer_id not in signers:
                signers[target.issuer_id] = await self._signer(record, roots)
            signer = signers[target.issuer_id]
            try:
                if isinstance(signer, BaseException):
                    raise signer
                await signer.revoke(int(target.serial, 16), reason=reason)
            except (CAError, IssuerError) as exc:
                results.append(
                    UpstreamResult(target.serial, record.subject, ok=False, code=exc.code, detail=exc.detail)
                )
            else:
                results.append(UpstreamResult(target.serial, record.subject, ok=True))
        if results:
            await self._audit(wanted, results, request_id=request_id, audit_reason=audit_reason)
        return tuple(results)

    async def _signer(self, record: IssuerRecord, roots: Sequence[RootRecord]) -> Signer | BaseException:
        chain = certificates_of(record)
        root_certs = tuple(x509.load_pem_x509_certificate(r.certificate_pem.encode()) for r in roots)
        try:
            return await self._load_signer(record, certificate=chain[0], chain=chain, roots=root_certs)
        except (CAError, IssuerError) as exc:
            return exc

    async def _audit(
        self,
        targets: Sequence[UpstreamTarget],
        results: Sequence[UpstreamResult],
        *,
        request_id: str,
        audit_reason: str,
    ) -> None:
        now = self._clock()
        try:
            async with self._sessions() as session, session.begin():
                for target, result in zip(targets, results, strict=True):
                    said = "" if result.ok else f"; {result.code}: {result.detail}"
                    await audit.record(
                        session,
                        AuditEntry(
                            method="revoke",
                            outcome="success" if result.ok else "failure",
                            request_id=request_id,
                            code="upstream_revoked" if result.ok else "upstream_revoke_failed",
                            reason=f"{audit_reason} (at {result.issuer}{said})"[:4000],
                            principal=target.principal,
                            role=target.role,
                            certificate_serial=target.serial,
                        ),
                        now=now,
                    )
        except Exception as exc:  # the revocations happened; a lost audit row is logged loudly
            log.error("could not audit upstream revocations (request %s): %s: %s", request_id, type(exc).__name__, exc)


def _revokes_upstream(record: IssuerRecord) -> bool:
    try:
        return capabilities_of(record.key_ref).revokes_upstream
    except IssuerError:
        return False  # an unknown backend (a newer release's): nothing this one can tell it
