"""The EC2 method: identity document → (decision) → optional liveness check → trust-on-first-use binding.

The document names the instance without I/O, so the decision (bindings, age) refuses
before any AWS call. The binding is unique per (account, instance) in the database, so
two first attestations racing on two replicas cannot both win; the loser gets
``ec2_binding_race`` (409) and may retry.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ca.csr import CheckedCSR
from issuer.attest.ec2 import Ec2Proof, InstanceIdentityDocument, identity_from_document, verify_instance_identity
from issuer.attest.ec2_certs import AwsCertStore
from issuer.attest.ec2_instance import LookupFactory
from issuer.attest.identity import VerifiedIdentity
from issuer.errors import ClientError, Conflict
from issuer.policy import BindingDecision, BoundInstance, Role, decide_binding
from issuer.policy.ec2 import AWS_EC2
from issuer.service.issuance.entry import MethodEntry, Transport
from issuer.service.issuance.phases import Claimed, ClaimStep, Identified, Peeked, Verified, requested_role
from issuer.service.issuance.wire import required_text, text_field
from issuer.store import bindings
from issuer.store.records import BindingRecord

__all__ = ["METHOD", "Ec2Method", "Ec2Submission", "check_live"]


async def check_live(lookups: LookupFactory, role: Role, identity: VerifiedIdentity) -> None:
    """Ask AWS about the instance ``identity`` names, through ``role``'s lookup, and apply the role to the answer.

    Raises the refusals of :meth:`issuer.policy.ec2.Ec2Options.check_described` and
    ``ec2_lookup_unavailable`` (503).
    """
    options = AWS_EC2.of(role)
    region = identity.region or ""
    info = await lookups(options.assume_role, region).describe(
        account_id=identity.account_id or "", region=region, instance_id=identity.attributes.get("instance_id", "")
    )
    options.check_described(info, identity=identity, role=role.name)


@dataclass(frozen=True, slots=True)
class Ec2Submission:
    """An identity document with its signature, and the nonce the instance was given (if any)."""

    proof: Ec2Proof
    nonce: str | None


@dataclass(frozen=True, slots=True)
class _State:
    doc: InstanceIdentityDocument
    given_nonce: str | None
    bound: BindingRecord | None = None  # the binding as read by peek() (Postgres)


class Ec2Method:
    """:class:`~issuer.service.issuance.phases.IssuanceMethod` for ``POST /v1/issue/aws-ec2``.

    Refusals: the attestation codes of :mod:`issuer.attest.ec2`, the liveness codes of
    :meth:`issuer.policy.ec2.Ec2Options.check_described`, the binding codes of
    :func:`issuer.policy.decide_binding`, ``ec2_binding_race`` (409) and
    ``ec2_lookup_unavailable`` (503).
    """

    name = AWS_EC2.method
    role_from_request = True

    def __init__(
        self,
        *,
        certs: AwsCertStore,
        lookups: LookupFactory,
        fresh_nonce: Callable[[], str] = lambda: secrets.token_urlsafe(32),
    ) -> None:
        self._certs = certs
        self._lookups = lookups
        self._fresh_nonce = fresh_nonce

    def verify(self, proof: Ec2Submission, *, csr: CheckedCSR, role: Role | None, now: datetime) -> Verified[_State]:
        doc = verify_instance_identity(proof.proof, certs=self._certs)
        return Verified(state=_State(doc=doc, given_nonce=proof.nonce), role=role)

    async def identify(
        self, verified: Verified[_State], *, transaction: AsyncSession, request_id: str, now: datetime
    ) -> Identified[_State]:
        return self._identified(verified)

    def _identified(self, verified: Verified[_State]) -> Identified[_State]:
        identity = identity_from_document(verified.state.doc)
        return Identified(state=verified.state, identity=identity, role=requested_role(verified.role))

    async def peek(self, verified: Verified[_State], *, session: AsyncSession, now: datetime) -> Peeked[_State]:
        doc = verified.state.doc
        bound, denials = await bindings.peek_binding(
            session, account_id=doc.account_id, instance_id=doc.instance_id, now=now
        )
        identified = self._identified(replace(verified, state=replace(verified.state, bound=bound)))
        return Peeked(identified=identified, denials=denials)

    def asks_upstream(self, identified: Identified[_State]) -> bool:
        return AWS_EC2.of(identified.role).check_instance

    def claim_step(self, identified: Identified[_State], *, now: datetime) -> ClaimStep:
        state, role = identified.state, identified.role
        doc, bound = state.doc, state.bound
        decision = self._decision(identified, bound)
        params = {
            "c_account": doc.account_id,
            "c_instance": doc.instance_id,
            "c_role": role.name,
            "c_nonce_hash": decision.nonce_hash,
            "c_pending_time": doc.pending_time,
        }
        claimed = Claimed(nonce=decision.returned_nonce)
        if decision.create:
            return ClaimStep(sql=bindings.CREATE_STEP, params={**params, "c_region": doc.region}, claimed=claimed)
        assert bound is not None  # an update is decided only for a bound instance
        seen = {"c_seen_nonce_hash": bound.nonce_hash, "c_seen_pending_time": bound.pending_time}
        return ClaimStep(sql=bindings.UPDATE_STEP, params={**params, **seen}, claimed=claimed)

    async def claim_refused(self, identified: Identified[_State], *, session: AsyncSession) -> Exception:
        return _binding_race("the binding changed between the read and the write")

    def _decision(self, identified: Identified[_State], bound: BindingRecord | None) -> BindingDecision:
        doc = identified.state.doc
        return decide_binding(
            BoundInstance(nonce_hash=bound.nonce_hash, pending_time=bound.pending_time, bound_at=bound.created_at)
            if bound is not None
            else None,
            instance_id=doc.instance_id,
            pending_time=doc.pending_time,
            given_nonce=identified.state.given_nonce,
            allow_migration=AWS_EC2.of(identified.role).allow_migration,
            fresh_nonce=self._fresh_nonce(),
        )

    async def check_upstream(self, identified: Identified[_State], *, now: datetime) -> None:
        if AWS_EC2.of(identified.role).check_instance:
            await check_live(self._lookups, identified.role, identified.identity)

    async def claim_in_transaction(
        self, transaction: AsyncSession, identified: Identified[_State], *, request_id: str, now: datetime
    ) -> Claimed:
        doc, role = identified.state.doc, identified.role
        bound = await bindings.lock_binding(transaction, account_id=doc.account_id, instance_id=doc.instance_id)
        decision = self._decision(identified, bound)
        if not decision.create:
            await bindings.update_binding(
                transaction,
                account_id=doc.account_id,
                instance_id=doc.instance_id,
                role=role.name,
                nonce_hash=decision.nonce_hash,
                pending_time=doc.pending_time,
                now=now,
            )
            return Claimed(nonce=decision.returned_nonce)
        try:
            await bindings.create_binding(
                transaction,
                account_id=doc.account_id,
                instance_id=doc.instance_id,
                region=doc.region,
                role=role.name,
                nonce_hash=decision.nonce_hash,
                pending_time=doc.pending_time,
                now=now,
            )
        except IntegrityError as exc:
            raise _binding_race(f"instance binding insert lost a race: {exc.orig!r}") from None
        return Claimed(nonce=decision.returned_nonce)


def _binding_race(reason: str) -> Conflict:
    return Conflict(
        "Another attestation of this instance is in progress; try again.", code="ec2_binding_race", reason=reason
    )


MAX_DOCUMENT = 16 * 1024
MAX_BLOB = 16 * 1024
_FORMS = ("rsa2048", "pkcs7", "signature")
_NONCE = re.compile(r"[A-Za-z0-9._~+/=-]{16,128}")


def read_proof(body: Mapping[str, Any], transport: Transport) -> Ec2Submission:
    """``{"document", exactly one of "rsa2048" | "pkcs7" | "signature", "nonce"?}``.

    A signature field that is present counts, even blank: exactly one form, and it must not be blank
    (``ec2_proof_form``).
    """
    document = required_text(body, "document", max_len=MAX_DOCUMENT)
    forms = {name: text_field(body, name, max_len=MAX_BLOB, required=False, blank_ok=True) for name in _FORMS}
    nonce = text_field(body, "nonce", max_len=128, required=False)
    if nonce is not None and not _NONCE.fullmatch(nonce):
        raise ClientError("The nonce must be 16 to 128 URL-safe characters.", code="field_invalid")
    proof = Ec2Proof.from_fields(
        document=document,
        rsa2048=forms.get("rsa2048"),
        pkcs7=forms.get("pkcs7"),
        signature=forms.get("signature"),
    )
    return Ec2Submission(proof=proof, nonce=nonce)


METHOD = MethodEntry(
    name=AWS_EC2.method,
    route="/v1/issue/aws-ec2",
    fields=frozenset({"document", *_FORMS, "nonce"}),
    read_proof=read_proof,
    build=lambda resources: Ec2Method(certs=resources.aws_certs, lookups=resources.instance_lookups),
    rules=AWS_EC2,
)
