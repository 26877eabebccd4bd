"""Independent checks of what the CA issues, for any test that gets a certificate.

Two checkers that share no code with ``ca/``: cryptography's RFC 5280 client
verifier, and the ``openssl`` command line. A certificate the service hands out
must pass both. Also small builders for CSRs, so tests can play the machine.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store

__all__ = [
    "OpenSSLCheckError",
    "csr_sha256",
    "make_csr",
    "openssl_verify",
    "openssl_verify_crl",
    "openssl_verify_crl_check_all",
    "pem",
    "rsa_key",
    "verify_client_chain",
]


class OpenSSLCheckError(AssertionError):
    """openssl refused what it was given; the message carries openssl's own output."""


def verify_client_chain(
    leaf: x509.Certificate,
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: datetime,
) -> list[x509.Certificate]:
    """Verify ``leaf`` as a TLS client certificate at ``now``; return the chain built (leaf first).

    Raises ``cryptography.x509.verification.VerificationError`` when it does not verify.
    """
    verifier = PolicyBuilder().store(Store(list(roots))).time(now).build_client_verifier()
    return list(verifier.verify(leaf, list(chain)).chain)


def openssl_verify(
    leaf_pem: bytes,
    chain_pem: bytes,
    bundle_pem: bytes,
    *,
    attime: datetime | None = None,
) -> None:
    """Run ``openssl verify -x509_strict -purpose sslclient`` on a leaf; raise with openssl's output on failure.

    ``bundle_pem`` is the trust bundle (``-CAfile``), ``chain_pem`` the intermediates
    (``-untrusted``, may be empty), ``attime`` the verification time (default: now).
    """
    with tempfile.TemporaryDirectory(prefix="x509-check-") as tmp:
        d = Path(tmp)
        (d / "bundle.pem").write_bytes(bundle_pem)
        (d / "leaf.pem").write_bytes(leaf_pem)
        cmd = ["openssl", "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", str(d / "bundle.pem")]
        if chain_pem.strip():
            (d / "chain.pem").write_bytes(chain_pem)
            cmd += ["-untrusted", str(d / "chain.pem")]
        if attime is not None:
            cmd += ["-attime", str(int(attime.timestamp()))]
        cmd.append(str(d / "leaf.pem"))
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    output = (result.stdout + result.stderr).strip()
    # openssl prints "<file>: OK" on success; insist on it as well as on the exit status.
    if result.returncode != 0 or not result.stdout.strip().endswith(": OK"):
        raise OpenSSLCheckError(f"openssl verify refused the certificate (exit {result.returncode}):\n{output}")


def openssl_verify_crl(crl: x509.CertificateRevocationList, bundle_pem: bytes) -> None:
    """Run ``openssl crl -CAfile bundle -noout`` on ``crl``; raise with openssl's output unless it says ``verify OK``.

    The bundle must contain the CRL's issuer (the issuing CA), not only the root.
    """
    with tempfile.TemporaryDirectory(prefix="x509-check-") as tmp:
        d = Path(tmp)
        (d / "bundle.pem").write_bytes(bundle_pem)
        (d / "crl.der").write_bytes(crl.public_bytes(serialization.Encoding.DER))
        cmd = ["openssl", "crl", "-inform", "DER", "-in", str(d / "crl.der"), "-CAfile", str(d / "bundle.pem")]
        result = subprocess.run([*cmd, "-noout"], capture_output=True, text=True, timeout=30, check=False)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or "verify OK" not in output or "failure" in output:
        raise OpenSSLCheckError(f"openssl crl refused the CRL (exit {result.returncode}):\n{output}")


def openssl_verify_crl_check_all(
    leaf_pem: bytes, truststore_pem: bytes, crls_pem: bytes, *, untrusted_pem: bytes = b""
) -> tuple[bool, str]:
    """``openssl verify -crl_check_all -CAfile truststore -CRLfile crls [-untrusted chain] leaf``:
    (passed, openssl's output). Every CA of the chain needs a valid CRL in ``crls_pem``."""
    with tempfile.TemporaryDirectory(prefix="x509-check-") as tmp:
        d = Path(tmp)
        for name, data in (("truststore.pem", truststore_pem), ("crls.pem", crls_pem), ("leaf.pem", leaf_pem)):
            (d / name).write_bytes(data)
        cmd = ["openssl", "verify", "-crl_check_all", "-CAfile", str(d / "truststore.pem")]
        cmd += ["-CRLfile", str(d / "crls.pem")]
        if untrusted_pem.strip():
            (d / "untrusted.pem").write_bytes(untrusted_pem)
            cmd += ["-untrusted", str(d / "untrusted.pem")]
        result = subprocess.run([*cmd, str(d / "leaf.pem")], capture_output=True, text=True, timeout=30, check=False)
    output = (result.stdout + result.stderr).strip()
    return result.returncode == 0 and result.stdout.strip().endswith(": OK"), output


def pem(certificates: Iterable[x509.Certificate]) -> bytes:
    """The certificates as one PEM bundle."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def make_csr(
    key: CertificateIssuerPrivateKeyTypes,
    *,
    common_name: str = "machine",
    organization: str | None = None,
    dns_names: Sequence[str] = (),
    uris: Sequence[str] = (),
    request_ca: bool = False,
) -> bytes:
    """A PEM CSR signed by ``key``; the subject, SANs and a CA:true request are whatever the test wants."""
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.UniformResourceIdentifier(u) for u in uris]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if request_ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    # Ed25519/Ed448 sign without a separate hash.
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def csr_sha256(csr_pem: str) -> str:
    """The hex SHA-256 of the CSR's DER: what a renewal token or a signed STS request binds to."""
    der = x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


@functools.cache
def rsa_key(bits: int) -> rsa.RSAPrivateKey:
    """An RSA key of ``bits``, generated once per test session (RSA-4096 takes about a second)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)
