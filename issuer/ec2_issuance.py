"""The EC2 use case: identity document → optional liveness check → trust-on-first-use binding → certificate.

The document never expires, so replay protection is ours: the first successful
attestation of an instance binds it to a nonce (the client's, or one generated here
and returned once) and its ``pendingTime``. Later attestations must present that
nonce — unless the role allows migration and ``pendingTime`` is strictly newer (the
instance was stopped and started). An older ``pendingTime`` is always refused. The
binding is unique per (account, instance) in the database, so two first
attestations racing on two replicas cannot both win.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from issuer.attest.ec2 import Ec2Proof, InstanceIdentityDocument, identity_from_document, verify_instance_identity
from issuer.attest.ec2_certs import AwsCertStore
from issuer.attest.ec2_instance import Boto3InstanceLookup, InstanceLookup, check_instance
from issuer.errors import ClientError, Conflict, Unauthorized
from issuer.policy import Role, check_bindings
from issuer.service import Attempt, Issued, IssueRequest, IssuerService, RequestContext, hash_secret
from issuer.store import repo
from issuer.store.models import InstanceBinding

_NONCE = re.compile(r"^[A-Za-z0-9._~+/=-]{16,128}$")

LookupFactory = Callable[[Role, str], InstanceLookup]


@dataclass(frozen=True, slots=True)
class Ec2Fields:
    document: str
    rsa2048: str | None
    pkcs7: str | None
    signature: str | None
    nonce: str | None


class Boto3Lookups:
    """One :class:`Boto3InstanceLookup` per (assume-role template, endpoint), made on first use."""

    def __init__(self, endpoint_overrides: dict[str, str]) -> None:
        self._overrides = endpoint_overrides
        self._made: dict[tuple[str | None, str | None], InstanceLookup] = {}

    def __call__(self, role: Role, region: str) -> InstanceLookup:
        endpoint = self._overrides.get(region) or self._overrides.get("*")
        key = (role.assume_role, endpoint)
        if key not in self._made:
            self._made[key] = Boto3InstanceLookup(endpoint_url=endpoint, assume_role=role.assume_role)
        return self._made[key]


class Ec2Issuance:
    def __init__(self, core: IssuerService, *, certs: AwsCertStore, lookups: LookupFactory) -> None:
        self.core = core
        self.certs = certs
        self.lookups = lookups

    async def issue(self, request: IssueRequest, fields: Ec2Fields, ctx: RequestContext) -> Issued:
        """Verify the document, check the role and the binding, and issue.

        Raises the attestation errors of :mod:`issuer.attest.ec2`, ``binding_mismatch``,
        ``ec2_instance_*``, ``ec2_nonce_required``, ``ec2_nonce_mismatch``,
        ``ec2_pending_time_older``, ``ec2_binding_race`` (409) or ``ec2_lookup_unavailable`` (503).
        """
        attempt = Attempt(method="aws-ec2", ctx=ctx)
        try:
            if fields.nonce is not None and not _NONCE.fullmatch(fields.nonce):
                raise ClientError("The nonce must be 16 to 128 URL-safe characters.", code="field_invalid")
            csr = self.core.parse_csr(request.csr_pem)
            proof = Ec2Proof.from_fields(
                document=fields.document, rsa2048=fields.rsa2048, pkcs7=fields.pkcs7, signature=fields.signature
            )
            doc = verify_instance_identity(proof, certs=self.certs)
            identity = identity_from_document(doc)
            attempt.principal = identity.principal
            role = self.core.select_role(request.role, method="aws-ec2")
            attempt.role = role.name
            now = self.core.clock()
            # Cheap, local refusals first; AWS is asked only about instances the role could accept.
            check_bindings(identity, role, now=now)
            if role.check_instance:
                info = await self.lookups(role, doc.region).describe(
                    account_id=doc.account_id, region=doc.region, instance_id=doc.instance_id
                )
                check_instance(
                    info,
                    doc=doc,
                    vpc_ids=role.vpc_ids,
                    subnet_ids=role.subnet_ids,
                    instance_profile_arns=role.instance_profile_arns,
                    iam_role_arns=role.iam_role_arns,
                )
            now = self.core.clock()
            try:
                async with self.core.sessions() as session, session.begin():
                    nonce = await self._bind(session, doc=doc, role=role, given=fields.nonce, now=now)
                    return await self.core.sign_and_record(
                        session,
                        identity=identity,
                        role=role,
                        csr=csr,
                        request=request,
                        attempt=attempt,
                        now=now,
                        nonce=nonce,
                    )
            except IntegrityError as exc:
                raise Conflict(
                    "Another attestation of this instance is in progress; try again.",
                    code="ec2_binding_race",
                    reason=f"instance binding insert lost a race: {exc.orig!r}",
                ) from None
        except Exception as exc:  # refusals and bugs alike leave their audit row
            await self.core.record_failure(attempt, exc)
            raise

    async def _bind(
        self, session: AsyncSession, *, doc: InstanceIdentityDocument, role: Role, given: str | None, now: datetime
    ) -> str | None:
        """Create or check the instance's binding; the nonce to return to the client (only one we generated)."""
        binding = await repo.get_instance_binding(
            session, account_id=doc.account_id, instance_id=doc.instance_id, lock=True
        )
        if binding is None:
            nonce = given or secrets.token_urlsafe(32)
            session.add(
                InstanceBinding(
                    account_id=doc.account_id,
                    instance_id=doc.instance_id,
                    region=doc.region,
                    role=role.name,
                    nonce_hash=hash_secret(nonce),
                    pending_time=doc.pending_time,
                    created_at=now,
                    updated_at=now,
                )
            )
            await session.flush()
            return None if given else nonce
        if doc.pending_time < binding.pending_time:
            raise Unauthorized(
                "This identity document is older than one already seen for the instance.",
                code="ec2_pending_time_older",
                reason=f"pendingTime {doc.pending_time.isoformat()} < bound {binding.pending_time.isoformat()}",
            )
        matches = given is not None and hmac.compare_digest(binding.nonce_hash, hash_secret(given))
        returned: str | None = None
        if not matches:
            if role.allow_migration and doc.pending_time > binding.pending_time:
                nonce = given or secrets.token_urlsafe(32)
                binding.nonce_hash = hash_secret(nonce)
                returned = None if given else nonce
            elif given is None:
                raise Unauthorized(
                    "This instance has attested before; send the nonce it was given.",
                    code="ec2_nonce_required",
                    reason=f"instance {doc.instance_id} bound at {binding.created_at.isoformat()}, no nonce sent",
                )
            else:
                raise Unauthorized(
                    "The nonce does not match the one this instance was given.",
                    code="ec2_nonce_mismatch",
                    reason=f"instance {doc.instance_id}: wrong nonce",
                )
        binding.pending_time = doc.pending_time
        binding.role = role.name
        binding.updated_at = now
        await session.flush()
        return returned
