"""The stand-in for an API Gateway custom domain with mutual TLS.

An HTTPS server on 127.0.0.1 that behaves like API Gateway: it requires a client
certificate and verifies the *leaf alone* against the truststore file (what
``issuer truststore export`` writes and ``GET /v1/truststore`` serves), ignoring
any intermediates the client sends — so a truststore holding only the root fails
here exactly as it fails in AWS. It answers with the URI SAN of the certificate
it was shown, like a backend reading ``$context.identity.clientCert``.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError


def make_server_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed ``localhost`` server certificate (the API's own TLS certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api.localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "api-server.pem", directory / "api-server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


TRUSTSTORE = web.AppKey("truststore", list)


async def _whoami(request: web.Request) -> web.Response:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    if not der:
        return web.json_response({"error": "no client certificate"}, status=401)
    cert = x509.load_der_x509_certificate(der)
    # Python's ssl may have used intermediates the client sent; API Gateway does not. Check the leaf alone.
    verifier = PolicyBuilder().store(Store(request.app[TRUSTSTORE])).build_client_verifier()
    try:
        verifier.verify(cert, [])
    except VerificationError as exc:
        return web.json_response({"error": f"Could not find issuer for certificate ({exc})"}, status=403)
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    )
    return web.json_response({"hello": uris[0] if uris else cert.subject.rfc4514_string()})


class MtlsEndpoint:
    """Runs the endpoint in a background thread; ``url`` once started."""

    def __init__(self, *, truststore: Path, cert: Path, key: Path, port: int) -> None:
        self.truststore = x509.load_pem_x509_certificates(truststore.read_bytes())
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(truststore))
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_cert_chain(str(cert), str(key))
        self.port = port
        self.url = f"https://localhost:{port}/whoami"
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    async def _start(self) -> None:
        app = web.Application()
        app[TRUSTSTORE] = self.truststore
        app.router.add_get("/whoami", _whoami)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.context).start()

    def stop(self) -> None:
        """Stop serving; calling it again does nothing."""
        if not self._thread.is_alive():
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
