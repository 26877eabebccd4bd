"""A revoked certificate cannot renew (POST /v1/renew), and a renewal racing a revocation leaves nothing live.

Real app on a migrated Postgres; the machine proves possession of its current certificate with the
same proof-of-possession token the agent sends.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ca.files import load_local_signer
from ca.signer import IssuedCertificate, LocalFileSigner, SignerCapabilities, SignerHealth, SigningRequest
from issuer.service.admin import operations as admin
from issuer.service.revocation.revoke import RevocationTarget, revoke
from tests.support.harness import PASSPHRASE, Harness, check_issued, new_csr, running_issuer, write_ca
from tests.support.renewal_token import renewal_token
from tests.support.x509_check import make_csr

AUDIENCE = "issuer.test.example"
CONFIG = f"""
[issuer]
trust_domain = "test.example"
server_id = "{AUDIENCE}"

[[roles]]
name = "edge"
methods = ["token"]
ttl = "1h"
"""


async def bootstrap(h: Harness, name: str) -> tuple[Any, x509.Certificate, str]:
    key, csr = new_csr()
    status, body = await h.post("/v1/issue/token", {"csr": csr, "token": await h.token(role="edge", name=name)})
    assert status == 201, body
    return key, x509.load_pem_x509_certificate(body["certificate"].encode()), body["serial"]


async def renew(h: Harness, key: Any, certificate: x509.Certificate) -> tuple[int, dict[str, Any], Any]:
    """POST /v1/renew for a new key, vouched for by ``certificate``; the status, the body and the new key."""
    new_key = ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(new_key).decode()
    token = renewal_token(key, certificate, csr_pem=csr, audience=AUDIENCE)
    resp = await h.client.post("/v1/renew", json={"csr": csr}, headers={"Authorization": f"Bearer {token}"})
    return resp.status, await resp.json(content_type=None), new_key


async def certificates_of(h: Harness, principal: str) -> dict[str, str]:
    rows = await admin.list_certificates(h.service.sessions, limit=100, status=None, principal=principal)
    return {c.serial: c.status for c, _ in rows}


async def test_a_revoked_certificate_cannot_renew(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        key, certificate, serial = await bootstrap(h, "edge-1")
        # The control: before the revocation it renews (and the old one is superseded).
        status, renewed, new_key = await renew(h, key, certificate)
        assert status == 201, renewed
        check_issued(renewed)
        successor = x509.load_pem_x509_certificate(renewed["certificate"].encode())
        assert (await renew(h, key, certificate))[1]["code"] == "certificate_superseded"

        done = await revoke(
            h.service.sessions, RevocationTarget("principal", "edge-1"), reason="keyCompromise", now=datetime.now(UTC)
        )
        assert sorted(c.serial for c in done.revoked) == sorted([serial, renewed["serial"]])
        count = len(await h.certificates())
        status, problem, _ = await renew(h, new_key, successor)
        assert (status, problem["code"]) == (401, "certificate_revoked"), problem
        assert len(await h.certificates()) == count
        assert await certificates_of(h, "edge-1") == {serial: "revoked", renewed["serial"]: "revoked"}

        key2, certificate2, serial2 = await bootstrap(h, "edge-2")
        await revoke(
            h.service.sessions, RevocationTarget("serial", serial2), reason="superseded", now=datetime.now(UTC)
        )
        status, problem, _ = await renew(h, key2, certificate2)
        assert (status, problem["code"]) == (401, "certificate_revoked"), problem
        assert await certificates_of(h, "edge-2") == {serial2: "revoked"}


class GatedSigner:
    """The real CA signer behind a gate: while closed, ``issue`` waits (the renewal's transaction is open)."""

    def __init__(self, signer: LocalFileSigner) -> None:
        self._signer = signer
        self.open = asyncio.Event()
        self.open.set()
        self.entered = asyncio.Event()

    @property
    def issuer_certificate(self) -> x509.Certificate:
        return self._signer.issuer_certificate

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        return self._signer.chain

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        return self._signer.roots

    @property
    def capabilities(self) -> SignerCapabilities:
        return self._signer.capabilities

    async def issue(self, request: SigningRequest) -> IssuedCertificate:
        self.entered.set()
        await self.open.wait()
        return await self._signer.issue(request)

    async def sign_crl(self, revoked: Any, *, now: datetime, next_update: datetime, crl_number: int) -> Any:
        return await self._signer.sign_crl(revoked, now=now, next_update=next_update, crl_number=crl_number)

    async def revoke(self, serial: int, *, reason: x509.ReasonFlags | None) -> None:
        await self._signer.revoke(serial, reason=reason)

    async def health(self) -> SignerHealth:
        return await self._signer.health()


async def test_a_revocation_while_a_renewal_is_signed_wins_and_the_renewal_gets_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    """On Postgres a renewal holds no lock while its certificate is signed: it supersedes the old
    certificate in the statement that records the new one. A revocation in between revokes the old
    certificate at once; the renewal's claim then matches nothing, its signed certificate is
    discarded unrecorded, and it is refused as revoked: nothing is left live."""
    (tmp_path / "state").mkdir(mode=0o700)
    write_ca(tmp_path / "state")
    signer = GatedSigner(load_local_signer(tmp_path / "state" / "ca", passphrase=PASSPHRASE.encode()))
    async with running_issuer(tmp_path, pg_url, config=CONFIG, signer=signer) as h:
        key, certificate, serial = await bootstrap(h, "racer")
        signer.open.clear()
        signer.entered.clear()
        renewal = asyncio.create_task(renew(h, key, certificate))
        await signer.entered.wait()  # admitted, its new certificate being signed
        done = await asyncio.wait_for(
            revoke(
                h.service.sessions,
                RevocationTarget("principal", "racer"),
                reason="keyCompromise",
                now=datetime.now(UTC),
            ),
            timeout=30,
        )
        assert [c.serial for c in done.revoked] == [serial]  # it waited for nothing
        signer.open.set()
        status, body, _ = await renewal
        assert (status, body["code"]) == (401, "certificate_revoked"), body
        assert await certificates_of(h, "racer") == {serial: "revoked"}


async def test_a_renewal_after_a_revocation_finds_the_certificate_revoked(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        key, certificate, serial = await bootstrap(h, "late")
        await revoke(
            h.service.sessions, RevocationTarget("principal", "late"), reason="keyCompromise", now=datetime.now(UTC)
        )
        status, body, _ = await renew(h, key, certificate)
        assert (status, body["code"]) == (401, "certificate_revoked")
        assert await certificates_of(h, "late") == {serial: "revoked"}
