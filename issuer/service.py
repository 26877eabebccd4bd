"""The issuance use cases: attest → decide → sign → record, one transaction each.

A certificate leaves this module only after the transaction that recorded it has
committed. Every attempt, success or failure, leaves an ``attestations`` row; a
failure's row is written in a transaction of its own after the use case's
transaction rolled back, so a failed request changes nothing but the audit trail.
Outbound calls (STS, DescribeInstances) happen before the transaction opens, so
no database connection waits on AWS.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ca.csr import CheckedCSR, parse_csr
from ca.keys import KEY_TYPES
from ca.signer import Signer
from issuer.attest.identity import Method, VerifiedIdentity
from issuer.errors import ClientError, Unauthorized
from issuer.policy import Role, decide, select_role
from issuer.settings import Settings
from issuer.store import repo
from issuer.store.models import Certificate

log = logging.getLogger("issuer.service")

Clock = Callable[[], datetime]
TOKEN_PREFIX = "ijt_"


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    remote_addr: str | None


@dataclass(frozen=True, slots=True)
class IssueRequest:
    csr_pem: str
    role: str | None = None
    ttl: timedelta | None = None


@dataclass(frozen=True, slots=True)
class Issued:
    """What a successful issuance returns; everything in it is committed."""

    serial: str
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]
    renew_after: datetime
    identity: VerifiedIdentity
    uri_san: str
    role: str
    nonce: str | None = None


@dataclass(slots=True)
class Attempt:
    """What is known so far about one request, for its audit row."""

    method: Method
    ctx: RequestContext
    principal: str | None = None
    role: str | None = None


def hash_secret(value: str) -> str:
    """SHA-256 hex of a high-entropy secret (join tokens, nonces); only hashes are stored."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def serial_hex(serial: int) -> str:
    return format(serial, "x")


