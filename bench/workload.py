"""What the load generator sends, all made before the timed window.

Every request has its own body: a fresh P-256 key's CSR and its own proof — a join
token (bulk-inserted straight into the issuer's database in one transaction), or an
EC2 identity document of its own instance (distinct instance ids, so trust-on-first-use
bindings never collide) launched moments ago, signed by the benchmark's stand-in
"AWS" key that the issuer's configuration trusts for one region.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from bench.load import Workload
from issuer.attest.token import new_token
from issuer.hashing import hash_secret
from issuer.store.engine import make_engine, make_session_factory
from issuer.store.tokens import add_join_token
from tests.support.fake_aws_iid import FakeAwsSigner, build_document, sign

__all__ = [
    "ACCOUNT",
    "AMI",
    "REGION",
    "Ec2Document",
    "cfssl_workload",
    "ec2_documents",
    "ec2_workload",
    "insert_join_tokens",
    "make_csrs",
    "make_keyed_csrs",
    "token_workload",
]

ACCOUNT = "123456789012"
REGION = "eu-west-1"
AMI = "ami-0abcdef1234567890"
TOKEN_PATH = "/v1/issue/token"
RENEW_PATH = "/v1/renew"
EC2_PATH = "/v1/issue/aws-ec2"
CFSSL_PATH = "/api/v1/cfssl/sign"
# Above this many documents, RSA signing is spread over the cores (about 1 ms each).
_PARALLEL_FROM = 400


def make_keyed_csrs(
    count: int, *, prefix: str
) -> list[tuple[ec.EllipticCurvePrivateKey, x509.CertificateSigningRequest]]:
    """``count`` fresh ECDSA P-256 keys, each with its CSR (CN ``<prefix>-<i>``)."""
    out = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{prefix}-{i}")]))
            .sign(key, hashes.SHA256())
        )
        out.append((key, csr))
    return out


def make_csrs(count: int, *, prefix: str) -> list[str]:
    """``count`` PEM CSRs, each for a fresh ECDSA P-256 key (thrown away), CN ``<prefix>-<i>``."""
    return [csr.public_bytes(serialization.Encoding.PEM).decode() for _, csr in make_keyed_csrs(count, prefix=prefix)]


def _body(fields: dict[str, str]) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


async def insert_join_tokens(
    database_url: str, *, role: str, count: int, now: datetime, prefix: str, ttl: timedelta = timedelta(hours=2)
) -> list[str]:
    """``count`` join tokens for ``role`` (named ``<prefix>-<i>``) inserted in one transaction.

    Uses the repository's own insert (``add_join_token`` with ``hash_secret``), so the rows
    are exactly what ``issuer token create`` makes, without a process per token.
    """
    tokens = [new_token() for _ in range(count)]
    engine = make_engine(database_url, pool_size=1)
    try:
        async with make_session_factory(engine)() as session, session.begin():
            for i, token in enumerate(tokens):
                await add_join_token(
                    session,
                    token_hash=hash_secret(token),
                    name=f"{prefix}-{i:06d}",
                    role=role,
                    now=now,
                    expires_at=now + ttl,
                )
    finally:
        await engine.dispose()
    return tokens


async def token_workload(
    database_url: str, *, role: str, count: int, warmup: int, now: datetime, ttl: timedelta = timedelta(hours=2)
) -> Workload:
    """Join tokens for ``role`` inserted in one transaction (:func:`insert_join_tokens`), a token request body each."""
    total = count + warmup
    tokens = await insert_join_tokens(database_url, role=role, count=total, now=now, prefix="bench", ttl=ttl)
    csrs = make_csrs(total, prefix="bench-token")
    bodies = [_body({"csr": csr, "token": token}) for csr, token in zip(csrs, tokens, strict=True)]
    return Workload(name="token", path=TOKEN_PATH, success_status=201, bodies=bodies[warmup:], warmup=bodies[:warmup])


@dataclass(frozen=True, slots=True)
class Ec2Document:
    """An identity document (exact text) and its ``rsa2048`` signature as IMDS serves it."""

    document: str
    rsa2048: str


def _sign_batch(key_pem: bytes, cert_pem: bytes, documents: Sequence[bytes]) -> list[str]:
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signer = FakeAwsSigner(key=key, cert=x509.load_pem_x509_certificate(cert_pem))
    return [sign(doc, signer, "rsa2048") for doc in documents]


def ec2_documents(aws: FakeAwsSigner, *, count: int, launched: datetime) -> list[Ec2Document]:
    """``count`` documents of distinct instances in :data:`ACCOUNT`/:data:`REGION`, pendingTime ``launched``."""
    pending = launched.strftime("%Y-%m-%dT%H:%M:%SZ")
    base = secrets.randbits(32)
    documents = [
        build_document(
            account_id=ACCOUNT,
            region=REGION,
            image_id=AMI,
            instance_id=f"i-{base:08x}{i:09x}",
            pending_time=pending,
        )
        for i in range(count)
    ]
    if count < _PARALLEL_FROM:
        signatures = [sign(doc, aws, "rsa2048") for doc in documents]
    else:
        key_pem = aws.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        cert_pem = aws.cert.public_bytes(serialization.Encoding.PEM)
        workers = os.cpu_count() or 1
        size = -(-count // workers)
        batches = [documents[i : i + size] for i in range(0, count, size)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = pool.map(_sign_batch, [key_pem] * len(batches), [cert_pem] * len(batches), batches)
            signatures = [s for part in parts for s in part]
    return [Ec2Document(document=d.decode(), rsa2048=s) for d, s in zip(documents, signatures, strict=True)]


def ec2_workload(aws: FakeAwsSigner, *, role: str, count: int, warmup: int, launched: datetime) -> Workload:
    """An EC2 request body per instance: document, rsa2048 signature, a client nonce (as the agent sends)."""
    total = count + warmup
    documents = ec2_documents(aws, count=total, launched=launched)
    csrs = make_csrs(total, prefix="bench-ec2")
    bodies = [
        _body(
            {
                "csr": csr,
                "role": role,
                "document": doc.document,
                "rsa2048": doc.rsa2048,
                "nonce": secrets.token_urlsafe(32),
            }
        )
        for csr, doc in zip(csrs, documents, strict=True)
    ]
    return Workload(name="aws-ec2", path=EC2_PATH, success_status=201, bodies=bodies[warmup:], warmup=bodies[:warmup])


def cfssl_workload(*, count: int, warmup: int) -> Workload:
    """cfssl sign requests (``certificate_request``) for fresh P-256 CSRs; cfssl answers 200."""
    csrs = make_csrs(count + warmup, prefix="bench-cfssl")
    bodies = [_body({"certificate_request": csr}) for csr in csrs]
    return Workload(
        name="cfssl",
        path=CFSSL_PATH,
        success_status=200,
        bodies=bodies[warmup:],
        warmup=bodies[:warmup],
        serial_field=None,
    )
