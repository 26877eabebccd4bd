"""Run the real issuer app (migrated database, real CA files) behind aiohttp's test server."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from ca.files import init_ca
from ca.signer import Signer
from issuer.app import create_app
from issuer.http.keys import PIPELINE
from issuer.service.admin import operations as admin
from issuer.service.ca.registry import SignerLoader
from issuer.service.issuance.pipeline import Pipeline
from issuer.settings import Settings, load_settings
from issuer.store.models import Attestation, Certificate
from tests.support.x509_check import make_csr, openssl_verify, verify_client_chain

PASSPHRASE = "test-passphrase-0123456789abcdef"

BASE_CONFIG = """
[issuer]
trust_domain = "test.example"
server_id = "issuer.test.example"

[[roles]]
name = "onprem"
methods = ["token"]
ttl = "24h"
max_ttl = "72h"

[[roles]]
name = "edge"
methods = ["token"]
ttl = "1h"
max_ttl = "2h"
key_types = ["ec-p256"]
uri_san = "spiffe://{trust_domain}/edge/{name}"
"""


@dataclass
class Harness:
    client: TestClient[Any, Any]
    settings: Settings
    service: Pipeline

    async def token(self, *, role: str = "onprem", name: str = "machine-1", ttl: timedelta = timedelta(hours=1)) -> str:
        created = await admin.create_token(
            self.service.sessions, self.settings, role=role, name=name, ttl=ttl, now=datetime.now(UTC)
        )
        return created.token

    async def post(self, path: str, body: object) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        resp = await self.client.post(path, data=data, headers={"Content-Type": "application/json"})
        return resp.status, json.loads(await resp.text())

    async def attestations(self) -> list[Attestation]:
        async with self.service.sessions() as session:
            return list((await session.scalars(select(Attestation).order_by(Attestation.id))).all())

    async def certificates(self) -> list[Certificate]:
        async with self.service.sessions() as session:
            return list((await session.scalars(select(Certificate).order_by(Certificate.id))).all())


def write_ca(state_dir: Path) -> None:
    init_ca(state_dir / "ca", passphrase=PASSPHRASE.encode(), now=datetime.now(UTC))


@asynccontextmanager
async def running_issuer(
    tmp_path: Path,
    database_url: str,
    *,
    config: str = BASE_CONFIG,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    **app_kwargs: Any,
) -> AsyncIterator[Harness]:
    """The app on a random loopback port with a CA in ``tmp_path/state``."""
    state = tmp_path / "state"
    if not (state / "ca" / "issuing.pem").exists():
        state.mkdir(mode=0o700, exist_ok=True)
        write_ca(state)
    config_path = tmp_path / "issuer.toml"
    config_path.write_text(config)
    environ = {
        "ISSUER_STATE_DIR": str(state),
        "ISSUER_DATABASE_URL": database_url,
        "ISSUER_CA_PASSPHRASE": PASSPHRASE,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),  # never this user's own passphrase file
        **(env or {}),
    }
    settings = load_settings(config_path, env=environ)
    kwargs = dict(app_kwargs)
    # CRLs are signed when asked for, so tests can count their numbers; a test of the background
    # task passes crls_every itself.
    kwargs.setdefault("crls_every", None)
    if clock is not None:
        kwargs["clock"] = clock
    if "signer" in kwargs:
        kwargs["signer_loader"] = fixed_signer(kwargs.pop("signer"))
    app = create_app(settings, **kwargs)
    server = TestServer(app, host="127.0.0.1")
    if ssl_context is not None:
        await server.start_server(ssl=ssl_context)
    async with TestClient(server) as client:
        yield Harness(client=client, settings=settings, service=app[PIPELINE])


async def check_leaf_against_truststore(h: Harness, body: Mapping[str, Any]) -> None:
    """``openssl verify -CAfile truststore.pem cert.pem`` with no ``-untrusted``: the check API Gateway makes."""
    resp = await h.client.get("/v1/truststore")
    assert resp.status == 200
    openssl_verify(body["certificate"].encode(), b"", await resp.read())


def fixed_signer(signer: Signer) -> SignerLoader:
    """A signer loader that hands out ``signer`` whatever the registry's active issuer is."""

    async def load(issuer: Any, *, certificate: Any, chain: Any, roots: Any) -> Signer:
        return signer

    return load


def new_csr(*, curve: ec.EllipticCurve | None = None, key: Any = None, **kwargs: Any) -> tuple[Any, str]:
    """A fresh key and a PEM CSR for it."""
    key = key or ec.generate_private_key(curve or ec.SECP256R1())
    return key, make_csr(key, **kwargs).decode()


def check_issued(body: Mapping[str, Any], *, key: Any = None) -> x509.Certificate:
    """Assert an issue response carries a client certificate both verifiers accept; return the leaf."""
    leaf = x509.load_pem_x509_certificate(body["certificate"].encode())
    chain = x509.load_pem_x509_certificates(body["chain"].encode())
    roots = x509.load_pem_x509_certificates(body["bundle"].encode())
    verify_client_chain(leaf, chain, roots, datetime.now(UTC))
    openssl_verify(body["certificate"].encode(), body["chain"].encode(), body["bundle"].encode())
    if key is not None:
        assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    assert format(leaf.serial_number, "x") == body["serial"]
    return leaf
