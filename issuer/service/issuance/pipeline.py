"""The one issuance pipeline: every way to get a certificate runs this skeleton.

    read the request (wire schema) → parse the CSR → pick the role → verify the proof (pure)
    → outbound checks (STS, DescribeInstances, replay guards) → one transaction:
      the method's step (consume the token, bind the instance, supersede the renewed
      certificate) → sign → record → commit → answer

A method contributes only its own steps (:class:`IssuanceMethod`); :func:`decide`
runs exactly once, as soon as the identity, the role and the certificate being
renewed are known — for EC2 before any AWS call, so cheap refusals come first.
A certificate leaves only after the transaction that recorded it has committed.
Every attempt, success or failure, leaves an ``attestations`` row; a failure's row
is written in a transaction of its own after the use case's transaction rolled
back, so a failed request changes nothing but the audit trail.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ca.csr import CheckedCSR, parse_csr
from ca.keys import KEY_TYPES
from ca.profile import LeafTemplate
from issuer.attest.identity import VerifiedIdentity
from issuer.errors import ClientError
from issuer.observability.seams import IssuanceObserver, NullObserver
from issuer.policy import PriorCertificate, Role, decide
from issuer.policy.ratelimit import RateLimiter
from issuer.service.ca.registry import IssuerRegistry
from issuer.service.faults import as_service_error
from issuer.service.issuance.model import AuditMethod, Clock, Issued, IssueRequest, RequestContext, serial_hex
from issuer.service.issuance.roles import RoleBook
from issuer.settings import Settings
from issuer.store import audit, certificates
from issuer.store.records import AuditEntry, NewCertificate, NewIdentity

__all__ = ["Attempt", "Claim", "IssuanceMethod", "Pipeline"]

log = logging.getLogger("issuer.service")

P = TypeVar("P")
S = TypeVar("S")
P_contra = TypeVar("P_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class Claim(Generic[S]):
    """What a request has established so far; each step returns a new one.

    ``state`` is the method's own (the verified document, the validated STS request, …).
    """

    state: S
    identity: VerifiedIdentity | None = None
    role: Role | None = None
    prior: PriorCertificate | None = None
    nonce: str | None = None  # EC2: a nonce generated here, returned to the client once


class IssuanceMethod(Protocol[P_contra, S]):
    """One way to prove who a machine is: its steps, and nothing else of the pipeline."""

    @property
    def name(self) -> AuditMethod: ...

    @property
    def role_from_request(self) -> bool:
        """True when the request names the role (EC2, IAM); False when the proof's record does (token, renewal)."""
        ...

    def verify(self, proof: P_contra, *, csr: CheckedCSR, role: Role | None, now: datetime) -> Claim[S]:
        """Check the proof without I/O (the ``attest`` package). Raises the method's refusals."""
        ...

    async def outbound(self, claim: Claim[S], *, now: datetime) -> Claim[S]:
        """Checks that leave the process, before the transaction (STS, DescribeInstances, replay guards)."""
        ...

    async def admit(
        self, session: AsyncSession, claim: Claim[S], *, serial: str, request_id: str, now: datetime
    ) -> Claim[S]:
        """The method's step inside the issuance transaction; the claim now names identity and role."""
        ...


