"""nginx with ``ssl_crl`` accepts the issuer's CRLs (issue 20 §2): a good client gets 200, a revoked one
is refused. nginx checks the CRL of every CA of the chain, so before root CRLs existed it refused
every client — shown here with the issuing CA's CRL alone.

nginx runs on 127.0.0.1 with ``ssl_verify_client on``, the truststore as ``ssl_client_certificate``
and ``GET /v1/crls`` as ``ssl_crl``; the client is Python's ssl with a token-issued leaf. Skipped
loudly where nginx is not installed, except under CI (``.ci/run`` installs it).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.test_crls_bundle import get_crls
from tests.integration.test_revocation import truststore
from tests.integration.test_revocation_crl import revoke_serial
from tests.support.harness import Harness, new_csr, running_issuer
from tests.support.moto_server import free_port

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


@pytest.fixture(autouse=True)
def _needs_nginx() -> None:
    if NGINX is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed; CI requires it (apt-get install nginx-light)", pytrace=False)
        pytest.skip("SKIPPING NGINX TEST: nginx is not installed (apt-get install nginx-light)")


def _server_certificate(directory: Path) -> tuple[Path, Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    paths = directory / "server.pem", directory / "server.key", directory / "server-ca.pem"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths[2].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return paths


@contextmanager
def nginx(directory: Path, *, truststore_pem: bytes, crls_pem: bytes) -> Iterator[str]:
    """nginx with mutual TLS and ssl_crl on a free loopback port; yields its https URL."""
    assert NGINX is not None
    server_cert, server_key, _ = _server_certificate(directory)
    (directory / "truststore.pem").write_bytes(truststore_pem)
    (directory / "crls.pem").write_bytes(crls_pem)
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""  # workers must read the files in this private directory
    temps = " ".join(
        f"{kind}_temp_path {directory}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (directory / "nginx.conf").write_text(
        f"""
{user}
worker_processes 1;
daemon off;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    {temps}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {server_cert};
        ssl_certificate_key {server_key};
        ssl_verify_client on;
        ssl_verify_depth 3;
        ssl_client_certificate {directory}/truststore.pem;
        ssl_crl {directory}/crls.pem;
        location / {{ return 200 "hello $ssl_client_s_dn\\n"; }}
    }}
}}
"""
    )
    process = subprocess.Popen(
        [NGINX, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-e", str(directory / "error.log")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                log = (directory / "error.log").read_text() if (directory / "error.log").exists() else ""
                raise AssertionError(
                    f"nginx exited {process.returncode}: {process.stdout.read() if process.stdout else ''}{log}"
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield f"https://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(timeout=30)


def get(url: str, directory: Path, *, cert_pem: str, key: Any) -> int:
    """GET ``url`` with the client certificate; the HTTP status (nginx answers 400 to a refused one)."""
    (directory / "client.pem").write_text(cert_pem)
    (directory / "client.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(cafile=str(directory / "server-ca.pem"))
    context.load_cert_chain(directory / "client.pem", directory / "client.key")
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def issue_with_key(h: Harness, name: str) -> tuple[Any, str, str]:
    key, csr = new_csr()
    status, body = await h.post("/v1/issue/token", {"csr": csr, "token": await h.token(name=name)})
    assert status == 201, body
    return key, str(body["certificate"]) + str(body["chain"]), str(body["serial"])


async def test_nginx_ssl_crl_allows_a_good_client_and_refuses_a_revoked_one(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url) as h:
        good_key, good_cert, _ = await issue_with_key(h, "good")
        bad_key, bad_cert, bad_serial = await issue_with_key(h, "bad")
        await revoke_serial(h, bad_serial)
        trust = await truststore(h)
        crls, body, _ = await get_crls(h)

    site = tmp_path / "nginx"
    site.mkdir()
    with nginx(site, truststore_pem=trust, crls_pem=body) as url:
        assert get(url, site, cert_pem=good_cert, key=good_key) == 200
        assert get(url, site, cert_pem=bad_cert, key=bad_key) == 400
    assert "certificate revoked" in (site / "error.log").read_text()

    # The issuing CA's CRL alone (what there was before root CRLs): nginx refuses the good client too.
    alone = tmp_path / "nginx-issuing-crl-only"
    alone.mkdir()
    issuing_only = crls[0].public_bytes(serialization.Encoding.PEM)
    with nginx(alone, truststore_pem=trust, crls_pem=issuing_only) as url:
        assert get(url, alone, cert_pem=good_cert, key=good_key) == 400
    assert "unable to get certificate CRL" in (alone / "error.log").read_text()
