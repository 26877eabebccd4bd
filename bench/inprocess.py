"""In-process figures: the pure steps of an issuance with no HTTP and no database.

Each figure runs one step (or the steps of one method) ``count`` times on the
benchmark's own inputs and reports operations per second. Set beside the HTTP
rates, they show where the time goes: a request that costs ten times its
verify + decide + sign spends the rest in HTTP, JSON, the database and logging.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from bench.workload import Ec2Document
from ca.csr import parse_csr
from ca.keys import KEY_TYPES
from ca.signer import LocalFileSigner, SigningRequest
from issuer.attest.ec2 import Ec2Proof, identity_from_document, verify_instance_identity
from issuer.attest.ec2_certs import AwsCertStore
from issuer.attest.identity import VerifiedIdentity
from issuer.policy import Role, decide

__all__ = ["Rate", "measure"]


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` runs of ``name`` took ``seconds``."""

    name: str
    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def micros(self) -> float:
        """Microseconds per operation."""
        return 1e6 * self.seconds / self.count if self.count else 0.0


async def _timed(name: str, count: int, step: Callable[[int], Awaitable[object]]) -> Rate:
    started = time.perf_counter()
    for i in range(count):
        await step(i)
    return Rate(name=name, count=count, seconds=time.perf_counter() - started)


def _answer(certificate: x509.Certificate, signer: LocalFileSigner) -> bytes:
    # What the pipeline and the handler do with a signed leaf besides signing it.
    certificate.fingerprint(hashes.SHA256())
    certificate.subject.rfc4514_string()
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    chain = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in signer.chain)
    roots = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in signer.roots)
    return json.dumps({"certificate": pem, "chain": chain, "bundle": roots, "stored": pem}).encode()


async def measure(
    *,
    signer: LocalFileSigner,
    csrs: Sequence[str],
    token_role: Role | None,
    ec2_role: Role | None,
    documents: Sequence[Ec2Document],
    aws_certs: AwsCertStore,
    trust_domain: str,
    count: int,
) -> list[Rate]:
    """Rates of: the signer alone, CSR parsing, the token and EC2 paths (verify + decide + sign), the answer.

    ``csrs`` and ``documents`` are cycled through; the EC2 figures are skipped when
    ``ec2_role`` is None or there are no documents, the token one when ``token_role`` is None.
    """
    now = datetime.now(UTC)
    first = parse_csr(csrs[0], allowed_key_types=KEY_TYPES)
    role = token_role or ec2_role
    assert role is not None
    sample_identity = VerifiedIdentity(
        method="token", principal="bench-0", attributes=MappingProxyType({"name": "bench-0"})
    )
    template = decide(sample_identity, token_role, first, None, now, trust_domain=trust_domain) if token_role else None
    rates: list[Rate] = []

    if template is not None:

        async def sign_only(i: int) -> object:
            return await signer.issue(SigningRequest(template=template, public_key=first.public_key))

        rates.append(await _timed("signer.issue alone (LocalFileSigner, P-256, verify after sign)", count, sign_only))

    async def csr_only(i: int) -> object:
        return parse_csr(csrs[i % len(csrs)], allowed_key_types=KEY_TYPES)

    rates.append(await _timed("ca.csr.parse_csr alone", count, csr_only))

    if token_role is not None:

        async def token_path(i: int) -> object:
            csr = parse_csr(csrs[i % len(csrs)], allowed_key_types=KEY_TYPES)
            identity = VerifiedIdentity(
                method="token", principal=f"bench-{i}", attributes=MappingProxyType({"name": f"bench-{i}"})
            )
            leaf = decide(identity, token_role, csr, None, now, trust_domain=trust_domain)
            return await signer.issue(SigningRequest(template=leaf, public_key=csr.public_key, csr_der=csr.der))

        rates.append(await _timed("token: parse_csr + decide + sign", count, token_path))

    if ec2_role is not None and documents:
        proofs = [
            Ec2Proof.from_fields(document=d.document, rsa2048=d.rsa2048, pkcs7=None, signature=None) for d in documents
        ]

        async def verify_only(i: int) -> object:
            return verify_instance_identity(proofs[i % len(proofs)], certs=aws_certs)

        rates.append(await _timed("aws-ec2: verify_instance_identity alone (rsa2048 CMS)", count, verify_only))

        async def ec2_path(i: int) -> object:
            doc = verify_instance_identity(proofs[i % len(proofs)], certs=aws_certs)
            csr = parse_csr(csrs[i % len(csrs)], allowed_key_types=KEY_TYPES)
            leaf = decide(identity_from_document(doc), ec2_role, csr, None, now, trust_domain=trust_domain)
            return await signer.issue(SigningRequest(template=leaf, public_key=csr.public_key, csr_der=csr.der))

        rates.append(await _timed("aws-ec2: verify + parse_csr + decide + sign", count, ec2_path))

    if template is not None:
        leaf_cert = (await signer.issue(SigningRequest(template=template, public_key=first.public_key))).certificate

        async def answer(i: int) -> object:
            return _answer(leaf_cert, signer)

        rates.append(await _timed("answer: fingerprint, subject, PEM x3, JSON", count, answer))
    return rates
