"""The IAM use case: a signed STS GetCallerIdentity request → STS → certificate.

Every part of the untrusted request is validated locally first (attest/sts.py); the
signature is then burned in its own committed transaction — a unique digest in
``replay_guards`` — before the one outbound call, so a replay is refused even
inside the 15-minute window, across replicas, and never reaches STS twice. A
signed request is therefore single-use whether or not the issuance then succeeds.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.exc import IntegrityError

from issuer.attest.arn import identity_from_caller
from issuer.attest.sts import parse_sts_request, validate_sts_request
from issuer.attest.sts_client import StsCaller
from issuer.attest.sts_hosts import StsHostAllowlist
from issuer.errors import Unauthorized
from issuer.service import Attempt, Issued, IssueRequest, IssuerService, RequestContext
from issuer.store import repo


class IamIssuance:
    def __init__(self, core: IssuerService, *, hosts: StsHostAllowlist, caller: StsCaller, server_id: str) -> None:
        self.core = core
        self.hosts = hosts
        self.caller = caller
        self.server_id = server_id

    async def issue(self, request: IssueRequest, payload: Mapping[str, object], ctx: RequestContext) -> Issued:
        """Validate, burn, ask STS, decide, sign, record.

        Raises the codes of :func:`issuer.attest.sts.validate_sts_request`, ``sts_replayed``,
        ``sts_rejected`` (401), ``sts_unavailable`` (503) and the policy codes.
        """
        attempt = Attempt(method="aws-iam", ctx=ctx)
        try:
            csr = self.core.parse_csr(request.csr_pem)
            sts_request = parse_sts_request(payload)
            role = self.core.select_role(request.role, method="aws-iam")
            attempt.role = role.name
            now = self.core.clock()
            validated = validate_sts_request(
                sts_request,
                server_id=self.server_id,
                csr_sha256_hex=csr.sha256_hex,
                require_csr_binding=role.require_csr_binding,
                hosts=self.hosts,
                now=now,
            )
            try:
                async with self.core.sessions() as session, session.begin():
                    await repo.add_replay_guard(
                        session, kind="sts", digest=validated.signature_hash, expires_at=validated.expires_at, now=now
                    )
            except IntegrityError:
                raise Unauthorized(
                    "This signed request has been used already; sign a new one.",
                    code="sts_replayed",
                    reason=f"signature sha256 {validated.signature_hash} seen before",
                ) from None
            caller = await self.caller.get_caller_identity(validated)
            identity = identity_from_caller(caller)
            attempt.principal = identity.principal
            now = self.core.clock()
            async with self.core.sessions() as session, session.begin():
                return await self.core.sign_and_record(
                    session, identity=identity, role=role, csr=csr, request=request, attempt=attempt, now=now
                )
        except Exception as exc:  # refusals and bugs alike leave their audit row
            await self.core.record_failure(attempt, exc)
            raise
