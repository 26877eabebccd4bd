"""Another CA than ours, for x509pop: an enterprise PKI's root and intermediate, its machine certificates,
and proofs of possession signed by their keys, built here independently of the service and the agent,
with every knob a refusal test needs (another alg, another key, other claims, an HMAC)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.x509_check import csr_sha256, pem

__all__ = ["ExternalPki", "Machine", "proof"]


def _name(common_name: str, *, ou: Sequence[str] = (), org: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []
    attributes += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit) for unit in ou]
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(subject: x509.Name, key: Any, issuer: x509.Name, signer: Any, *, now: datetime) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
        .sign(signer, hashes.SHA256())
    )


@dataclass
class Machine:
    """A machine's external certificate, its key and the chain it presents (leaf first)."""

    key: Any
    certificate: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]

    @property
    def chain_pem(self) -> str:
        return pem([self.certificate, *self.intermediates]).decode()

    @property
    def fingerprint(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    def write(self, directory: Path) -> tuple[Path, Path]:
        """``cert.pem`` (the chain) and ``key.pem`` (PKCS#8, unencrypted) in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / "external-cert.pem", directory / "external-key.pem"
        cert.write_text(self.chain_pem)
        key.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key.chmod(0o600)
        return cert, key


class ExternalPki:
    """A root and an intermediate of "Example Corp", and machine certificates from the intermediate."""

    def __init__(self, name: str = "Example Corp", *, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        root_name = _name(f"{name} Root CA", org=name)
        self.root = _ca(root_name, self.root_key, root_name, self.root_key, now=now)
        self.intermediate_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = _ca(
            _name(f"{name} Devices CA", org=name), self.intermediate_key, root_name, self.root_key, now=now
        )

    def write_bundle(self, path: Path) -> Path:
        """The trust bundle a role names: the root alone."""
        path.write_bytes(pem([self.root]))
        return path

    def machine(
        self,
        common_name: str = "dev-1",
        *,
        key: Any = None,
        ou: Sequence[str] = ("Servers",),
        dns: Sequence[str] = (),
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        usages: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,),
        from_root: bool = False,
    ) -> Machine:
        """A machine certificate (clientAuth unless ``usages`` says otherwise; None: no EKU at all)."""
        now = datetime.now(UTC)
        key = key or ec.generate_private_key(ec.SECP256R1())
        signer, issuer = (self.root_key, self.root) if from_root else (self.intermediate_key, self.intermediate)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, ou=ou, org="Example Corp"))
            .issuer_name(issuer.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(hours=1))
            .not_valid_after(not_after or now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
        )
        if usages is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        if dns:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
        certificate = builder.sign(signer, hashes.SHA256())
        return Machine(key=key, certificate=certificate, intermediates=() if from_root else (self.intermediate,))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def default_alg(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    return {"secp384r1": "ES384", "secp521r1": "ES512"}.get(key.curve.name, "ES256")


def _sign(key: Any, alg: str, data: bytes, *, hmac_secret: bytes | None) -> bytes:
    if alg == "none":
        return b""
    if alg.startswith("HS"):
        return hmac.new(hmac_secret or b"", data, hashlib.sha256).digest()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    hash_type = {"384": hashes.SHA384(), "512": hashes.SHA512()}.get(alg[2:], hashes.SHA256())
    if isinstance(key, rsa.RSAPrivateKey):
        pad: padding.AsymmetricPadding = (
            padding.PSS(mgf=padding.MGF1(hash_type), salt_length=hash_type.digest_size)
            if alg.startswith("PS")
            else padding.PKCS1v15()
        )
        return key.sign(data, pad, hash_type)
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hash_type)))
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def proof(
    key: Any,
    *,
    csr_pem: str,
    audience: str,
    now: float | None = None,
    lifetime: int = 120,
    alg: str | None = None,
    signing_key: Any = None,
    hmac_secret: bytes | None = None,
    **overrides: Any,
) -> str:
    """A proof of possession by ``key`` (or ``signing_key``); ``overrides`` replace claims (None removes
    one) or, prefixed ``header_``, header fields. ``alg="HS256"`` MACs with ``hmac_secret``."""
    issued = int(now if now is not None else time.time())
    header: dict[str, Any] = {"alg": alg or default_alg(key), "typ": "JWT"}
    claims: dict[str, Any] = {
        "aud": audience,
        "iat": issued,
        "exp": issued + lifetime,
        "jti": secrets.token_urlsafe(24),
        "csr_sha256": csr_sha256(csr_pem),
    }
    for name, value in overrides.items():
        target, field = (header, name.removeprefix("header_")) if name.startswith("header_") else (claims, name)
        if value is None:
            target.pop(field, None)
        else:
            target[field] = value
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = _sign(signing_key or key, header["alg"], signing_input.encode(), hmac_secret=hmac_secret)
    return f"{signing_input}.{b64url(signature)}"
