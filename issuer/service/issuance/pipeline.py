"""The one issuance pipeline: every way to get a certificate runs this skeleton.

    read the request (wire schema) → parse the CSR → pick the role
    → verify the proof (pure)                                     Verified
    → identify: burn a single-use proof, ask STS, read the store  Identified
    → rate limit → decide (the one decision)                      template
    → check upstream (DescribeInstances), then in one transaction:
      claim (consume, bind, supersede) → deny list → sign → record → commit   Issued

On Postgres, a method that can (:class:`~issuer.service.issuance.phases.OneStatementClaim`:
join token, EC2, renewal) takes the short way, with no transaction held across the signature:

    peek: the proof's record and the deny list, one read        Identified
    → rate limit → decide → check upstream → deny list → claim step (may refuse)
    → sign → one statement: claim + identity + certificate + audit row         Issued
      (matches nothing if the claim no longer holds: nothing written, the method says why)

A method contributes only its own steps (:class:`~issuer.service.issuance.phases.IssuanceMethod`);
the phases are types (:mod:`issuer.service.issuance.phases`). :func:`issuer.policy.decide`
runs in exactly one place (:meth:`Pipeline._decide`), as soon as the identity, the role
and the certificate being renewed are known, and before any call a decision could spare
(for EC2, before AWS is asked). The signer chooses the serial; nothing names a serial before
the signature exists, and what is recorded (serial, names, validity) is read from the
certificate the signer returned. A certificate leaves only after the transaction (or the
statement) that recorded it has committed. Every attempt, success or failure, leaves an ``attestations``
row; a failure's row is written in a transaction of its own after the use case's
transaction rolled back, so a failed request changes nothing but the audit trail (and
the single-use proofs it burnt). Outcomes are reported to the observer (metrics, the
janitor's tally); the pipeline counts nothing itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from cryptography import x509
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ca.csr import CheckedCSR, parse_csr
from ca.keys import KEY_TYPES
from ca.profile import LeafTemplate
from ca.signer import IssuedCertificate, SigningRequest
from issuer.attest.identity import VerifiedIdentity
from issuer.errors import ClientError
from issuer.faults import as_service_error
from issuer.observability.seams import IssuanceObserver, NullObserver
from issuer.policy import decide
from issuer.policy.ratelimit import RateLimiter
from issuer.service.ca.registry import IssuerRegistry, TrustSnapshot
from issuer.service.issuance import recording
from issuer.service.issuance.model import Attempt, Clock, Issued, IssueRequest, RequestContext, serial_hex
from issuer.service.issuance.phases import Claimed, Identified, IssuanceMethod, OneStatementClaim
from issuer.service.issuance.roles import RoleBook
from issuer.service.revocation import deny as deny_list
from issuer.settings import Settings
from issuer.store import audit, certificates
from issuer.store.records import AuditEntry

__all__ = ["Pipeline"]

log = logging.getLogger("issuer.service")

P = TypeVar("P")


def rate_key(identity: VerifiedIdentity) -> str:
    """Whose bucket a request is charged to: the principal, and for a role session the session.

    Every task of an ECS service is the same role ARN; each task's session is its own machine,
    so a fleet starting together is not throttled as one.
    """
    session = identity.attributes.get("session_name")
    return f"{identity.principal} session {session}" if session else identity.principal


class Pipeline:
    """Runs :class:`IssuanceMethod` s. Build one per process."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        registry: IssuerRegistry,
        clock: Clock,
        observer: IssuanceObserver | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.registry = registry
        self.clock = clock
        self.observer = observer or NullObserver()
        self.limiter = limiter
        self.roles = RoleBook(settings.roles)
        self._claims_in_record: dict[str, bool] = {}

    async def issue(
        self,
        method: IssuanceMethod[P, Any],
        ctx: RequestContext,
        read: Callable[[], Awaitable[IssueRequest[P]]],
    ) -> Issued:
        """Read, verify, identify, decide, sign and record one issuance; the committed result.

        Raises :class:`IssuerError` (a refusal, or 503 when the database or a peer is
        unavailable); every failure has been audited before it propagates.
        """
        attempt = Attempt(method=method.name, ctx=ctx)
        try:
            request = await read()
            issued = await self._run(method, request, attempt)
        except Exception as exc:  # refusals and bugs alike leave their audit row
            error = as_service_error(exc)
            await self.record_failure(attempt, error)
            if error is exc:
                raise
            raise error from exc
        self.observer.issued(attempt.method, issued.role, time.perf_counter() - attempt.started)
        return issued

    async def _run(self, method: IssuanceMethod[P, Any], request: IssueRequest[P], attempt: Attempt) -> Issued:
        csr = parse_csr(request.csr_pem, allowed_key_types=KEY_TYPES)  # the role narrows it in decide()
        now = self.clock()
        role = self.roles.select(request.role, method=method.name) if method.role_from_request else None
        attempt.role = role.name if role is not None else None
        verified = method.verify(request.proof, csr=csr, role=role, now=now)
        if self._one_statement(method):
            return await self._run_one_statement(method, request, attempt, csr, verified, now)
        request_id = attempt.ctx.request_id
        # The connection is taken at the first statement: for most methods at the claim, after every
        # outbound call; a join token is consumed (and the transaction begun) while identifying.
        async with self.sessions() as transaction:
            identified = await method.identify(verified, transaction=transaction, request_id=request_id, now=now)
            self._check_identified(identified, request, attempt)
            template = self._decide(identified, csr, request, now)
            await method.check_upstream(identified, now=now)
            claimed = await method.claim_in_transaction(transaction, identified, request_id=request_id, now=now)
            await deny_list.check(transaction, identified.identity, now=now)  # the operators' deny list
            trust = self.registry.snapshot
            issued = await self._sign(trust, template, csr)
            rows = await self._record(transaction, identified, csr, issued.certificate, trust.active.id, attempt, now)
            await transaction.commit()
        pem = rows.certificate.certificate_pem
        return self._answer(identified, claimed, issued, trust, template, now, certificate_pem=pem)

    def _one_statement(self, method: IssuanceMethod[Any, Any]) -> bool:
        """Whether ``method`` claims in the recording statement here (Postgres, and the method can)."""
        found = self._claims_in_record.get(method.name)
        if found is None:
            found = self._claims_in_record[method.name] = not self.settings.is_sqlite and isinstance(
                method, OneStatementClaim
            )
        return found

    async def _run_one_statement(
        self,
        method: Any,
        request: IssueRequest[Any],
        attempt: Attempt,
        csr: CheckedCSR,
        verified: Any,
        now: datetime,
    ) -> Issued:
        """Postgres: read (with the deny list), decide, sign, then claim and record in one statement.

        No transaction is open across the signature or any outbound call, and no pooled connection
        is held across a call out (AWS, or a signer that is not a key in this process); the
        certificate leaves only after the statement that claimed and recorded it has committed.
        """
        async with self.sessions() as session:
            peeked = await method.peek(verified, session=session, now=now)
            identified = peeked.identified
            self._check_identified(identified, request, attempt)
            template = self._decide(identified, csr, request, now)
            if method.asks_upstream(identified):
                await session.close()  # the connection goes back to the pool; the write takes one again
            await method.check_upstream(identified, now=now)
            deny_list.refuse_if_denied(peeked.denials, identified.identity)  # the operators' deny list
            step = method.claim_step(identified, now=now)
            trust = self.registry.snapshot
            if not trust.active.signer.capabilities.signs_locally:
                await session.close()
            issued = await self._sign(trust, template, csr)
            rows = recording.rows_of(identified, csr, issued.certificate, trust.active.id, attempt, now)
            recorded = await certificates.record_claimed(
                session,
                claim=step.sql,
                claim_params=step.params,
                prelude=step.prelude,
                identity=rows.identity,
                certificate=rows.certificate,
                audit_entry=rows.audit,
                now=now,
            )
            if recorded is None:
                raise await method.claim_refused(identified, session=session)
        recording.log_issued(rows, identified, attempt)
        return self._answer(
            identified, step.claimed, issued, trust, template, now, certificate_pem=rows.certificate.certificate_pem
        )

    def _check_identified(self, identified: Identified[Any], request: IssueRequest[Any], attempt: Attempt) -> None:
        """Who is asking is known: name them in the audit row, charge their rate limit, check the role."""
        attempt.principal = identified.identity.principal
        attempt.role = identified.role.name
        if self.limiter is not None:
            self.limiter.take(identified.identity.method, rate_key(identified.identity))
        if request.role is not None and identified.role.name != request.role:
            raise ClientError(
                "The proof was made for another role.",
                code="role_mismatch",
                reason=f"proof for role {identified.role.name}, request named {request.role}",
            )

    def _decide(
        self, identified: Identified[Any], csr: CheckedCSR, request: IssueRequest[Any], now: datetime
    ) -> LeafTemplate:
        """The one call of :func:`issuer.policy.decide`: what to sign, or a refusal."""
        return decide(
            identified.identity,
            identified.role,
            csr,
            identified.prior,
            now,
            trust_domain=self.settings.trust_domain,
            requested_ttl=request.ttl,
        )

    async def _sign(self, trust: TrustSnapshot, template: LeafTemplate, csr: CheckedCSR) -> IssuedCertificate:
        """The sign step: the active issuing CA signs ``template`` for the CSR's key, choosing the serial."""
        return await trust.active.signer.issue(
            SigningRequest(template=template, public_key=csr.public_key, csr_der=csr.der)
        )

    async def _record(
        self,
        session: AsyncSession,
        identified: Identified[Any],
        csr: CheckedCSR,
        certificate: x509.Certificate,
        issuer_id: int,
        attempt: Attempt,
        now: datetime,
    ) -> recording.Rows:
        rows = recording.rows_of(identified, csr, certificate, issuer_id, attempt, now)
        await certificates.record_issuance(
            session, identity=rows.identity, certificate=rows.certificate, audit_entry=rows.audit, now=now
        )
        recording.log_issued(rows, identified, attempt)
        return rows

    def _answer(
        self,
        identified: Identified[Any],
        claimed: Claimed,
        issued: IssuedCertificate,
        trust: TrustSnapshot,
        template: LeafTemplate,
        now: datetime,
        certificate_pem: str = "",
    ) -> Issued:
        # From the moment of issue, not the backdated NotBefore: a short certificate is not born due.
        certificate = issued.certificate
        not_after = certificate.not_valid_after_utc
        return Issued(
            serial=serial_hex(certificate.serial_number),
            certificate=certificate,
            chain=issued.chain,
            roots=trust.roots,
            renew_after=now + (not_after - now) * self.settings.renew_fraction,
            identity=identified.identity,
            uri_san=template.uri_sans[0],
            role=identified.role.name,
            server_id=self.settings.audience,
            nonce=claimed.nonce,
            renewed_from=identified.prior.serial if identified.prior is not None else None,
            certificate_pem=certificate_pem,
        )

    async def record_failure(self, attempt: Attempt, exc: BaseException) -> None:
        """Write the audit row of a failed attempt in its own transaction (a failure to do so is logged)."""
        code = getattr(exc, "code", "internal_error")
        reason = getattr(exc, "reason", None) or getattr(exc, "detail", None) or repr(exc)
        principal = attempt.principal or getattr(exc, "principal", None)
        role = attempt.role or getattr(exc, "role", None)
        self.observer.refused(attempt.method, role, code, time.perf_counter() - attempt.started)
        level = logging.INFO if code == "client_disconnected" else logging.WARNING
        log.log(
            level,
            "refused method=%s code=%s principal=%s role=%s reason=%s",
            attempt.method,
            code,
            principal,
            role,
            reason,
            extra={
                "event": "refused",
                "method": attempt.method,
                "code": code,
                "principal": principal,
                "role": role,
                "reason": str(reason)[:1000],
            },
        )
        try:
            async with self.sessions() as session, session.begin():
                await audit.record(
                    session,
                    AuditEntry(
                        method=attempt.method,
                        outcome="failure",
                        request_id=attempt.ctx.request_id,
                        code=code,
                        reason=str(reason)[:4000],
                        principal=principal,
                        role=role,
                        remote_addr=attempt.ctx.remote_addr,
                    ),
                    now=self.clock(),
                )
        except Exception as audit_exc:
            # The refusal stands even if the audit write fails; say so loudly, in one line.
            log.error(
                "could not record the failed attempt (request %s): %s: %s",
                attempt.ctx.request_id,
                type(audit_exc).__name__,
                str(audit_exc).splitlines()[0] if str(audit_exc) else "",
            )
