"""The admin API signed in with IAM, against moto's STS with signature checking on.

Operators are moto IAM users and an SSO-style role session (``tests/support/moto_operators.py``);
their proofs are signed by botocore. Every refusal is checked for its status, its stable code,
and its audit row naming who asked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from issuer.store.models import Attestation
from tests.support.admin_client import admin_proof, call, encode_proof
from tests.support.harness import Harness, new_csr, running_issuer
from tests.support.moto_operators import SSO_ROLE, Operators, moto_operators
from tests.support.sts_signing import sign_get_caller_identity
from tests.support.x509_check import csr_sha256

SERVER_ID = "issuer.test.example"


def config(ops: Operators, *, admins: str | None = None) -> str:
    account = ops.account_id
    admins = (
        admins
        if admins is not None
        else f"""
[[admins]]
name = "platform"
principals = ["arn:aws:iam::{account}:user/alice", "arn:aws:iam::{account}:role/AWSReservedSSO_Admins_*"]
permissions = ["read", "tokens", "revoke", "deny", "audit"]

[[admins]]
name = "auditors"
principals = ["arn:aws:iam::{account}:user/bob"]
permissions = ["read"]
"""
    )
    return f"""
[issuer]
trust_domain = "test.example"
server_id = "{SERVER_ID}"

[aws.sts]
endpoint_overrides = {{ "sts.us-east-1.amazonaws.com" = "{ops.url}", "sts.amazonaws.com" = "{ops.url}" }}

[[roles]]
name = "onprem"
methods = ["token"]