@dataclass(slots=True)
class Attempt:
    """What is known so far about one request, for its audit row."""

    method: AuditMethod
    ctx: RequestContext
    principal: str | None = None
    role: str | None = None
    started: float = field(default_factory=time.perf_counter)
    limited: bool = False  # the rate limiter has been consulted

    def learn(self, claim: Claim[Any]) -> None:
        if claim.identity is not None:
            self.principal = claim.identity.principal
        if claim.role is not None:
            self.role = claim.role.name


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
        # Refusals by (method, code) since start; the metrics and the janitor's report read it.
        self.refusals: Counter[tuple[str, str]] = Counter()

    async def issue(
        self,
        method: IssuanceMethod[P, Any],
        ctx: RequestContext,
        read: Callable[[], Awaitable[IssueRequest[P]]],
    ) -> Issued:
        """Read, verify, decide, sign and record one issuance; the committed result.

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
        claim = method.verify(request.proof, csr=csr, role=role, now=now)
        self._learn(attempt, claim)
        template = self._decide_when_known(claim, csr, request, now)
        claim = await method.outbound(claim, now=now)
        self._learn(attempt, claim)
        template = template or self._decide_when_known(claim, csr, request, now)
        trust = self.registry.snapshot
        serial = x509.random_serial_number()
        async with self.sessions() as session, session.begin():
            claim = await method.admit(
                session, claim, serial=serial_hex(serial), request_id=attempt.ctx.request_id, now=now
            )
            self._learn(attempt, claim)
            if request.role is not None and claim.role is not None and claim.role.name != request.role:
                raise ClientError(
                    "The proof was made for another role.",
                    code="role_mismatch",
                    reason=f"proof for role {claim.role.name}, request named {request.role}",
                )
            template = template or self._decide_when_known(claim, csr, request, now)
            if template is None or claim.identity is None or claim.role is None:
                raise RuntimeError(f"method {method.name} admitted a claim without identity or role")
            certificate = await trust.active.signer.issue(template, csr.public_key, serial=serial)
            await self._record(session, claim, csr, certificate, trust.active.id, attempt, now)
        return self._answer(claim, certificate, trust.active.chain, trust.roots, template, now)

    def _learn(self, attempt: Attempt, claim: Claim[Any]) -> None:
        attempt.learn(claim)
        # Once per request, as soon as the proof names who is asking (inside the transaction for tokens).
        if self.limiter is not None and claim.identity is not None and not attempt.limited:
            attempt.limited = True
            self.limiter.take(claim.identity.method, rate_key(claim.identity))

    def _decide_when_known(
        self, claim: Claim[Any], csr: CheckedCSR, request: IssueRequest[Any], now: datetime
    ) -> LeafTemplate | None:
        if claim.identity is None or claim.role is None:
            return None
        return decide(
            claim.identity,
            claim.role,
            csr,
            claim.prior,
            now,
            trust_domain=self.settings.trust_domain,
            requested_ttl=request.ttl,
        )

    async def _record(
        self,
        session: AsyncSession,
        claim: Claim[Any],
        csr: CheckedCSR,
        certificate: x509.Certificate,
        issuer_id: int,
        attempt: Attempt,
        now: datetime,
    ) -> None:
        assert claim.identity is not None
        assert claim.role is not None
        identity, prior = claim.identity, claim.prior
        serial = serial_hex(certificate.serial_number)
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        await certificates.record_issuance(
            session,
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
                role=claim.role.name,
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
            audit_entry=AuditEntry(
                method=attempt.method,
                outcome="success",
                request_id=attempt.ctx.request_id,
                principal=identity.principal,
                role=claim.role.name,
                certificate_serial=serial,
                remote_addr=attempt.ctx.remote_addr,
                reason=f"renewed {prior.serial}" if prior is not None else None,
            ),
            now=now,
        )
        log.info(
            "issued serial=%s method=%s principal=%s role=%s not_after=%s%s",
            serial,
            attempt.method,
            identity.principal,
            claim.role.name,
            certificate.not_valid_after_utc.isoformat(),
            f" renewed_from={prior.serial}" if prior is not None else "",
        )

    def _answer(
        self,
        claim: Claim[Any],
        certificate: x509.Certificate,
        chain: tuple[x509.Certificate, ...],
        roots: tuple[x509.Certificate, ...],
        template: LeafTemplate,
        now: datetime,
    ) -> Issued:
        assert claim.identity is not None
        assert claim.role is not None
        # From the moment of issue, not the backdated NotBefore: a short certificate is not born due.
        not_after = certificate.not_valid_after_utc
        return Issued(
            serial=serial_hex(certificate.serial_number),
            certificate=certificate,
            chain=chain,
            roots=roots,
            renew_after=now + (not_after - now) * self.settings.renew_fraction,
            identity=claim.identity,
            uri_san=template.uri_sans[0],
            role=claim.role.name,
            server_id=self.settings.audience,
            nonce=claim.nonce,
            renewed_from=claim.prior.serial if claim.prior is not None else None,
        )

    async def record_failure(self, attempt: Attempt, exc: BaseException) -> None:
        """Write the audit row of a failed attempt in its own transaction (a failure to do so is logged)."""
        code = getattr(exc, "code", "internal_error")
        reason = getattr(exc, "reason", None) or getattr(exc, "detail", None) or repr(exc)
        principal = attempt.principal or getattr(exc, "principal", None)
        role = attempt.role or getattr(exc, "role", None)
        self.refusals[(attempt.method, code)] += 1
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
