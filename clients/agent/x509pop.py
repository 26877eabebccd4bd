"""``--method x509pop``: a certificate another CA issued to this machine, and its key, prove who it is.

The external certificate (``--external-cert``: PEM, the machine's own first, then any
intermediates) travels as the request's ``chain``; the external key (``--external-key``:
unencrypted PEM) signs a short proof bound to the issuer's server id and to the new CSR
(:func:`clients.agent.pop.possession_proof`). The external key never becomes the new key:
bootstrap always makes a fresh one. Both files are read afresh for every attempt, so a
device certificate the other CA renews on disk is picked up by ``run``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from clients.agent.pop import ExternalKey, external_algorithm, possession_proof
from clients.errors import ConfigError
from clients.wire import Field, Method

__all__ = ["X509PopProof", "load_external"]

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class X509PopProof:
    """The external chain and key; the proof is signed when the request is made."""

    chain_pem: str
    key: ExternalKey
    server_id: str
    now: Callable[[], datetime] = _utc_now
    method: Method = "x509pop"

    def fields(self, *, csr_der: bytes, progress: Callable[[str], None]) -> dict[str, object]:
        proof = possession_proof(key=self.key, audience=self.server_id, csr_der=csr_der, now=self.now())
        progress(f"signed an x509pop proof ({external_algorithm(self.key)}) for {self.server_id}")
        return {Field.CHAIN: self.chain_pem, Field.PROOF: proof}

    def accepted(self, issued: Mapping[str, object]) -> None:
        return None


def load_external(cert_path: Path, key_path: Path, *, server_id: str) -> X509PopProof:
    """Read ``--external-cert`` and ``--external-key``; raise :class:`ConfigError` (exit 78) when they
    cannot be used: unreadable, not PEM, an encrypted or unsupported key, a key that is not the certificate's."""
    chain_pem = _read(cert_path, "--external-cert")
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise ConfigError(
            f"--external-cert {cert_path} holds no PEM certificate", code="external_cert_invalid"
        ) from None
    try:
        key = serialization.load_pem_private_key(_read(key_path, "--external-key"), password=None)
    except TypeError:
        raise ConfigError(
            f"--external-key {key_path} is encrypted; give the agent an unencrypted copy (mode 0600)",
            code="external_key_invalid",
        ) from None
    except ValueError:
        raise ConfigError(f"--external-key {key_path} is not a PEM private key", code="external_key_invalid") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise ConfigError(
            f"--external-key {key_path}: a {type(key).__name__} cannot sign an x509pop proof",
            code="external_key_invalid",
        )
    external_algorithm(key)  # refuses curves the issuer would not accept, before any request
    if chain[0].public_key().public_bytes(*_SPKI) != key.public_key().public_bytes(*_SPKI):
        raise ConfigError(
            f"--external-key {key_path} is not the key of the first certificate in {cert_path}",
            code="external_key_mismatch",
        )
    return X509PopProof(chain_pem=chain_pem.decode("ascii"), key=key, server_id=server_id)


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {flag} {path}: {exc.strerror}", code="external_file_unreadable") from None
