"""TLS for ``issuer serve``: ``tls_context`` errors name the file at fault; optional client
certificates are verified against the client CA and read back with ``peer_certificate``;
the TLS handshake is bounded by the header timeout.

Certificates are made here with ``cryptography``; the clients are Python's ``ssl`` through
aiohttp's client and raw sockets, so the server's context is checked by a real handshake.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from issuer.http.server import ServeError, ServerLimits, bind_socket, peer_certificate, start_app, tls_context

NOW = datetime.now(UTC)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_path, key_path


def issue(name: str, *, issuer: Issued | None = None, server: bool = False) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=5))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        ).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False
            )
    return Issued(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


@dataclass(frozen=True)
class Pki:
    directory: Path
    server_ca: Path
    server_cert: Path
    server_key: Path
    client_ca: Path
    client: Issued
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    server_ca = issue("server CA")
    client_ca = issue("client CA")
    other_ca = issue("other CA")
    client = issue("machine-1", issuer=client_ca)
    server_ca_path, _ = server_ca.write(directory, "server-ca")
    server_cert, server_key = issue("127.0.0.1", issuer=server_ca, server=True).write(directory, "server")
    client_ca_path, _ = client_ca.write(directory, "client-ca")
    client_cert, client_key = client.write(directory, "client")
    stranger_cert, stranger_key = issue("stranger", issuer=other_ca).write(directory, "stranger")
    return Pki(
        directory, server_ca_path, server_cert, server_key, client_ca_path, client,
        client_cert, client_key, stranger_cert, stranger_key,
    )  # fmt: skip


# -- tls_context: one-line errors naming the file --------------------------------------------


def test_tls_context_loads_a_good_pair(pki: Pki) -> None:
    context = tls_context(pki.server_cert, pki.server_key)
    assert context.verify_mode == ssl.CERT_NONE
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls_context(pki.server_cert, pki.server_key, client_ca=pki.client_ca).verify_mode == ssl.CERT_OPTIONAL
    required = tls_context(pki.server_cert, pki.server_key, client_ca=pki.client_ca, require_client_cert=True)
    assert required.verify_mode == ssl.CERT_REQUIRED


def _bad_files(pki: Pki, tmp: Path) -> list[tuple[str, dict[str, Path], Path, str]]:
    garbage = tmp / "garbage.pem"
    garbage.write_text("not a certificate\n")
    encrypted = tmp / "encrypted.key"
    encrypted.write_bytes(
        issue("x").key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    _, other_key = issue("other").write(tmp, "other")
    missing = tmp / "missing.pem"
    good = {"cert": pki.server_cert, "key": pki.server_key}
    return [
        ("missing certificate", {**good, "cert": missing}, missing, "No such file"),
        ("certificate not PEM", {**good, "cert": garbage}, garbage, "not a PEM certificate"),
        ("missing key", {**good, "key": missing}, missing, "No such file"),
        ("key not PEM", {**good, "key": garbage}, garbage, "not a PEM private key"),
        ("encrypted key", {**good, "key": encrypted}, encrypted, "encrypted"),
        ("key of another certificate", {**good, "key": other_key}, other_key, "does not match"),
        ("missing client CA", {**good, "client_ca": missing}, missing, "No such file"),
        ("client CA not PEM", {**good, "client_ca": garbage}, garbage, "not a PEM certificate"),
    ]


@pytest.mark.parametrize(
    "case",
    [
        "missing certificate",
        "certificate not PEM",
        "missing key",
        "key not PEM",
        "encrypted key",
        "key of another certificate",
        "missing client CA",
        "client CA not PEM",
    ],
)
def test_tls_context_names_the_bad_file_in_one_line(pki: Pki, tmp_path: Path, case: str) -> None:
    _, files, culprit, reason = next(c for c in _bad_files(pki, tmp_path) if c[0] == case)
    with pytest.raises(ServeError) as caught:
        tls_context(**files)  # type: ignore[arg-type]
    assert caught.value.code == "tls_files_invalid"
    assert str(culprit) in caught.value.detail
    assert reason in caught.value.detail
    assert "\n" not in caught.value.detail


def test_require_client_cert_needs_a_client_ca(pki: Pki) -> None:
    with pytest.raises(ValueError, match="client_ca"):
        tls_context(pki.server_cert, pki.server_key, require_client_cert=True)


# -- client certificates over a real handshake -----------------------------------------------


async def _peer(request: web.Request) -> web.Response:
    der = peer_certificate(request)
    return web.json_response({"sha256": hashlib.sha256(der).hexdigest() if der else None})


Serve = Callable[[ssl.SSLContext | None], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    stops = []

    async def start(context: ssl.SSLContext | None) -> str:
        app = web.Application()
        app.router.add_get("/peer", _peer)
        sock = bind_socket("127.0.0.1", 0)
        runner = await start_app(app, sock, ssl_context=context, limits=ServerLimits(header_timeout=0.3))
        stops.append((runner, sock))
        return f"{'https' if context else 'http'}://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for runner, sock in stops:
        await runner.cleanup()
        sock.close()


def client_context(pki: Pki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.server_ca)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


async def get_peer(url: str, context: ssl.SSLContext | None) -> str | None:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/peer", ssl=context or False) as response:
        assert response.status == 200
        body = await response.json()
        return body["sha256"]  # type: ignore[no-any-return]


async def test_verified_client_certificate_is_returned(serve: Serve, pki: Pki) -> None:
    url = await serve(tls_context(pki.server_cert, pki.server_key, client_ca=pki.client_ca))
    got = await get_peer(url, client_context(pki, pki.client_cert, pki.client_key))
    assert got == hashlib.sha256(pki.client.cert.public_bytes(serialization.Encoding.DER)).hexdigest()


async def test_client_certificate_is_optional(serve: Serve, pki: Pki) -> None:
    url = await serve(tls_context(pki.server_cert, pki.server_key, client_ca=pki.client_ca))
    assert await get_peer(url, client_context(pki)) is None


async def test_client_certificate_from_another_ca_fails_the_handshake(serve: Serve, pki: Pki) -> None:
    url = await serve(tls_context(pki.server_cert, pki.server_key, client_ca=pki.client_ca))
    with pytest.raises(aiohttp.ClientError):
        await get_peer(url, client_context(pki, pki.stranger_cert, pki.stranger_key))


async def test_required_client_certificate_refuses_a_client_without_one(serve: Serve, pki: Pki) -> None:
    url = await serve(tls_context(pki.server_cert, pki.server_key, client_ca=pki.client_ca, require_client_cert=True))
    with pytest.raises(aiohttp.ClientError):
        await get_peer(url, client_context(pki))
    assert await get_peer(url, client_context(pki, pki.client_cert, pki.client_key)) is not None


async def test_no_client_certificate_without_a_client_ca_or_tls(serve: Serve, pki: Pki) -> None:
    url = await serve(tls_context(pki.server_cert, pki.server_key))
    # The server does not ask, so a client's certificate is never sent and never returned.
    assert await get_peer(url, client_context(pki, pki.client_cert, pki.client_key)) is None
    assert await get_peer(await serve(None), None) is None


async def test_tls_handshake_is_bounded_by_the_header_timeout(serve: Serve, pki: Pki) -> None:
    url = await serve(tls_context(pki.server_cert, pki.server_key))
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # TCP only, no ClientHello
    try:
        assert await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:
        pass  # closed all the same
    finally:
        writer.close()
