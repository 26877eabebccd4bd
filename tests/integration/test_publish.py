"""Publishing the truststore to S3: moto's S3 server (with versioning) as the peer, the real app on Postgres.

boto3 is pointed at moto the way an operator points it anywhere: ``AWS_ENDPOINT_URL`` in the
environment. The published object must be byte for byte what ``GET /v1/truststore`` serves,
and a leaf must verify against it alone with ``openssl verify`` (no ``-untrusted``), as API
Gateway verifies it. The API Gateway step is in test_publish_apigateway.py (Stubber); the
command line in test_publish_cli.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from issuer.aws.s3 import S3Location, S3Objects, s3_client
from issuer.errors import Conflict, NotFound, UpstreamUnavailable
from issuer.service.ca.publish import (
    PublishResult,
    TruststoreRejected,
    VersioningRequired,
    publish_pem,
    publish_truststore,
)
from issuer.service.ca.registry import export_truststore
from tests.support.ca_registry import prepare_file_issuer
from tests.support.harness import PASSPHRASE, Harness, new_csr, running_issuer
from tests.support.moto_server import MotoServer, fake_aws_credentials, free_port, moto_server
from tests.support.x509_check import openssl_verify

REGION = "eu-west-1"
BUCKET = "issuer-truststores"
TARGET = S3Location(BUCKET, "api/truststore.pem")
CONFIG = """
[issuer]
trust_domain = "test.example"
registry_refresh = "1s"