class IssuerService:
    """The use cases behind the HTTP API and the CLI. Build one per process."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        signer: Signer,
        issuer_id: int,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.signer = signer
        self.issuer_id = issuer_id
        self.clock = clock

    # -- join tokens ------------------------------------------------------------------

    async def issue_with_token(self, request: IssueRequest, token: str, ctx: RequestContext) -> Issued:
        """Issue for an operator's one-time join token.

        Raises :class:`Unauthorized` (``token_invalid``, ``token_used``, ``token_expired``),
        :class:`ClientError`/:class:`Forbidden` for the CSR and the role.
        """
        attempt = Attempt(method="token", ctx=ctx)
        try:
            csr = self.parse_csr(request.csr_pem)
            token_hash = hash_secret(token)
            now = self.clock()
            async with self.sessions() as session, session.begin():
                row = await repo.consume_join_token(session, token_hash=token_hash, now=now, request_id=ctx.request_id)
                if row is None:
                    raise await self._token_refusal(session, token_hash=token_hash, now=now, attempt=attempt)
                attempt.principal, attempt.role = row.name, row.role
                if request.role is not None and request.role != row.role:
                    raise ClientError(
                        "The token was created for another role.",
                        code="role_mismatch",
                        reason=f"token for role {row.role}, request named {request.role}",
                    )
                role = self._role(row.role, method="token")
                identity = VerifiedIdentity(method="token", principal=row.name, attributes={"name": row.name})
                issued = await self.sign_and_record(
                    session, identity=identity, role=role, csr=csr, request=request, attempt=attempt, now=now
                )
                row.certificate_serial = issued.serial
            return issued
        except Exception as exc:  # refusals and bugs alike leave their audit row
            await self.record_failure(attempt, exc)
            raise

    async def _token_refusal(
        self, session: AsyncSession, *, token_hash: str, now: datetime, attempt: Attempt
    ) -> Unauthorized:
        row = await repo.find_join_token(session, token_hash=token_hash)
        if row is None:
            return Unauthorized("The join token is not valid.", code="token_invalid")
        attempt.principal, attempt.role = row.name, row.role
        if row.used_at is not None:
            return Unauthorized(
                "The join token has been used already.",
                code="token_used",
                reason=f"token {row.name!r} used at {row.used_at.isoformat()} by request {row.used_by_request_id}",
            )
        return Unauthorized(
            "The join token has expired.",
            code="token_expired",
            reason=f"token {row.name!r} expired at {row.expires_at.isoformat()}",
        )

    # -- the shared pipeline ---------------------------------------------------------

    def parse_csr(self, csr_pem: str) -> CheckedCSR:
        # Every supported type parses here; the role narrows it in decide().
        return parse_csr(csr_pem, allowed_key_types=KEY_TYPES)

    def _role(self, name: str, *, method: Method) -> Role:
        role = select_role(self.settings.roles, method=method, requested=name)
        if role is None:
            raise ClientError(
                f"There is no role {name!r} for the {method} method.",
                code="role_unknown",
            )
        return role

    def select_role(self, requested: str | None, *, method: Method) -> Role:
        """The role a request names, or the only one for ``method``; raises ClientError otherwise."""
        if requested is not None:
            return self._role(requested, method=method)
        role = select_role(self.settings.roles, method=method, requested=None)
        if role is None:
            names = [r.name for r in self.settings.roles if method in r.methods]
            if not names:
                raise ClientError(f"No role allows the {method} method.", code="method_not_enabled")
            raise ClientError(
                f"Several roles allow {method}; name one with 'role' ({', '.join(names)}).",
                code="role_required",
            )
        return role

    async def sign_and_record(
        self,
        session: AsyncSession,
        *,
        identity: VerifiedIdentity,
        role: Role,
        csr: CheckedCSR,
        request: IssueRequest,
        attempt: Attempt,
        now: datetime,
        nonce: str | None = None,
    ) -> Issued:
        attempt.principal, attempt.role = identity.principal, role.name
        template = decide(
            identity,
            role,
            key_type=csr.key_type,
            now=now,
            trust_domain=self.settings.trust_domain,
            requested_ttl=request.ttl,
        )
        cert = await self.signer.issue(template, csr.public_key)
        serial = serial_hex(cert.serial_number)
        ident_row = await repo.upsert_identity(
            session,
            method=identity.method,
            principal=identity.principal,
            account_id=identity.account_id,
            region=identity.region,
            attributes=dict(identity.attributes),
            now=now,
        )
        not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
        await repo.add_certificate(
            session,
            Certificate(
                serial=serial,
                identity_id=ident_row.id,
                issuer_id=self.issuer_id,
                role=role.name,
                method=identity.method,
                fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
                public_key_sha256=csr.public_key_sha256_hex,
                key_type=csr.key_type,
                subject=cert.subject.rfc4514_string(),
                sans=[*template.uri_sans, *template.dns_sans],
                not_before=not_before,
                not_after=not_after,
                status="active",
                certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
                request_id=attempt.ctx.request_id,
                created_at=now,
            ),
        )
        await repo.add_attestation(
            session,
            method=identity.method,
            outcome="success",
            request_id=attempt.ctx.request_id,
            now=now,
            principal=identity.principal,
            role=role.name,
            certificate_serial=serial,
            remote_addr=attempt.ctx.remote_addr,
        )
        lifetime = not_after - not_before
        log.info(
            "issued serial=%s method=%s principal=%s role=%s not_after=%s",
            serial,
            identity.method,
            identity.principal,
            role.name,
            not_after.isoformat(),
        )
        return Issued(
            serial=serial,
            certificate=cert,
            chain=self.signer.chain,
            roots=self.signer.roots,
            renew_after=not_before + lifetime * self.settings.renew_fraction,
            identity=identity,
            uri_san=template.uri_sans[0],
            role=role.name,
            nonce=nonce,
        )

    async def record_failure(self, attempt: Attempt, exc: BaseException) -> None:
        """Write the audit row of a failed attempt in its own transaction."""
        code = getattr(exc, "code", "internal_error")
        reason = getattr(exc, "reason", None) or getattr(exc, "detail", None) or repr(exc)
        log.warning(
            "refused method=%s code=%s principal=%s role=%s reason=%s",
            attempt.method,
            code,
            attempt.principal,
            attempt.role,
            reason,
        )
        try:
            async with self.sessions() as session, session.begin():
                await repo.add_attestation(
                    session,
                    method=attempt.method,
                    outcome="failure",
                    request_id=attempt.ctx.request_id,
                    now=self.clock(),
                    code=code,
                    reason=str(reason)[:4000],
                    principal=attempt.principal,
                    role=attempt.role,
                    remote_addr=attempt.ctx.remote_addr,
                )
        except Exception:
            # The refusal stands even if the audit write fails; say so loudly.
            log.exception("could not record the failed attempt (request %s)", attempt.ctx.request_id)
