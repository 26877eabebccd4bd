"""A root, an issuing CA under it, leaves and CRLs made with ``cryptography`` — and a server for them.

What the authorizer's CRL tests and its zip test run against: ``GET /v1/crls`` (PEM bundle) and
``GET /v1/truststore`` with strong ETags, whose bodies a test swaps to play a tampering bucket, a
rolled-back copy, a failing source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.fake_imds import serve_in_thread
from tests.unit.test_authorizer_cert import Ca, make_leaf

__all__ = ["CrlServer", "Pki", "crl", "crl_server", "make_pki", "pem_of", "tampered"]


@dataclass(frozen=True)
class Pki:
    root: Ca
    issuing: Ca  # signed by root

    @property
    def truststore(self) -> bytes:
        return pem_of(self.issuing.cert) + pem_of(self.root.cert)

    def leaf(self, **options: object) -> x509.Certificate:
        return make_leaf(self.issuing, **options)  # type: ignore[arg-type]


def _ca(name: str, *, parent: Ca | None = None) -> Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    issuer_name = parent.cert.subject if parent else subject
    signing_key = parent.key if parent else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None if parent is None else 0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if parent is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()), critical=False
        )
    return Ca(key, builder.sign(signing_key, hashes.SHA256()))


def make_pki(name: str = "Test") -> Pki:
    root = _ca(f"{name} Root CA")
    return Pki(root=root, issuing=_ca(f"{name} Issuing CA", parent=root))


def crl(
    ca: Ca,
    *,
    revoked: Sequence[int] = (),
    number: int = 1,
    this_update: datetime | None = None,
    next_update: datetime | None = None,
    signer: ec.EllipticCurvePrivateKey | None = None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> x509.CertificateRevocationList:
    """A CRL of ``ca`` (signed by ``signer``, default its own key) with crlNumber and AKI."""
    now = datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(this_update or now - timedelta(minutes=1))
        .next_update(next_update or now + timedelta(hours=24))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now - timedelta(minutes=5)).build()
        )
    return builder.sign(signer or ca.key, hashes.SHA256())


def pem_of(item: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return item.public_bytes(serialization.Encoding.PEM)


def tampered(revocation_list: x509.CertificateRevocationList, serial: int) -> bytes:
    """``revocation_list`` with ``serial`` changed to another of the same length: its signature no longer holds."""
    der = revocation_list.public_bytes(serialization.Encoding.DER)
    encoded = serial.to_bytes((serial.bit_length() + 8) // 8, "big")
    assert der.count(encoded) == 1, "the serial is in the CRL once"
    changed = bytes([encoded[0], *encoded[1:-1], encoded[-1] ^ 0x01])
    forged = der.replace(encoded, changed)
    return x509.load_der_x509_crl(forged).public_bytes(serialization.Encoding.PEM)


@dataclass
class CrlServer:
    """``GET /v1/crls`` and ``GET /v1/truststore`` with strong ETags; those named in ``failing`` answer 503."""

    crls: bytes = b""
    truststore: bytes = b""
    failing: set[str] = field(default_factory=set)
    url: str = ""
    requests: dict[str, int] = field(default_factory=lambda: {"crls": 0, "truststore": 0})
    not_modified: dict[str, int] = field(default_factory=lambda: {"crls": 0, "truststore": 0})

    def app(self) -> web.Application:
        def handler(name: str) -> object:
            async def serve(request: web.Request) -> web.Response:
                self.requests[name] += 1
                if name in self.failing:
                    return web.Response(status=503, text="down")
                body: bytes = getattr(self, name)
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                if request.headers.get("If-None-Match") == etag:
                    self.not_modified[name] += 1
                    return web.Response(status=304, headers={"ETag": etag})
                return web.Response(body=body, content_type="application/x-pem-file", headers={"ETag": etag})

            return serve

        app = web.Application()
        app.router.add_get("/v1/crls", handler("crls"))  # type: ignore[arg-type]
        app.router.add_get("/v1/truststore", handler("truststore"))  # type: ignore[arg-type]
        return app

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "ISSUER_CRLS_URL": f"{self.url}/v1/crls",
            "ISSUER_TRUSTSTORE_URL": f"{self.url}/v1/truststore",
            "ISSUER_AUTHZ_POLICY": '{"rules": [], "default": "allow"}',
            **extra,
        }


@contextmanager
def crl_server(pki: Pki, *revocation_lists: x509.CertificateRevocationList) -> Iterator[CrlServer]:
    server = CrlServer(crls=b"".join(pem_of(c) for c in revocation_lists), truststore=pki.truststore)
    with serve_in_thread(server.app()) as url:
        server.url = url
        yield server
