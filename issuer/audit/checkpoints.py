"""Checkpoints: "the chain's hash at ``seq`` was ``head_hash`` at ``at``", signed by a key the database cannot use.

Which key signs (:class:`CheckpointKeys`):

- ``[audit] checkpoint_kms_key = "arn:aws:kms:…:key/…"`` when set: a dedicated asymmetric
  SIGN_VERIFY key in AWS KMS (``key_ref`` ``kms:<ARN>``). Required when the active issuer is
  AWS Private CA (``pca:``), which signs certificates and nothing else.
- otherwise the active issuing CA's own key, a file key or a KMS key (``key_ref``
  ``x509:<issuing certificate SHA-256>``); the certificate, chained to a root, is what
  verifies it.

The signed message is a domain-separated canonical JSON (never valid DER), so a checkpoint
signature can never pass for a certificate or CRL signature of the same key. Verifying needs
only a public key: the issuing certificate, or KMS ``GetPublicKey``.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ca.files import load_key_file
from ca.keys import PrivateKey
from ca.kms_client import KmsClient, kms_public_key, kms_sign
from ca.kms_x509 import KmsAlgorithm, algorithm_for_public_key
from issuer.audit.canonical import canonical_json
from issuer.audit.chain_store import CheckpointRecord
from issuer.aws.kms import is_key_arn
from issuer.errors import ConfigError
from issuer.store.records import IssuerRecord

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointKeys",
    "CheckpointSigner",
    "KmsKeySigner",
    "LocalKeySigner",
    "checkpoint_message",
    "message_of",
    "sign_checkpoint",
    "signature_valid",
]

CHECKPOINT_FORMAT: Final = 1
_DOMAIN: Final = b"aws-machine-issuer audit checkpoint\n"
_KMS_TIMEOUT: Final = 5.0


def checkpoint_message(*, seq: int, head_hash: str, at: datetime, key_ref: str, algorithm: str, format: int) -> bytes:
    """The exact bytes a checkpoint's signature covers (the key and algorithm are part of the claim)."""
    claim = {"algorithm": algorithm, "at": at, "format": format, "head_hash": head_hash, "key_ref": key_ref, "seq": seq}
    return _DOMAIN + canonical_json(claim)


def message_of(record: CheckpointRecord) -> bytes:
    return checkpoint_message(
        seq=record.seq,
        head_hash=record.head_hash,
        at=record.at,
        key_ref=record.key_ref,
        algorithm=record.algorithm,
        format=record.format,
    )


class CheckpointSigner(Protocol):
    """Signs checkpoint messages with one key."""

    @property
    def key_ref(self) -> str: ...

    @property
    def algorithm(self) -> str: ...

    async def sign(self, message: bytes) -> bytes: ...


def _algorithm_of(public_key: object) -> KmsAlgorithm:
    algorithm = algorithm_for_public_key(public_key)  # type: ignore[arg-type]
    if algorithm is None:
        raise ConfigError("the checkpoint key must be ECDSA P-256/P-384 or RSA 2048-4096", code="audit_key_unsupported")
    return algorithm


class LocalKeySigner:
    """A key held in memory (an issuing CA's file key)."""

    def __init__(self, key: PrivateKey, *, key_ref: str) -> None:
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ConfigError("the checkpoint key must be ECDSA or RSA", code="audit_key_unsupported")
        self._key = key
        self._algorithm = _algorithm_of(key.public_key())
        self.key_ref = key_ref

    @property
    def algorithm(self) -> str:
        return self._algorithm.signing_algorithm

    async def sign(self, message: bytes) -> bytes:
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            return self._key.sign(message, ec.ECDSA(self._algorithm.hash))
        return self._key.sign(message, padding.PKCS1v15(), self._algorithm.hash)

    def __repr__(self) -> str:
        return f"LocalKeySigner(key_ref={self.key_ref!r})"


class KmsKeySigner:
    """A key in AWS KMS: ``kms:Sign`` (RAW message), each call under ``timeout`` seconds."""

    def __init__(
        self, client: KmsClient, key_id: str, *, algorithm: KmsAlgorithm, key_ref: str, timeout: float = _KMS_TIMEOUT
    ) -> None:
        self._client = client
        self._key_id = key_id
        self._algorithm = algorithm
        self._timeout = timeout
        self.key_ref = key_ref

    @property
    def algorithm(self) -> str:
        return self._algorithm.signing_algorithm

    async def sign(self, message: bytes) -> bytes:
        async with asyncio.timeout(self._timeout):
            return await asyncio.to_thread(kms_sign, self._client, self._key_id, self._algorithm, message)

    def __repr__(self) -> str:
        return f"KmsKeySigner(key_ref={self.key_ref!r})"