[[roles]]
name = "onprem"
methods = ["token"]
"""


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture
def aws(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    return versioned_bucket(moto, monkeypatch)


def versioned_bucket(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh moto with a versioned bucket; boto3 finds moto through AWS_ENDPOINT_URL. Returns an S3 client."""
    moto.reset()
    fake_aws_credentials(monkeypatch, region=REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return s3


def versions(s3: Any, location: S3Location = TARGET) -> list[str]:
    listed = s3.list_object_versions(Bucket=location.bucket, Prefix=location.key).get("Versions", [])
    return [v["VersionId"] for v in listed if v["Key"] == location.key]


def read(s3: Any, location: S3Location = TARGET, version: str | None = None) -> dict[str, Any]:
    extra = {"VersionId": version} if version else {}
    reply = s3.get_object(Bucket=location.bucket, Key=location.key, **extra)
    return {**reply, "body": reply["Body"].read()}


async def served_truststore(h: Harness) -> bytes:
    resp = await h.client.get("/v1/truststore")
    assert resp.status == 200
    return await resp.read()


async def publish(h: Harness, lines: list[str] | None = None, **kwargs: Any) -> PublishResult:
    progress = lines.append if lines is not None else None
    return await publish_truststore(h.service.sessions, TARGET, now=datetime.now(UTC), progress=progress, **kwargs)


async def issue_leaf(h: Harness, name: str) -> bytes:
    status, body = await h.post("/v1/issue/token", {"csr": new_csr()[1], "token": await h.token(name=name)})
    assert status == 201, body
    return str(body["certificate"]).encode()


async def test_first_publish_makes_version_1_an_unchanged_one_none_and_a_new_issuer_a_new_version(
    tmp_path: Path, pg_url: str, aws: Any
) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        lines: list[str] = []
        first = await publish(h, lines)
        assert first.truststore.changed and first.truststore.previous_version_id is None
        assert versions(aws) == [first.truststore.version_id]
        stored = read(aws)
        served = await served_truststore(h)
        assert stored["body"] == served
        assert stored["VersionId"] == first.truststore.version_id
        assert stored["Metadata"] == {"sha256": hashlib.sha256(served).hexdigest()}
        assert stored["ContentType"] == "application/x-pem-file"
        assert first.certificates == 2 and first.problems == ()
        assert any("Uploading s3://issuer-truststores/api/truststore.pem" in line for line in lines)
        # API Gateway's check: the leaf alone against the published file.
        openssl_verify(await issue_leaf(h, "m1"), b"", stored["body"])

        lines.clear()
        again = await publish(h, lines)
        assert not again.truststore.changed
        assert again.truststore.version_id == first.truststore.version_id
        assert versions(aws) == [first.truststore.version_id]
        assert any("unchanged" in line and "nothing to upload" in line for line in lines)

        await prepare_file_issuer(
            h.service.sessions,
            ca_dir=h.settings.ca_dir,
            passphrase=PASSPHRASE.encode(),
            now=datetime.now(UTC),
            validity=timedelta(days=30),
            common_name="Issuer Issuing CA 2",
        )
        rotated = await publish(h)
        assert rotated.truststore.changed and rotated.certificates == 3
        assert rotated.truststore.previous_version_id == first.truststore.version_id
        assert rotated.truststore.version_id not in (None, first.truststore.version_id)
        assert sorted(versions(aws)) == sorted([first.truststore.version_id, rotated.truststore.version_id])
        # The old version is still there for the domain that pins it.
        assert read(aws, version=first.truststore.version_id)["body"] == stored["body"]

        async def served_equals_published() -> None:
            assert await served_truststore(h) == read(aws)["body"]

        await eventually(served_equals_published)  # the app follows the registry within a refresh
        subjects = [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(read(aws)["body"])]
        assert "CN=Issuer Issuing CA 2" in subjects


async def eventually(check: Any, *, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            await check()
            return
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_a_dry_run_reads_and_says_what_would_change_but_writes_nothing(
    tmp_path: Path, pg_url: str, aws: Any
) -> None:
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        lines: list[str] = []
        dry = await publish(h, lines, dry_run=True)
        assert dry.dry_run and dry.truststore.changed and dry.truststore.version_id is None
        assert versions(aws) == []
        assert any("would upload a new version" in line for line in lines)
        real = await publish(h)
        dry_again = await publish(h, dry_run=True)
        assert not dry_again.truststore.changed and dry_again.truststore.version_id == real.truststore.version_id
        assert versions(aws) == [real.truststore.version_id]


@pytest.mark.parametrize("state", ["never", "suspended"])
async def test_a_bucket_without_versioning_is_refused_and_nothing_is_written(
    tmp_path: Path, pg_url: str, aws: Any, state: str
) -> None:
    bucket = "unversioned-truststores"
    aws.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    if state == "suspended":
        aws.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        with pytest.raises(VersioningRequired) as refused:
            await publish_truststore(h.service.sessions, S3Location(bucket, "t.pem"), now=datetime.now(UTC))
    assert refused.value.code == "s3_versioning_disabled"
    detail = refused.value.detail
    assert f"bucket {bucket}" in detail and "put-bucket-versioning" in detail and "\n" not in detail
    assert ("never had versioning" if state == "never" else "suspended") in detail
    assert aws.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def weak_ca_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Weak Root")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_a_truststore_breaking_a_rule_is_refused_naming_the_certificate_before_any_aws_call(aws: Any) -> None:
    lines: list[str] = []
    with pytest.raises(TruststoreRejected) as refused:
        publish_pem(weak_ca_pem(), TARGET, s3=S3Objects(s3_client()), now=datetime.now(UTC), progress=lines.append)
    assert refused.value.code == "truststore_invalid"
    assert "'CN=Weak Root'" in refused.value.detail and "RSA-1024" in refused.value.detail
    assert "nothing was published" in refused.value.detail and "\n" not in refused.value.detail
    assert [p.code for p in refused.value.problems] == ["key_unsupported"]
    assert any(line.startswith("  error: certificate #1 'CN=Weak Root'") for line in lines)
    assert not any("versioned" in line for line in lines)  # no AWS step was reached
    assert versions(aws) == []


async def test_the_revocation_list_is_published_beside_the_truststore_only_when_it_changes(
    tmp_path: Path, pg_url: str, aws: Any
) -> None:
    document = json.dumps({"version": 1, "generated_at": "2031-01-01T00:00:00+00:00", "serials": []}).encode()
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        first = await publish(h, revoked=document)
        assert first.revoked is not None and first.revoked.changed
        beside = S3Location(BUCKET, "api/revoked.json")
        assert first.revoked.uri == beside.uri
        stored = read(aws, beside)
        assert stored["body"] == document and stored["ContentType"] == "application/json"
        again = await publish(h, revoked=document)
        assert again.revoked is not None and not again.revoked.changed
        assert versions(aws, beside) == [first.revoked.version_id]
        elsewhere = await publish(h, revoked=document, revoked_key="lists/revoked-v1.json")
        assert elsewhere.revoked is not None and elsewhere.revoked.uri == f"s3://{BUCKET}/lists/revoked-v1.json"


async def test_an_object_written_before_versioning_is_uploaded_again_to_get_a_version_id(
    tmp_path: Path, pg_url: str, aws: Any
) -> None:
    bucket = "late-versioning"
    aws.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        pem = await export_truststore(h.service.sessions, now=datetime.now(UTC))
        aws.put_object(Bucket=bucket, Key="t.pem", Body=pem)  # by hand, unversioned
        aws.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        result = await publish_truststore(h.service.sessions, S3Location(bucket, "t.pem"), now=datetime.now(UTC))
    assert result.truststore.changed and result.truststore.version_id not in (None, "null")
    assert read(aws, S3Location(bucket, "t.pem"))["VersionId"] == result.truststore.version_id


def test_a_missing_bucket_is_one_line_naming_it(aws: Any) -> None:
    with pytest.raises(NotFound) as missing:
        S3Objects(s3_client()).versioning("no-such-bucket-here")
    assert missing.value.code == "s3_bucket_not_found"
    assert missing.value.detail.startswith("s3:GetBucketVersioning on bucket no-such-bucket-here: NoSuchBucket")
    assert "check the bucket name" in missing.value.detail


def test_a_writer_that_came_first_is_not_overwritten(aws: Any) -> None:
    objects = S3Objects(s3_client())
    assert objects.current(TARGET, max_bytes=10_000) is None
    aws.put_object(Bucket=BUCKET, Key=TARGET.key, Body=b"someone else")
    with pytest.raises(Conflict) as raced:
        objects.put(TARGET, b"ours", content_type="application/x-pem-file", replacing=None)
    assert raced.value.code == "s3_changed_concurrently"
    seen = objects.current(TARGET, max_bytes=10_000)
    assert seen is not None
    aws.put_object(Bucket=BUCKET, Key=TARGET.key, Body=b"someone else again")
    with pytest.raises(Conflict):
        objects.put(TARGET, b"ours", content_type="application/x-pem-file", replacing=seen)
    assert read(aws)["body"] == b"someone else again"
    latest = objects.current(TARGET, max_bytes=10_000)
    assert objects.put(TARGET, b"ours", content_type="application/x-pem-file", replacing=latest)
    assert read(aws)["body"] == b"ours"


def test_an_unreachable_endpoint_is_one_line_naming_the_setting(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(UpstreamUnavailable) as unreachable:
        S3Objects(s3_client()).versioning(BUCKET)
    assert unreachable.value.code == "aws_unavailable"
    assert "cannot reach AWS" in unreachable.value.detail and "AWS_ENDPOINT_URL" in unreachable.value.detail
