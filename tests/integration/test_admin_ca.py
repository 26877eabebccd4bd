"""The CA and the truststore through the admin API: rotate onto a KMS key, activate, retire, publish.

Operators sign in against moto's STS (signatures checked); the issuing key is created in moto's
KMS and the truststore goes to moto's S3 (a versioned bucket). File keys stay local: the API
refuses to rotate onto one or activate one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from ca.kms import KmsSigner
from tests.integration.test_admin_api import config
from tests.integration.test_kms_issuer import alias, issue_token, kms_env, kms_moto
from tests.support.admin_client import call
from tests.support.harness import Harness, check_issued, check_leaf_against_truststore, running_issuer
from tests.support.moto_operators import Operators, moto_operators
from tests.support.moto_server import MotoServer

__all__ = ["kms_env", "kms_moto"]  # fixtures, imported for pytest

BUCKET = "ops-truststores"


@pytest.fixture(scope="module")
def ops() -> Iterator[Operators]:
    with moto_operators() as made:
        yield made


def ca_config(ops: Operators) -> str:
    admins = f"""
[[admins]]
name = "ca-admins"
principals = ["arn:aws:iam::{ops.account_id}:user/alice"]
permissions = ["read", "ca", "publish", "audit"]

[[admins]]
name = "readers"
principals = ["arn:aws:iam::{ops.account_id}:user/bob"]
permissions = ["read"]
"""
    return config(ops, admins=admins).replace('server_id = "', 'registry_refresh = "1s"\nserver_id = "', 1)


async def active_subject(h: Harness) -> str:
    await h.service.registry.refresh()
    return h.service.registry.snapshot.active.certificate.subject.rfc4514_string()


async def test_rotate_activate_retire_through_the_api(
    tmp_path: Path, pg_url: str, ops: Operators, kms_env: MotoServer
) -> None:
    async with running_issuer(tmp_path, pg_url, config=ca_config(ops)) as h:
        before = await issue_token(h, "before")
        old_subject = await active_subject(h)

        status, body, _ = await call(h, ops.bob, "POST", "/v1/admin/ca/rotate", {"create_kms_key": alias("x")})
        assert (status, body["code"]) == (403, "permission_denied") and "'ca'" in body["detail"], body
        status, body, _ = await call(h, ops.alice, "POST", "/v1/admin/ca/rotate", {})
        assert (status, body["code"]) == (400, "file_key_local_only"), body

        status, rotated, _ = await call(
            h, ops.alice, "POST", "/v1/admin/ca/rotate", {"create_kms_key": alias("issuing"), "validity": "90d"}
        )
        assert status == 200, rotated
        new = rotated["issuer"]
        assert new["state"] == "prepared" and new["key_ref"].startswith("kms:arn:aws:kms:")
        assert rotated["created_kms_key"] == new["key_ref"].removeprefix("kms:")

        status, shown, _ = await call(h, ops.bob, "GET", "/v1/admin/ca")
        assert status == 200 and [i["phase"] for i in shown["issuers"]] == ["prepared", "active"], shown

        status, activated, _ = await call(h, ops.alice, "POST", "/v1/admin/ca/activate", {})
        assert status == 200, activated
        assert activated["issuer"]["fingerprint_sha256"] == new["fingerprint_sha256"]
        assert activated["previous"]["subject"] == old_subject
        assert await active_subject(h) == new["subject"]
        assert isinstance(h.service.registry.snapshot.active.signer.inner, KmsSigner)  # type: ignore[attr-defined]
        after = await issue_token(h, "after")
        assert check_issued(after).issuer.rfc4514_string() == new["subject"]
        for leaf in (before, after):
            await check_leaf_against_truststore(h, leaf)

        # Rolling back onto the file key is a local operation.
        old = activated["previous"]["fingerprint_sha256"][:16]
        status, body, _ = await call(h, ops.alice, "POST", "/v1/admin/ca/activate", {"fingerprint": old})
        assert (status, body["code"]) == (400, "file_key_local_only"), body
        assert await active_subject(h) == new["subject"]

        # Retiring needs no key: refused while its leaves live, done with force.
        status, body, _ = await call(h, ops.alice, "POST", "/v1/admin/ca/retire", {"fingerprint": old})
        assert status == 400 and body["code"].startswith("issuer_"), body
        status, retired, _ = await call(
            h, ops.alice, "POST", "/v1/admin/ca/retire", {"fingerprint": old, "force": True}
        )
        assert status == 200 and retired["overridden"], retired

        rows = [(a.action, a.outcome, a.actor) for a in await h.attestations() if a.method == "admin"]
        alice, bob = ops.arn("alice"), ops.arn("bob")
        assert rows == [
            ("ca.rotate", "failure", bob),
            ("ca.rotate", "failure", alice),
            ("ca.rotate", "success", alice),
            ("ca.status", "success", bob),
            ("ca.activate", "success", alice),
            ("ca.activate", "failure", alice),
            ("ca.retire", "failure", alice),
            ("ca.retire", "success", alice),
        ]


async def test_publish_the_truststore_through_the_api(
    tmp_path: Path, pg_url: str, ops: Operators, kms_env: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", kms_env.url)
    s3 = boto3.client("s3", endpoint_url=kms_env.url)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    async with running_issuer(tmp_path, pg_url, config=ca_config(ops)) as h:
        target = {"target": f"s3://{BUCKET}/api/truststore.pem"}
        status, body, _ = await call(h, ops.bob, "POST", "/v1/admin/truststore/publish", target)
        assert (status, body["code"]) == (403, "permission_denied") and "'publish'" in body["detail"]
        status, published, _ = await call(h, ops.alice, "POST", "/v1/admin/truststore/publish", target)
        assert status == 200, published
        assert published["truststore"]["changed"] and published["truststore"]["version_id"]
        assert any("versioned" in line or "version" in line for line in published["progress"])
        stored = s3.get_object(Bucket=BUCKET, Key="api/truststore.pem")["Body"].read()
        assert stored == await (await h.client.get("/v1/truststore")).read()
        # Nothing changed: no new version.
        status, again, _ = await call(h, ops.alice, "POST", "/v1/admin/truststore/publish", target)
        assert status == 200 and again["truststore"]["changed"] is False
        status, body, _ = await call(h, ops.alice, "POST", "/v1/admin/truststore/publish", {"target": "http://x"})
        assert (status, body["code"]) == (400, "field_invalid")
        actions = [(a.action, a.outcome) for a in await h.attestations() if a.method == "admin"]
        assert actions == [("truststore.publish", o) for o in ("failure", "success", "success", "failure")]