async def sign_checkpoint(signer: CheckpointSigner, *, seq: int, head_hash: str, at: datetime) -> CheckpointRecord:
    """The signed checkpoint for the chain's hash ``head_hash`` at ``seq``."""
    message = checkpoint_message(
        seq=seq,
        head_hash=head_hash,
        at=at,
        key_ref=signer.key_ref,
        algorithm=signer.algorithm,
        format=CHECKPOINT_FORMAT,
    )
    signature = await signer.sign(message)
    return CheckpointRecord(
        seq=seq,
        head_hash=head_hash,
        at=at,
        key_ref=signer.key_ref,
        algorithm=signer.algorithm,
        signature=base64.b64encode(signature).decode(),
        format=CHECKPOINT_FORMAT,
    )


def signature_valid(public_key: object, record: CheckpointRecord) -> bool:
    """Whether ``record``'s signature verifies with ``public_key`` under the algorithm it names."""
    algorithm = _algorithm_of(public_key)
    if algorithm.signing_algorithm != record.algorithm:
        return False
    try:
        signature = base64.b64decode(record.signature, validate=True)
    except ValueError:
        return False
    message = message_of(record)
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, message, ec.ECDSA(algorithm.hash))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, message, padding.PKCS1v15(), algorithm.hash)
        else:
            return False
    except InvalidSignature:
        return False
    return True


class KmsSource(Protocol):
    def for_key(self, key_id: str) -> KmsClient: ...


@dataclass(frozen=True, slots=True)
class _Cached:
    fingerprint: str
    signer: CheckpointSigner


class CheckpointKeys:
    """Finds the :class:`CheckpointSigner` for the active issuer (see the module docstring).

    ``passphrase`` is called only when a file key must be decrypted; ``kms`` gives KMS clients
    (default ``issuer.aws.kms.KmsClients``, made on first use). Raises :class:`ConfigError`
    ``audit_checkpoint_key_missing`` when the active issuer is AWS Private CA and no
    ``checkpoint_kms_key`` is set, ``audit_key_unsupported`` for a key that cannot sign here.
    """

    def __init__(
        self,
        *,
        ca_dir: Path,
        passphrase: Callable[[], bytes],
        kms_key: str | None = None,
        kms: KmsSource | None = None,
    ) -> None:
        self._ca_dir = ca_dir
        self._passphrase = passphrase
        self._kms_key = kms_key
        self._kms = kms
        self._cached: _Cached | None = None

    def _clients(self) -> KmsSource:
        if self._kms is None:
            from issuer.aws.kms import KmsClients

            self._kms = KmsClients()
        return self._kms

    async def signer_for(self, issuer: IssuerRecord) -> CheckpointSigner:
        fingerprint = "kms" if self._kms_key else issuer.fingerprint_sha256
        if self._cached is not None and self._cached.fingerprint == fingerprint:
            return self._cached.signer
        signer = await self._load(issuer)
        self._cached = _Cached(fingerprint, signer)
        return signer

    async def _load(self, issuer: IssuerRecord) -> CheckpointSigner:
        if self._kms_key:
            # Named by the configured key ARN (what verifiers are told to trust), not by what GetPublicKey echoes.
            client = self._clients().for_key(self._kms_key)
            described = await asyncio.to_thread(kms_public_key, client, self._kms_key)
            return KmsKeySigner(client, self._kms_key, algorithm=described.algorithm, key_ref=f"kms:{self._kms_key}")
        key_ref = f"x509:{issuer.fingerprint_sha256}"
        if issuer.key_ref.startswith("file:"):
            # file:<path>, relative to the CA directory (as issuer.service.ca.signers resolves it).
            path = Path(issuer.key_ref.removeprefix("file:"))
            path = path if path.is_absolute() else self._ca_dir / path
            key = await asyncio.to_thread(load_key_file, path, passphrase=self._passphrase())
            return LocalKeySigner(key, key_ref=key_ref)
        if issuer.key_ref.startswith("kms:"):
            arn = issuer.key_ref.removeprefix("kms:")
            if not is_key_arn(arn):
                raise ConfigError(
                    f"issuing CA {issuer.subject}: key_ref {issuer.key_ref!r} is not kms:<key ARN>",
                    code="kms_key_ref_invalid",
                )
            certificate = x509.load_pem_x509_certificate(issuer.certificate_pem.encode())
            return KmsKeySigner(
                self._clients().for_key(arn), arn, algorithm=_algorithm_of(certificate.public_key()), key_ref=key_ref
            )
        raise ConfigError(
            f"the active issuing CA {issuer.subject} ({issuer.key_ref.split(':', 1)[0]}:) cannot sign audit "
            'checkpoints: set [audit] checkpoint_kms_key = "arn:aws:kms:REGION:ACCOUNT:key/ID" '
            "(an asymmetric SIGN_VERIFY key)",
            code="audit_checkpoint_key_missing",
        )
