"""The deny list: a denied identity cannot attest (IAM, EC2, token), renew or bootstrap again.

IAM against moto's STS with signature checking on, denials made through the admin API by a signed-in
operator; EC2 with real AWS-shaped documents signed by a stand-in key pinned for one region;
``until`` with the app's clock moved forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from issuer.attest.ec2_certs import AwsCertStore
from issuer.service.revocation import deny
from issuer.store.models import Attestation
from tests.integration.test_admin_api import SERVER_ID, config
from tests.integration.test_revocation import EC2_CONFIG, Clock, get_revoked
from tests.integration.test_revocation_instance import INSTANCE
from tests.integration.test_revocation_renew import CONFIG as RENEW_CONFIG
from tests.integration.test_revocation_renew import bootstrap, renew
from tests.support.admin_client import call
from tests.support.fake_aws_iid import FakeAwsSigner, build_document, sign
from tests.support.harness import Harness, new_csr, running_issuer
from tests.support.moto_iam import AwsKey
from tests.support.moto_operators import Operators, moto_operators
from tests.support.sts_signing import sign_get_caller_identity
from tests.support.x509_check import csr_sha256

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def ops() -> Iterator[Operators]:
    with moto_operators() as made:
        yield made


async def attest_iam(h: Harness, key: AwsKey) -> tuple[int, dict[str, Any]]:
    _, csr = new_csr()
    signed = sign_get_caller_identity(
        access_key_id=key.access_key_id,
        secret_access_key=key.secret_access_key,
        session_token=key.session_token,
        now=datetime.now(UTC),
        host="sts.us-east-1.amazonaws.com",
        server_id=SERVER_ID,
        csr_sha256_hex=csr_sha256(csr),
    )
    return await h.post("/v1/issue/aws-iam", {"csr": csr, "role": "builders", "sts_request": signed.sts_request()})


def denied(status: int, body: dict[str, Any]) -> None:
    assert (status, body.get("code")) == (403, "identity_denied"), body
    assert "deny list" in body["detail"] and "#" not in body["detail"]  # which denial: the audit row only


async def refusal_rows(h: Harness, code: str = "identity_denied") -> list[Attestation]:
    return [a for a in await h.attestations() if a.code == code]


async def test_a_denied_iam_principal_cannot_attest_until_removed(tmp_path: Path, db_url: str, ops: Operators) -> None:
    async with running_issuer(tmp_path, db_url, config=config(ops)) as h:
        status, body = await attest_iam(h, ops.bob)
        assert status == 201, body

        pattern = f"arn:aws:iam::{ops.account_id}:user/b*"
        status, made, _ = await call(
            h, ops.alice, "POST", "/v1/admin/denials", {"principal": pattern, "reason": "leaked"}
        )
        assert status == 200, made
        assert made["denial"]["in_force"] and made["denial"]["created_by"] == ops.arn("alice")

        denied(*await attest_iam(h, ops.bob))
        (row,) = await refusal_rows(h)
        assert (row.method, row.outcome, row.principal) == ("aws-iam", "failure", ops.arn("bob"))
        assert f"denial #{made['denial']['id']}" in (row.reason or "") and "leaked" in (row.reason or "")
        assert len(await h.certificates()) == 1  # only the one from before
        # Someone the pattern does not cover is not affected.
        status, body = await attest_iam(h, ops.mallory)
        assert status == 201, body

        status, listed, _ = await call(h, ops.bob, "GET", "/v1/admin/denials")
        assert [d["value"] for d in listed["denials"]] == [pattern]
        status, removed, _ = await call(h, ops.alice, "POST", f"/v1/admin/denials/{made['denial']['id']}/remove", {})
        assert status == 200 and removed["denial"]["in_force"] is False, removed
        status, body = await attest_iam(h, ops.bob)
        assert status == 201, body

        actions = [(a.action, a.actor, a.outcome) for a in await h.attestations() if a.method == "admin"]
        assert actions == [
            ("deny.add", ops.arn("alice"), "success"),
            ("deny.list", ops.arn("bob"), "success"),
            ("deny.remove", ops.arn("alice"), "success"),
        ]


async def test_deny_with_revoke_revokes_what_it_holds(tmp_path: Path, pg_url: str, ops: Operators) -> None:
    admins = f"""
