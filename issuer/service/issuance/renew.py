"""Renewal: one more method in the pipeline. The current certificate proves the machine; a new key gets
a certificate for the same identity and role.

The certificate must be one of ours: byte for byte one this service recorded (a certificate is
recorded only after its signature was checked; a forged one differs in its SHA-256); renewal
keeps the identity facts it was issued for and the role, applies the role's TTL, records
``renewed_from``, marks the old certificate ``superseded`` in the same transaction (a
conditional UPDATE: two renewals of one certificate cannot both win), and refuses revoked,
expired (beyond ``renew_grace``), superseded certificates and chains older than
``max_renewal_age`` (:mod:`issuer.policy.renewal`), and a new key this identity had a
certificate for before. For EC2 roles (``aws-ec2`` and ``aws-ec2-role``) with ``check_instance``
the instance is asked about again: a terminated instance cannot renew.

Order, for a token: the certificate's record is read first (``identify``: reads only), so the
pipeline's rate limit and decision run before the token's ``jti`` is burnt (``check_upstream``)
— a request refused with 429 leaves the token usable, as a join token is — and the burn still
precedes the one outbound call (DescribeInstances). A ``jti`` seen before is refused already at
the read, so a replayed token costs the machine's rate-limit bucket nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ca.csr import CheckedCSR
from issuer.attest.ec2_instance import LookupFactory
from issuer.attest.identity import VerifiedIdentity
from issuer.attest.renewal import verify_renewal_token
from issuer.errors import Unauthorized
from issuer.policy import PriorCertificate, Role
from issuer.policy.ec2 import AWS_EC2
from issuer.policy.ec2_role import AWS_EC2_ROLE
from issuer.policy.renewal import status_refusal
from issuer.service.ca.registry import IssuerRegistry
from issuer.service.issuance.ec2 import check_live
from issuer.service.issuance.ec2_role import check_live_by_role
from issuer.service.issuance.entry import MethodEntry, Resources, Transport
from issuer.service.issuance.guards import ReplayGuards
from issuer.service.issuance.model import serial_hex
from issuer.service.issuance.phases import Claimed, ClaimStep, Identified, Peeked, Verified
from issuer.service.issuance.roles import RoleBook
from issuer.store import certificates

__all__ = ["METHOD", "RenewMethod", "RenewProof"]


@dataclass(frozen=True, slots=True)
class RenewProof:
    """How the current certificate was shown: a proof-of-possession token, or the TLS client certificate."""

    token: str | None
    peer_certificate: bytes | None


@dataclass(frozen=True, slots=True)
class _State:
    certificate: x509.Certificate
    key_sha256: str  # of the CSR's new key: it must be one this identity never had
    jti: str | None = None
    jti_expires: datetime | None = None
    # Postgres, no upstream call to protect: the token is burnt by the recording statement itself.
    burn_with_claim: bool = False

    @property
    def serial(self) -> str:
        return serial_hex(self.certificate.serial_number)


def _jti_digest(jti: str) -> str:
    return hashlib.sha256(f"renew:{jti}".encode()).hexdigest()


def _replayed(jti: str) -> Unauthorized:
    return Unauthorized(
        "This renewal token has been used already; make a new one.",
        code="renew_token_replayed",
        reason=f"jti {jti} seen before",
    )


def _unknown(reason: str) -> Unauthorized:
    return Unauthorized(
        "The certificate was not issued by this service.", code="renew_certificate_unknown", reason=reason
    )


class RenewMethod:
    """:class:`~issuer.service.issuance.phases.IssuanceMethod` for ``POST /v1/renew``.

    Refusals: ``renew_auth_missing``, the token codes of :mod:`issuer.attest.renewal`,
    ``renew_token_replayed``, ``renew_certificate_unknown`` (401), the codes of
    :func:`issuer.policy.check_renewal` (``renew_key_reused`` among them), the EC2 liveness
    codes and ``role_unknown``.
    """

    name = "renew"
    role_from_request = False

    def __init__(
        self,
        *,
        registry: IssuerRegistry,
        roles: RoleBook,
        sessions: async_sessionmaker[AsyncSession],
        guards: ReplayGuards,
        lookups: LookupFactory,
        audience: str,
    ) -> None:
        self._registry = registry
        self._roles = roles
        self._sessions = sessions
        self._guards = guards
        self._lookups = lookups
        self._audience = audience

    def verify(self, proof: RenewProof, *, csr: CheckedCSR, role: Role | None, now: datetime) -> Verified[_State]:
        if proof.token is not None:
            token = verify_renewal_token(proof.token, audience=self._audience, csr_sha256_hex=csr.sha256_hex, now=now)
            state = _State(
                certificate=token.certificate,
                key_sha256=csr.public_key_sha256_hex,
                jti=token.jti,
                jti_expires=token.expires_at,
            )
        elif proof.peer_certificate is not None:
            state = _State(
                certificate=x509.load_der_x509_certificate(proof.peer_certificate),
                key_sha256=csr.public_key_sha256_hex,
            )
        else:
            raise Unauthorized(
                "Renewal needs the current certificate: present it over mutual TLS, "
                "or send a proof-of-possession token as Authorization: Bearer.",
                code="renew_auth_missing",
            )
        # Whether we signed it is settled in peek, where its bytes must be those we recorded (a
        # certificate is recorded only after its signature was checked): checking the signature here
        # too cost an ECDSA verification per renewal. A name no issuer of ours has goes no further.
        if not self._registry.snapshot.names_issuer_of(state.certificate):
            raise _unknown(f"serial {state.serial}: no registered issuer has its issuer's name")
        return Verified(state=state)

    async def identify(
        self, verified: Verified[_State], *, transaction: AsyncSession, request_id: str, now: datetime
    ) -> Identified[_State]:
        # A short read of its own, not the issuance transaction: EC2 renewals ask AWS after this.
        # Reads only: the token is burnt after the rate limit and the decision (check_upstream).
        async with self._sessions() as session:
            identified = (await self.peek(verified, session=session, now=now)).identified
        return replace(identified, state=replace(identified.state, burn_with_claim=False))

    async def peek(self, verified: Verified[_State], *, session: AsyncSession, now: datetime) -> Peeked[_State]:
        state = verified.state
        facts = await certificates.renewal_facts(
            session,
            serial=state.serial,
            key_sha256=state.key_sha256,
            guard_digest=_jti_digest(state.jti) if state.jti is not None else None,
            now=now,
        )
        record, identity_record = facts.certificate, facts.identity
        fingerprint = state.certificate.fingerprint(hashes.SHA256()).hex()
        # The bytes presented are those of a certificate we signed and recorded: any other certificate,
        # one forged with a recorded serial and our issuer's name included, differs in its SHA-256.
        if record is None or identity_record is None or record.fingerprint_sha256 != fingerprint:
            raise _unknown(f"serial {state.serial} is not recorded (or not with these bytes)")
        if facts.spent and state.jti is not None:
            raise _replayed(state.jti)
        reused = state.key_sha256 != record.public_key_sha256 and facts.had_key
        identity = VerifiedIdentity(
            method=identity_record.method,
            principal=identity_record.principal,
            account_id=identity_record.account_id,
            region=identity_record.region,
            attributes=MappingProxyType(dict(record.identity_attributes)),
        )
        prior = PriorCertificate(
            id=record.id,
            serial=record.serial,
            role=record.role,
            status=record.status,
            not_after=record.not_after,
            chain_started_at=record.chain_started_at,
            public_key_sha256=record.public_key_sha256,
            earlier_keys=frozenset({state.key_sha256}) if reused else frozenset(),
        )
        role = self._roles.get(record.role, method=identity.method)
        identified = Identified(state=state, identity=identity, role=role, prior=prior)
        # A token whose renewal asks AWS nothing is burnt with the claim (one round trip fewer);
        # one that leads to DescribeInstances is burnt before the call, so a replay never reaches AWS.
        burn_with_claim = state.jti is not None and not _asks_aws(identified)
        identified = replace(identified, state=replace(state, burn_with_claim=burn_with_claim))
        return Peeked(identified=identified, denials=facts.denials)

    def asks_upstream(self, identified: Identified[_State]) -> bool:
        return _asks_aws(identified)

    def claim_step(self, identified: Identified[_State], *, now: datetime) -> ClaimStep:
        assert identified.prior is not None  # peek() found it
        state = identified.state
        if not state.burn_with_claim:
            return ClaimStep(sql=certificates.SUPERSEDE_STEP, params={"c_prior": identified.prior.id})
        assert state.jti is not None
        return ClaimStep(
            sql=certificates.SUPERSEDE_BURNT_STEP,
            prelude=certificates.BURN_PRELUDE,
            params={
                "c_prior": identified.prior.id,
                "c_digest": _jti_digest(state.jti),
                "c_expires_at": state.jti_expires,
            },
        )

    async def claim_refused(self, identified: Identified[_State], *, session: AsyncSession) -> Exception:
        # A replay that raced this one, or revoked or renewed between the read and the statement: say which.
        assert identified.prior is not None
        state = identified.state
        current = await certificates.get_certificate(session, identified.prior.serial)
        if state.burn_with_claim and state.jti is not None and current is not None and current.status == "active":
            return _replayed(state.jti)  # still active: the claim failed on the burnt token
        return status_refusal(identified.prior.serial, current.status if current is not None else "unknown")

    async def check_upstream(self, identified: Identified[_State], *, now: datetime) -> None:
        state = identified.state
        if state.jti is not None and state.jti_expires is not None and not state.burn_with_claim:
            burnt = await self._guards.burn(
                kind="renew", digest=_jti_digest(state.jti), expires_at=state.jti_expires, now=now
            )
            if not burnt:
                raise _replayed(state.jti)
        # Only a certificate the decision let renew gets here: AWS is asked about nothing else.
        if _asks_aws(identified):
            if identified.identity.method == AWS_EC2.method:
                await check_live(self._lookups, identified.role, identified.identity)
            else:
                await check_live_by_role(self._lookups, identified.role, identified.identity)

    async def claim_in_transaction(
        self, transaction: AsyncSession, identified: Identified[_State], *, request_id: str, now: datetime
    ) -> Claimed:
        prior = identified.prior  # always set: identify() found it
        if prior is None or await certificates.supersede_certificate(transaction, certificate_id=prior.id):
            return Claimed()
        # Revoked or renewed between the read and now: say which, from the locked row.
        current = await certificates.lock_certificate(transaction, prior.serial)
        raise status_refusal(prior.serial, current.status if current is not None else "unknown")


def _asks_aws(identified: Identified[_State]) -> bool:
    """Whether :meth:`RenewMethod.check_upstream` calls DescribeInstances for this renewal."""
    method = identified.identity.method
    if method == AWS_EC2.method:
        return AWS_EC2.of(identified.role).check_instance
    if method == AWS_EC2_ROLE.method:
        return AWS_EC2_ROLE.of(identified.role).check_instance
    return False


def read_proof(body: Mapping[str, Any], transport: Transport) -> RenewProof:
    """The current certificate: ``Authorization: Bearer <token>`` or the TLS client certificate."""
    token = None
    if transport.authorization is not None:
        scheme, _, value = transport.authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized(
                "Send the renewal token as Authorization: Bearer <token>.",
                code="renew_token_invalid",
                reason=f"Authorization scheme {scheme[:20]!r}",
            )
        token = value.strip()
    return RenewProof(token=token, peer_certificate=transport.peer_certificate)


def _build(resources: Resources) -> RenewMethod:
    return RenewMethod(
        registry=resources.registry,
        roles=resources.roles,
        sessions=resources.sessions,
        guards=resources.guards,
        lookups=resources.instance_lookups,
        audience=resources.settings.audience,
    )


METHOD = MethodEntry(
    name="renew",
    route="/v1/renew",
    fields=frozenset(),
    read_proof=read_proof,
    build=_build,
    rules=None,
)
