"""POST /v1/issue/token end to end: real app, migrated Postgres (and SQLite), real CA, openssl."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from issuer.service.admin import operations as admin
from tests.support.harness import check_issued, check_leaf_against_truststore, new_csr, running_issuer
from tests.support.scripted_signer import ScriptedSigner
from tests.support.x509_check import rsa_key


async def test_token_issues_a_client_certificate_both_checkers_accept(tmp_path: Path, db_url: str) -> None:
    async with running_issuer(tmp_path, db_url) as h:
        token = await h.token(name="build-agent-7")
        key, csr = new_csr(common_name="admin", dns_names=["evil.example"], uris=["spiffe://evil/x"])
        status, body = await h.post("/v1/issue/token", {"csr": csr, "token": token})
        assert status == 201, body
        leaf = check_issued(body, key=key)
        await check_leaf_against_truststore(h, body)

        # Names come from the verified identity through the role template, never from the CSR.
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://test.example/onprem/build-agent-7"]
        assert san.get_values_for_type(x509.DNSName) == []
        assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "build-agent-7"
        assert body["identity"] == {
            "method": "token",
            "principal": "build-agent-7",
            "uri_san": "spiffe://test.example/onprem/build-agent-7",
        }
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        assert lifetime == timedelta(hours=24, seconds=60)  # role ttl + the 60 s backdate
        renew_after = datetime.fromisoformat(body["renew_after"])
        assert leaf.not_valid_before_utc < renew_after < leaf.not_valid_after_utc

        # Recorded before it was returned: certificate row, identity, success audit row, token used.
        (cert_row,) = await h.certificates()
        assert cert_row.serial == body["serial"]
        assert cert_row.role == "onprem" and cert_row.key_type == "ec-p256" and cert_row.status == "active"
        (audit,) = await h.attestations()
        assert (audit.outcome, audit.method, audit.principal, audit.certificate_serial) == (
            "success",
            "token",
            "build-agent-7",
            body["serial"],
        )
        assert audit.request_id and audit.remote_addr == "127.0.0.1"
        # The token names the certificate it became: the serial the signer chose, written after signing.
        (token,) = await admin.list_tokens(h.service.sessions, include_used=True)
        assert (token.certificate_serial, token.used_by_request_id) == (body["serial"], audit.request_id)


async def test_bundle_endpoint_serves_the_roots_that_verify_issued_certs(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url) as h:
        resp = await h.client.get("/v1/bundle")
        assert resp.status == 200
        bundle = await resp.text()
        _, csr = new_csr()
        _, body = await h.post("/v1/issue/token", {"csr": csr, "token": await h.token()})
        assert body["bundle"] == bundle
        assert "X-Request-ID" in resp.headers


@pytest.mark.parametrize(
    ("key_factory", "code", "status"),
    [
        (lambda: rsa_key(1024), "key_type_unsupported", 400),
        (lambda: ed25519.Ed25519PrivateKey.generate(), "key_type_not_allowed", 403),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "key_type_unsupported", 400),
    ],
)
async def test_refused_key_types(tmp_path: Path, pg_url: str, key_factory, code: str, status: int) -> None:
    async with running_issuer(tmp_path, pg_url) as h:
        _, csr = new_csr(key=key_factory())
        token = await h.token()
        got, body = await h.post("/v1/issue/token", {"csr": csr, "token": token})
        assert (got, body["code"]) == (status, code), body
        # The failed request consumed nothing: the same token still works with a good key.
        _, good = new_csr()
        got, _ = await h.post("/v1/issue/token", {"csr": good, "token": token})
        assert got == 201


async def test_role_narrows_key_types_and_ttl(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url) as h:
        _, p384 = new_csr(curve=ec.SECP384R1())
        status, body = await h.post("/v1/issue/token", {"csr": p384, "token": await h.token(role="edge")})
        assert (status, body["code"]) == (403, "key_type_not_allowed")
        _, p256 = new_csr()
        status, body = await h.post("/v1/issue/token", {"csr": p256, "token": await h.token(role="edge"), "ttl": "3h"})
        assert (status, body["code"]) == (400, "ttl_too_long")
        status, body = await h.post("/v1/issue/token", {"csr": p256, "token": await h.token(role="edge"), "ttl": "30m"})
        assert status == 201
        leaf = check_issued(body)
        assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(minutes=31)


def _tamper_signature(pem: str) -> str:
    csr = x509.load_pem_x509_csr(pem.encode())
    from cryptography.hazmat.primitives import serialization

    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature BIT STRING
    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


@pytest.mark.parametrize(
    ("make_body", "status", "code"),
    [
        (lambda csr, tok: {"csr": _tamper_signature(csr), "token": tok}, 400, "csr_signature_invalid"),
        (
            lambda csr, tok: {
                "csr": "-----BEGIN CERTIFICATE REQUEST-----\nZm9v\n-----END CERTIFICATE REQUEST-----\n",
                "token": tok,
            },
            400,
            "csr_malformed",
        ),
        (lambda csr, tok: {"csr": "hello", "token": tok}, 400, "csr_malformed"),
        (lambda csr, tok: b"{not json", 400, "body_not_json"),
        (lambda csr, tok: [csr, tok], 400, "body_not_object"),
        (lambda csr, tok: {"csr": 42, "token": tok}, 400, "field_invalid"),
        (lambda csr, tok: {"csr": csr, "token": ["x"]}, 400, "field_invalid"),
        (lambda csr, tok: {"csr": csr}, 400, "field_missing"),
        (lambda csr, tok: {"csr": csr, "token": tok, "admin": True}, 400, "field_unknown"),
        (lambda csr, tok: {"csr": csr, "token": tok, "role": "edge"}, 400, "role_mismatch"),
        (lambda csr, tok: {"csr": csr, "token": "ijt_" + "A" * 43}, 401, "token_invalid"),
        (lambda csr, tok: {"csr": csr, "token": tok, "ttl": True}, 400, "field_invalid"),
    ],
)
async def test_bad_requests_get_problem_json_and_change_nothing(
    tmp_path: Path, pg_url: str, make_body, status: int, code: str
) -> None:
    async with running_issuer(tmp_path, pg_url) as h:
        token = await h.token()
        _, csr = new_csr()
        resp = await h.client.post(
            "/v1/issue/token",
            data=(lambda b: b if isinstance(b, bytes) else __import__("json").dumps(b))(make_body(csr, token)),
            headers={"Content-Type": "application/json"},
        )
        body = await resp.json(content_type=None)
        assert resp.status == status, body
        assert resp.headers["Content-Type"].startswith("application/problem+json")
        assert body["code"] == code
        assert body["status"] == status and body["title"] and body["detail"]
        assert body["request_id"] == resp.headers["X-Request-ID"]
        assert await h.certificates() == []
        # The token is still unused: a correct request with it succeeds.
        got, _ = await h.post("/v1/issue/token", {"csr": csr, "token": token})
        assert got == 201
        # Both attempts are in the audit trail, the refusal with its code and request id.
        audit = [(a.outcome, a.method, a.code, a.request_id) for a in await h.attestations()]
        assert audit[0] == ("failure", "token", code, body["request_id"])
        assert [row[0] for row in audit] == ["failure", "success"]


async def test_failures_leave_an_audit_row_with_the_reason(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url) as h:
        _, csr = new_csr(key=rsa_key(1024))
        status, body = await h.post("/v1/issue/token", {"csr": csr, "token": await h.token(name="m-9")})
        assert status == 400
        (row,) = await h.attestations()
        assert (row.outcome, row.method, row.code, row.request_id) == (
            "failure",
            "token",
            "key_type_unsupported",
            body["request_id"],
        )


async def test_oversize_body_is_refused_with_413(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url) as h:
        resp = await h.client.post(
            "/v1/issue/token",
            data=b'{"csr": "' + b"A" * 200_000 + b'"}',
            headers={"Content-Type": "application/json"},
        )
        body = await resp.json(content_type=None)
        assert (resp.status, body["code"]) == (413, "payload_too_large")
        (row,) = await h.attestations()
        assert (row.outcome, row.code) == ("failure", "payload_too_large")


async def test_expired_and_reused_tokens(tmp_path: Path, pg_url: str) -> None:
    clock_now = [datetime.now(UTC)]
    async with running_issuer(tmp_path, pg_url, clock=lambda: clock_now[0]) as h:
        expiring = await h.token(name="late", ttl=timedelta(minutes=10))
        clock_now[0] += timedelta(minutes=11)
        _, csr = new_csr()
        status, body = await h.post("/v1/issue/token", {"csr": csr, "token": expiring})
        assert (status, body["code"]) == (401, "token_expired")

        token = await h.token(name="once", ttl=timedelta(hours=2))
        status, _ = await h.post("/v1/issue/token", {"csr": csr, "token": token})
        assert status == 201
        status, body = await h.post("/v1/issue/token", {"csr": csr, "token": token})
        assert (status, body["code"]) == (401, "token_used")
        codes = [(a.outcome, a.code, a.principal) for a in await h.attestations()]
        assert codes == [
            ("failure", "token_expired", "late"),
            ("success", None, "once"),
            ("failure", "token_used", "once"),
        ]


async def test_a_revoked_token_is_refused_as_revoked_not_as_expired(tmp_path: Path, db_url: str) -> None:
    from issuer.service.admin import operations as admin

    async with running_issuer(tmp_path, db_url) as h:
        leaked = await h.token(name="leaked", ttl=timedelta(hours=2))
        assert await admin.revoke_token(h.service.sessions, name="leaked", now=datetime.now(UTC)) == 1
        status, body = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": leaked})
        assert (status, body["code"], body["detail"]) == (401, "token_revoked", "The join token has been revoked.")
        (row,) = await h.attestations()
        assert (row.code, row.principal, row.role) == ("token_revoked", "leaked", "onprem")
        assert "revoked at" in (row.reason or "")
        listed = await admin.list_tokens(h.service.sessions, include_used=True)
        assert [(t.name, t.revoked_at is not None, t.used_at) for t in listed] == [("leaked", True, None)]
        assert await admin.list_tokens(h.service.sessions, include_used=False) == []  # no longer "unused"


async def test_concurrent_use_of_one_token_exactly_one_wins(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url) as h:
        for round_ in range(3):
            token = await h.token(name=f"race-{round_}")
            csrs = [new_csr()[1] for _ in range(8)]
            results = await asyncio.gather(*(h.post("/v1/issue/token", {"csr": c, "token": token}) for c in csrs))
            statuses = sorted(s for s, _ in results)
            assert statuses == [201] + [401] * 7, results
            assert {b["code"] for s, b in results if s == 401} == {"token_used"}
        assert len(await h.certificates()) == 3


async def test_health_and_readiness(tmp_path: Path, sqlite_url: str) -> None:
    async with running_issuer(tmp_path, sqlite_url) as h:
        assert (await h.client.get("/healthz")).status == 200
        resp = await h.client.get("/readyz")
        assert resp.status == 200
        assert (await resp.json())["checks"] == {"database": "ok", "signer": "ok", "registry": "ok"}
        resp = await h.client.get("/v1/nothing")
        body = await resp.json(content_type=None)
        assert (resp.status, body["code"]) == (404, "not_found")


class _BrokenSigner:
    """A signer whose backend fails (an HSM or KMS outage, say)."""

    def __init__(self, real) -> None:
        self._real = real
        self.broken = True
        self.issuer_certificate, self.chain, self.roots = real.issuer_certificate, real.chain, real.roots

        self.capabilities = real.capabilities

    async def issue(self, request):
        if self.broken:
            raise RuntimeError("signing backend unavailable")
        return await self._real.issue(request)

    async def sign_crl(self, *args, **kwargs):
        return await self._real.sign_crl(*args, **kwargs)

    async def revoke(self, *args, **kwargs):
        return await self._real.revoke(*args, **kwargs)

    async def health(self):
        return await self._real.health()


async def test_an_unexpected_failure_is_a_500_that_leaks_nothing_and_is_audited(tmp_path: Path, pg_url: str) -> None:
    from ca.files import load_local_signer
    from tests.support.harness import PASSPHRASE, write_ca

    (tmp_path / "state").mkdir(mode=0o700)
    write_ca(tmp_path / "state")
    signer = _BrokenSigner(load_local_signer(tmp_path / "state" / "ca", passphrase=PASSPHRASE.encode()))
    async with running_issuer(tmp_path, pg_url, signer=signer) as h:
        token = await h.token(name="unlucky")
        _, csr = new_csr()
        status, body = await h.post("/v1/issue/token", {"csr": csr, "token": token})
        assert (status, body["code"]) == (500, "internal_error")
        assert "backend" not in body["detail"]
        assert await h.certificates() == []
        (row,) = await h.attestations()
        assert (row.outcome, row.code, row.principal) == ("failure", "internal_error", "unlucky")
        assert "signing backend unavailable" in (row.reason or "")
        # Nothing was consumed: the token still works once the signer does.
        signer.broken = False
        status, _ = await h.post("/v1/issue/token", {"csr": csr, "token": token})
        assert status == 201


async def test_a_token_revoked_while_its_certificate_is_signed_gets_no_certificate(tmp_path: Path, pg_url: str) -> None:
    """The token is read before signing and consumed by the statement that records the certificate:
    revoked in between, the claim matches nothing, nothing is written, and the refusal says revoked."""
    signer = ScriptedSigner.for_state(tmp_path)
    async with running_issuer(tmp_path, pg_url, signer=signer) as h:
        token = await h.token(name="raced")

        async def revoke_meanwhile(n: int) -> None:
            assert await admin.revoke_token(h.service.sessions, name="raced", now=datetime.now(UTC)) == 1

        signer.before_issue = revoke_meanwhile
        status, body = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": token})
        assert (status, body["code"]) == (401, "token_revoked"), body
        assert signer.arrived == 1  # it was signed, then discarded
        assert await h.certificates() == []
        (audit,) = await h.attestations()
        assert (audit.outcome, audit.code, audit.principal) == ("failure", "token_revoked", "raced")
        (row,) = await admin.list_tokens(h.service.sessions, include_used=True)
        assert row.used_at is None and row.revoked_at is not None and row.certificate_serial is None