[[roles]]
name = "builders"
methods = ["aws-iam"]
account_ids = ["{account}"]
principal_arns = ["arn:aws:iam::{account}:user/*"]
{admins}
"""


@pytest.fixture(scope="module")
def ops() -> Iterator[Operators]:
    with moto_operators() as made:
        yield made


async def audit_rows(h: Harness, request_id: str) -> list[Attestation]:
    async with h.service.sessions() as session:
        rows = await session.scalars(select(Attestation).where(Attestation.request_id == request_id))
        return list(rows)


async def refused(h: Harness, status: int, body: dict[str, Any], expected: tuple[int, str]) -> Attestation:
    """Assert a problem+json refusal and its one audit row (method admin, outcome failure)."""
    assert (status, body.get("code")) == expected, body
    assert body["status"] == status and body["detail"] and body["type"].endswith(body["code"])
    (row,) = await audit_rows(h, body["request_id"])
    assert (row.method, row.outcome, row.code) == ("admin", "failure", expected[1])
    return row


# --- accepted -------------------------------------------------------------------------------------


async def test_an_operator_with_tokens_creates_a_token_and_it_works(
    tmp_path: Path, db_url: str, ops: Operators
) -> None:
    async with running_issuer(tmp_path, db_url, config=config(ops)) as h:
        status, body, _ = await call(h, ops.alice, "POST", "/v1/admin/tokens", {"role": "onprem", "name": "db-7"})
        assert status == 200, body
        assert body["token"].startswith("ijt_") and body["name"] == "db-7" and body["role"] == "onprem"

        # The token is a real one: a machine redeems it.
        status, issued = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": body["token"]})
        assert status == 201, issued

        (row,) = [a for a in await h.attestations() if a.action == "token.create"]
        assert (row.method, row.outcome, row.actor, row.principal) == ("admin", "success", ops.arn("alice"), "db-7")
        assert row.arguments == {"role": "onprem", "name": "db-7"}
        assert body["token"] not in json.dumps(row.arguments) + (row.reason or "")


async def test_an_sso_role_session_signs_in_as_its_session(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops)) as h:
        status, me, _ = await call(h, ops.sso, "GET", "/v1/admin/whoami")
        assert status == 200, me
        assert me["actor"] == ops.sso_session_arn
        assert me["canonical_arn"] == ops.sso_role_arn
        assert me["permissions"] == sorted(["read", "tokens", "revoke", "deny", "audit"])
        assert SSO_ROLE in me["actor"] and me["actor"].endswith("/alice@example.com")
        (row,) = await audit_rows(h, me_request_id := (await h.attestations())[-1].request_id)
        assert (row.action, row.actor, me_request_id) == ("whoami", ops.sso_session_arn, row.request_id)


async def test_reads_go_through_with_read_and_are_recorded(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops)) as h:
        await h.token(name="box-1")
        status, body, _ = await call(h, ops.bob, "GET", "/v1/admin/tokens?all=true")
        assert status == 200, body
        assert [t["name"] for t in body["tokens"]] == ["box-1"]
        rows = [a for a in await h.attestations() if a.method == "admin"]
        assert [(r.action, r.actor, r.outcome) for r in rows] == [("token.list", ops.arn("bob"), "success")]
        assert rows[0].arguments == {"all": "true"}


# --- refused --------------------------------------------------------------------------------------


async def test_a_principal_without_the_permission_is_told_which(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops)) as h:
        status, body, _ = await call(h, ops.bob, "POST", "/v1/admin/tokens", {"role": "onprem", "name": "x"})
        row = await refused(h, status, body, (403, "permission_denied"))
        assert "'tokens'" in body["detail"] and "read" in body["detail"]
        assert (row.actor, row.action) == (ops.arn("bob"), "token.create")
        assert await h.token(name="probe")  # nothing else changed: only the probe token exists
        tokens = [a for a in await h.attestations() if a.action == "token.create" and a.outcome == "success"]
        assert tokens == []


async def test_an_unlisted_principal_is_not_an_admin(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops)) as h:
        status, body, _ = await call(h, ops.mallory, "GET", "/v1/admin/whoami")
        row = await refused(h, status, body, (403, "not_an_admin"))
        assert row.actor == ops.arn("mallory")


async def test_a_replayed_proof_is_refused(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops)) as h:
        status, body, proof = await call(h, ops.alice, "GET", "/v1/admin/certificates")
        assert status == 200, body
        status, body, _ = await call(h, None, "GET", "/v1/admin/certificates", proof=proof)
        await refused(h, status, body, (401, "admin_proof_replayed"))


async def test_a_proof_is_bound_to_its_request(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops)) as h:
        made_for = {"role": "onprem", "name": "innocent"}
        signed = admin_proof(ops.alice, method="POST", target="/v1/admin/tokens", body=json.dumps(made_for).encode())
        # Another body, another path, another method, another query: each refused before STS.
        for method, target, body in (
            ("POST", "/v1/admin/tokens", {"role": "onprem", "name": "attacker"}),
            ("POST", "/v1/admin/tokens/revoke", made_for),
            ("GET", "/v1/admin/tokens", None),
        ):
            status, answer, _ = await call(h, None, method, target, body, proof=encode_proof(signed))
            await refused(h, status, answer, (401, "admin_proof_request_mismatch"))
        list_proof = admin_proof(ops.alice, method="GET", target="/v1/admin/certificates?limit=5")
        status, answer, _ = await call(
            h, None, "GET", "/v1/admin/certificates?limit=500", proof=encode_proof(list_proof)
        )
        await refused(h, status, answer, (401, "admin_proof_request_mismatch"))
        # Not burnt by the refusals (they were refused before the burn): the request it was made for works.
        status, answer, _ = await call(h, None, "POST", "/v1/admin/tokens", made_for, proof=encode_proof(signed))
        assert status == 200, answer


async def test_a_machines_attestation_proof_is_not_an_operators(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops)) as h:
        # What a machine sends to /v1/issue/aws-iam: signed for this server, bound to a CSR, no purpose.
        machine = sign_get_caller_identity(
            access_key_id=ops.alice.access_key_id,
            secret_access_key=ops.alice.secret_access_key,
            now=datetime.now(UTC),
            host="sts.us-east-1.amazonaws.com",
            server_id=SERVER_ID,
            csr_sha256_hex=csr_sha256(new_csr()[1]),
        )
        status, body, _ = await call(h, None, "GET", "/v1/admin/whoami", proof=encode_proof(machine))
        await refused(h, status, body, (401, "admin_proof_purpose"))
        # Even one that also signs the request digest but not the purpose.
        no_purpose = admin_proof(ops.alice, method="GET", target="/v1/admin/whoami", purpose=None)
        status, body, _ = await call(h, None, "GET", "/v1/admin/whoami", proof=encode_proof(no_purpose))
        await refused(h, status, body, (401, "admin_proof_purpose"))


async def test_an_operators_proof_is_not_a_machines(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops)) as h:
        _, csr = new_csr()
        signed = sign_get_caller_identity(
            access_key_id=ops.alice.access_key_id,
            secret_access_key=ops.alice.secret_access_key,
            now=datetime.now(UTC),
            host="sts.us-east-1.amazonaws.com",
            server_id=SERVER_ID,
            csr_sha256_hex=csr_sha256(csr),
            extra_headers={"X-Issuer-Purpose": "admin"},
        )
        status, body = await h.post(
            "/v1/issue/aws-iam", {"csr": csr, "role": "builders", "sts_request": signed.sts_request()}
        )
        assert (status, body["code"]) == (401, "sts_purpose_not_allowed"), body
        # The same request without the purpose header is a machine's, and STS vouches for it.
        plain = sign_get_caller_identity(
            access_key_id=ops.alice.access_key_id,
            secret_access_key=ops.alice.secret_access_key,
            now=datetime.now(UTC),
            host="sts.us-east-1.amazonaws.com",
            server_id=SERVER_ID,
            csr_sha256_hex=csr_sha256(csr),
        )
        status, body = await h.post(
            "/v1/issue/aws-iam", {"csr": csr, "role": "builders", "sts_request": plain.sts_request()}
        )
        assert status == 201, body


async def test_sign_in_refusals(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops)) as h:
        status, body, _ = await call(h, None, "GET", "/v1/admin/whoami")
        await refused(h, status, body, (401, "admin_proof_missing"))
        status, body, _ = await call(h, None, "GET", "/v1/admin/whoami", proof="not base64!")
        await refused(h, status, body, (401, "admin_proof_malformed"))
        stale = admin_proof(
            ops.alice, method="GET", target="/v1/admin/whoami", now=datetime.now(UTC) - timedelta(minutes=6)
        )
        status, body, _ = await call(h, None, "GET", "/v1/admin/whoami", proof=encode_proof(stale))
        await refused(h, status, body, (401, "sts_date_skew"))
        other = admin_proof(ops.alice, method="GET", target="/v1/admin/whoami", server_id="another.example")
        status, body, _ = await call(h, None, "GET", "/v1/admin/whoami", proof=encode_proof(other))
        await refused(h, status, body, (401, "sts_server_id_mismatch"))
        # A proof whose signature STS does not accept (the secret is wrong): STS says no.
        forged = admin_proof(
            type(ops.alice)(ops.alice.access_key_id, "not-the-secret"), method="GET", target="/v1/admin/whoami"
        )
        status, body, _ = await call(h, None, "GET", "/v1/admin/whoami", proof=encode_proof(forged))
        await refused(h, status, body, (401, "sts_rejected"))


async def test_bad_arguments_are_400_with_an_audit_row(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops)) as h:
        cases = [
            ("POST", "/v1/admin/tokens", {"role": "onprem"}, "field_missing"),
            ("POST", "/v1/admin/tokens", {"role": "onprem", "name": "x", "ttl": "soon"}, "field_invalid"),
            ("POST", "/v1/admin/tokens", {"role": "onprem", "name": "x", "colour": "red"}, "field_unknown"),
            ("POST", "/v1/admin/tokens", {"role": "nope", "name": "x"}, "role_unknown"),
            ("GET", "/v1/admin/certificates?limit=999999999999", None, "field_invalid"),
            ("GET", "/v1/admin/certificates?limit=1&limit=2", None, "field_duplicate"),
            ("POST", "/v1/admin/revocations", {"serial": "zz", "reason": "keyCompromise"}, "serial_invalid"),
            ("POST", "/v1/admin/denials", {"account": "12", "reason": "r"}, "account_invalid"),
        ]
        for method, target, body, code in cases:
            status, answer, _ = await call(h, ops.alice, method, target, body)
            row = await refused(h, status, answer, (400, code))
            assert row.actor == ops.arn("alice")
        # A body that is not JSON (but signed as sent): 400, audited.
        raw = b'{"role": "onprem", "name": '
        proof = encode_proof(admin_proof(ops.alice, method="POST", target="/v1/admin/tokens", body=raw))
        resp = await h.client.post(
            "/v1/admin/tokens", data=raw, headers={"Content-Type": "application/json", "X-Issuer-Admin-Proof": proof}
        )
        await refused(h, resp.status, await resp.json(content_type=None), (400, "body_not_json"))


async def test_no_admins_no_admin_api(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops, admins="")) as h:
        for target in ("/v1/admin", "/v1/admin/whoami", "/v1/admin/tokens"):
            resp = await h.client.get(target)
            assert (resp.status, (await resp.json(content_type=None))["code"]) == (404, "not_found")


async def test_hostile_bodies_are_bounded_and_recorded(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops)) as h:
        cases = [
            (b'{"x": "' + b"y" * 70_000 + b'"}', "application/json", (413, "payload_too_large")),
            (b"name=x", "application/x-www-form-urlencoded", (415, "unsupported_media_type")),
            (b"[" * 40 + b"]" * 40, "application/json", (400, "body_not_json")),
            (b"[1]", "application/json", (400, "body_not_object")),
        ]
        for body, media_type, expected in cases:
            signed = encode_proof(admin_proof(ops.alice, method="POST", target="/v1/admin/tokens", body=body))
            resp = await h.client.post(
                "/v1/admin/tokens", data=body, headers={"Content-Type": media_type, "X-Issuer-Admin-Proof": signed}
            )
            answer = await resp.json(content_type=None)
            row = await refused(h, resp.status, answer, expected)
            # Size and media type are refused before sign-in (nothing to sign in for); the rest after.
            assert row.actor == ("unauthenticated" if expected[0] in (413, 415) else ops.arn("alice"))


async def test_how_to_sign_in_is_public(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops)) as h:
        resp = await h.client.get("/v1/admin")
        described = await resp.json()
        assert resp.status == 200 and described["server_id"] == SERVER_ID
        assert described["sign_in"]["proof_header"] == "X-Issuer-Admin-Proof"
        assert described["actions"]["token.create"] == {
            "method": "POST",
            "path": "/v1/admin/tokens",
            "permission": "tokens",
        }
        assert [a for a in await h.attestations()] == []


async def test_every_change_through_the_api_names_its_actor(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops)) as h:
        status, issued = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": await h.token(name="box-1")})
        assert status == 201
        steps = [
            (ops.alice, "POST", "/v1/admin/tokens", {"role": "onprem", "name": "leaky"}, "token.create"),
            (ops.sso, "POST", "/v1/admin/tokens/revoke", {"name": "leaky"}, "token.revoke"),
            (
                ops.alice,
                "POST",
                "/v1/admin/revocations",
                {"serial": issued["serial"], "reason": "keyCompromise"},
                "revoke",
            ),
            (ops.sso, "POST", "/v1/admin/instances/i-0123456789abcdef0/reset", {}, "instances.reset"),
            (ops.alice, "POST", "/v1/admin/denials", {"account": ops.account_id, "reason": "drill"}, "deny.add"),
            (ops.alice, "POST", "/v1/admin/denials/1/remove", {}, "deny.remove"),
        ]
        answers = [await call(h, key, method, target, body) for key, method, target, body, _ in steps]
        assert [status for status, _, _ in answers] == [200, 200, 200, 404, 200, 200], answers
        rows = [a for a in await h.attestations() if a.method == "admin"]
        assert [(r.action, r.actor, r.outcome) for r in rows] == [
            (action, ops.sso_session_arn if key is ops.sso else ops.arn("alice"), "failure" if i == 3 else "success")
            for i, (key, _, _, _, action) in enumerate(steps)
        ]
        assert rows[3].code == "instance_not_found" and rows[3].principal is None
        assert (rows[2].reason or "").startswith("revoked 1 certificate(s) (keyCompromise)")
        assert rows[2].arguments == {"serial": issued["serial"], "reason": "keyCompromise"}
        revoked = [a for a in await h.attestations() if a.method == "revoke"]
        assert [r.certificate_serial for r in revoked] == [issued["serial"]] and ops.arn("alice") in (
            revoked[0].reason or ""
        )


async def test_the_same_request_twice_in_one_second_is_two_proofs(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, pg_url, config=config(ops)) as h:
        at = datetime.now(UTC).replace(microsecond=0)
        # SigV4 times have one-second resolution: without a nonce the second proof is the first one again.
        bare = [admin_proof(ops.alice, method="GET", target="/v1/admin/whoami", now=at, nonce=False) for _ in range(2)]
        assert bare[0].header("Authorization") == bare[1].header("Authorization")
        status, _, _ = await call(h, None, "GET", "/v1/admin/whoami", proof=encode_proof(bare[0]))
        assert status == 200
        status, body, _ = await call(h, None, "GET", "/v1/admin/whoami", proof=encode_proof(bare[1]))
        assert (status, body["code"]) == (401, "admin_proof_replayed")
        # With the nonce the issuer command signs, each is its own proof.
        for _ in range(2):
            signed = admin_proof(ops.alice, method="GET", target="/v1/admin/whoami", now=at)
            status, body, _ = await call(h, None, "GET", "/v1/admin/whoami", proof=encode_proof(signed))
            assert status == 200, body
