"""The x509pop method: an external certificate chain and a proof by its key → burnt → the certificate's identity.

The chain and the proof are verified without I/O against the role's trust bundle
(:func:`issuer.attest.x509pop.verify_x509pop`); the proof's ``jti`` is then burnt in a
transaction of its own (a replay is refused even inside its five minutes, across
replicas), and the role's principal template names the identity. The role's matchers
apply in the decision; the certificate issued is ours, for the CSR's new key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ca.csr import CheckedCSR
from issuer.attest.x509pop import ProvenCertificate, X509PopProof, certificate_facts, verify_x509pop
from issuer.errors import Unauthorized
from issuer.policy import Role
from issuer.policy.x509pop import X509POP
from issuer.service.issuance.entry import MethodEntry, Transport
from issuer.service.issuance.guards import ReplayGuards
from issuer.service.issuance.phases import Claimed, Identified, Verified, requested_role
from issuer.service.issuance.wire import required_text

__all__ = ["METHOD", "X509PopMethod"]

MAX_CHAIN_PEM = 32 * 1024
MAX_PROOF = 16 * 1024


class X509PopMethod:
    """:class:`~issuer.service.issuance.phases.IssuanceMethod` for ``POST /v1/issue/x509pop``.

    Refusals: the codes of :mod:`issuer.attest.x509pop`, ``x509pop_proof_replayed`` (401),
    and the role's matchers (``binding_mismatch``, 403).
    """

    name = X509POP.method
    role_from_request = True

    def __init__(self, *, audience: str, guards: ReplayGuards) -> None:
        self._audience = audience
        self._guards = guards

    def verify(
        self, proof: X509PopProof, *, csr: CheckedCSR, role: Role | None, now: datetime
    ) -> Verified[ProvenCertificate]:
        named = requested_role(role)
        proven = verify_x509pop(
            proof,
            anchors=X509POP.of(named).trust_anchors,
            audience=self._audience,
            csr_sha256_hex=csr.sha256_hex,
            csr_public_key_sha256_hex=csr.public_key_sha256_hex,
            now=now,
        )
        return Verified(state=proven, role=named)

    async def identify(
        self, verified: Verified[ProvenCertificate], *, transaction: AsyncSession, request_id: str, now: datetime
    ) -> Identified[ProvenCertificate]:
        proven, role = verified.state, requested_role(verified.role)
        digest = hashlib.sha256(f"x509pop:{proven.fingerprint}:{proven.jti}".encode()).hexdigest()
        if not await self._guards.burn(kind="x509pop", digest=digest, expires_at=proven.replayable_until, now=now):
            raise Unauthorized(
                "This proof of possession has been used already; make a new one.",
                code="x509pop_proof_replayed",
                reason=f"jti {proven.jti} of certificate {proven.fingerprint} seen before",
            )
        identity = X509POP.of(role).identity(certificate_facts(proven.leaf), role=role.name)
        return Identified(state=proven, identity=identity, role=role)

    async def check_upstream(self, identified: Identified[ProvenCertificate], *, now: datetime) -> None:
        return None

    async def claim_in_transaction(
        self,
        transaction: AsyncSession,
        identified: Identified[ProvenCertificate],
        *,
        request_id: str,
        now: datetime,
    ) -> Claimed:
        return Claimed()


def read_proof(body: Mapping[str, Any], transport: Transport) -> X509PopProof:
    """``{"chain": "<PEM, leaf first>", "proof": "<compact JWS>"}``."""
    return X509PopProof(
        chain_pem=required_text(body, "chain", max_len=MAX_CHAIN_PEM),
        proof=required_text(body, "proof", max_len=MAX_PROOF),
    )


METHOD = MethodEntry(
    name=X509POP.method,
    route="/v1/issue/x509pop",
    fields=frozenset({"chain", "proof"}),
    read_proof=read_proof,
    build=lambda resources: X509PopMethod(audience=resources.settings.audience, guards=resources.guards),
    rules=X509POP,
)