[[admins]]
principals = ["arn:aws:iam::{ops.account_id}:user/alice"]
permissions = ["deny", "revoke"]

[[admins]]
principals = ["arn:aws:iam::{ops.account_id}:user/mallory"]
permissions = ["deny"]
"""
    async with running_issuer(tmp_path, pg_url, config=config(ops, admins=admins)) as h:
        issued = [await attest_iam(h, ops.bob) for _ in range(2)]
        bystander = await attest_iam(h, ops.mallory)
        assert all(status == 201 for status, _ in [*issued, bystander])
        target = {"principal": ops.arn("bob"), "reason": "offboarded", "revoke": True}

        # Denying alone is mallory's to do; revoking as well needs 'revoke' too.
        status, body, _ = await call(h, ops.mallory, "POST", "/v1/admin/denials", target)
        assert (status, body["code"]) == (403, "permission_denied") and "'revoke'" in body["detail"], body
        assert await deny.list_denials(h.service.sessions, now=datetime.now(UTC), include_inactive=True) == []

        status, made, _ = await call(h, ops.alice, "POST", "/v1/admin/denials", target)
        assert status == 200, made
        serials = sorted(body["serial"] for _, body in issued)
        assert sorted(c["serial"] for c in made["revoked"]) == serials
        listed = set((await get_revoked(h))["serials"])
        assert listed == set(serials)
        statuses = {c.serial: c.status for c in await h.certificates()}
        assert statuses[bystander[1]["serial"]] == "active"
        assert {statuses[s] for s in serials} == {"revoked"}
        revoke_rows = [a for a in await h.attestations() if a.method == "revoke"]
        assert sorted(r.certificate_serial for r in revoke_rows) == serials
        assert all(ops.arn("alice") in (r.reason or "") for r in revoke_rows)


async def test_a_denied_instance_and_a_denied_account(tmp_path: Path, pg_url: str) -> None:
    aws = FakeAwsSigner.create(kind="rsa2048")
    certs = AwsCertStore.builtin(extra={"eu-west-1": [aws.cert]})

    def request(*, account: str = "123456789012", instance: str = INSTANCE, nonce: str | None = None) -> dict[str, str]:
        raw = build_document(account_id=account, instance_id=instance)
        body = {"csr": new_csr()[1], "document": raw.decode(), "rsa2048": sign(raw, aws, "rsa2048")}
        return body | ({"nonce": nonce} if nonce else {})

    async with running_issuer(tmp_path, pg_url, config=EC2_CONFIG, aws_certs=certs) as h:
        status, first = await h.post("/v1/issue/aws-ec2", request())
        assert status == 201, first
        now = datetime.now(UTC)
        spec = deny.parse_denial(kind="instance", value=INSTANCE, reason="forensics", until=None, now=now)
        record = await deny.add(h.service.sessions, spec, actor="test", request_id="t-1", now=now)

        denied(*await h.post("/v1/issue/aws-ec2", request(nonce=first["nonce"])))
        status, other = await h.post("/v1/issue/aws-ec2", request(instance="i-0fedcba9876543210"))
        assert status == 201, other
        # The refusal changed nothing: once lifted, the nonce the instance holds still works.
        await deny.remove(h.service.sessions, record.id, actor="test", now=datetime.now(UTC))
        status, again = await h.post("/v1/issue/aws-ec2", request(nonce=first["nonce"]))
        assert status == 201, again

        spec = deny.parse_denial(kind="account", value="123456789012", reason="closed", until=None, now=now)
        await deny.add(h.service.sessions, spec, actor="test", request_id="t-2", now=now)
        denied(*await h.post("/v1/issue/aws-ec2", request(nonce=first["nonce"])))
        status, elsewhere = await h.post(
            "/v1/issue/aws-ec2", request(account="210987654321", instance="i-0aaaaaaaaaaaaaaaa")
        )
        assert status == 201, elsewhere
        assert [r.principal for r in await refusal_rows(h)] == [INSTANCE, INSTANCE]


async def test_until_passes_and_a_refused_token_is_not_used_up(tmp_path: Path, db_url: str) -> None:
    clock = Clock()
    async with running_issuer(tmp_path, db_url, config=EC2_CONFIG, clock=clock) as h:
        token = await h.token(name="box-9", ttl=timedelta(hours=3))
        now = datetime.now(UTC)
        spec = deny.parse_denial(
            kind="principal", value="box-*", reason="audit", until=now + timedelta(hours=1), now=now
        )
        await deny.add(h.service.sessions, spec, actor="test", request_id="t-3", now=now)

        denied(*await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": token}))
        clock.offset = timedelta(hours=1, minutes=1)
        status, body = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": token})
        assert status == 201, body
        assert body["identity"]["principal"] == "box-9"
        in_force = await deny.list_denials(h.service.sessions, now=now + clock.offset, include_inactive=False)
        assert in_force == []


async def test_a_denied_identity_cannot_renew(tmp_path: Path, pg_url: str) -> None:
    async with running_issuer(tmp_path, pg_url, config=RENEW_CONFIG) as h:
        key, certificate, serial = await bootstrap(h, "edge-1")
        now = datetime.now(UTC)
        spec = deny.parse_denial(kind="principal", value="edge-1", reason="stolen", until=None, now=now)
        await deny.add(h.service.sessions, spec, actor="test", request_id="t-4", now=now)
        status, body, _ = await renew(h, key, certificate)
        denied(status, body)
        assert {c.serial: c.status for c in await h.certificates()} == {serial: "active"}  # not superseded
        (row,) = await refusal_rows(h)
        assert (row.method, row.principal) == ("renew", "edge-1")


def test_what_a_denial_covers() -> None:
    iam = {
        "arn": "arn:aws:sts::123456789012:assumed-role/ci/run-42",
        "canonical_arn": "arn:aws:iam::123456789012:role/ci",
    }
    role = "arn:aws:iam::123456789012:role/ci"

    def applies(
        kind: str, value: str, principal: str = role, account: str | None = "123456789012", **attrs: str
    ) -> bool:
        return deny.denial_applies(kind, value, principal=principal, account_id=account, attributes=attrs or iam)

    assert applies("principal", role) and applies("principal", "arn:aws:iam::123456789012:role/*")
    assert applies("principal", "arn:aws:sts::123456789012:assumed-role/ci/run-42")  # one session
    assert not applies("principal", "arn:aws:sts::123456789012:assumed-role/ci/run-43")
    assert not applies("principal", "arn:aws:iam::123456789012:role/cid")
    assert applies("account", "123456789012") and not applies("account", "210987654321")
    assert applies("instance", INSTANCE, principal=INSTANCE, instance_id=INSTANCE)
    assert not applies("instance", INSTANCE, principal="i-0fedcba9876543210", instance_id="i-0fedcba9876543210")
    assert applies("principal", "box-9", principal="box-9", account=None, name="box-9")
    assert not applies("principal", "box-9", principal="box-90", account=None, name="box-90")


@pytest.mark.parametrize(
    ("kind", "value", "reason", "until", "code"),
    [
        ("instance", "i-123", "r", None, "instance_invalid"),
        ("account", "1234", "r", None, "account_invalid"),
        ("principal", "has space", "r", None, "principal_invalid"),
        ("principal", "*" * 9, "r", None, "principal_invalid"),
        ("principal", "x", "  ", None, "reason_missing"),
        ("principal", "x", "r", NOW - timedelta(seconds=1), "until_in_past"),
        ("user", "x", "r", None, "denial_kind_invalid"),
    ],
)
def test_a_denial_is_checked_before_it_is_stored(
    kind: str, value: str, reason: str, until: datetime | None, code: str
) -> None:
    from issuer.errors import ClientError

    with pytest.raises(ClientError) as caught:
        deny.parse_denial(kind=kind, value=value, reason=reason, until=until, now=NOW)
    assert caught.value.code == code
