"""``issuer truststore publish`` as an operator runs it: a real process, ISSUER_* settings, a real Postgres,
and moto's S3 server reached through ``AWS_ENDPOINT_URL`` — the standard botocore setting, no flag of ours.

The API Gateway step cannot run against moto (no domain-name calls); it is tested in-process
with botocore's Stubber in test_publish_apigateway.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.integration.test_publish import BUCKET, REGION, versioned_bucket
from tests.support.harness import PASSPHRASE, running_issuer
from tests.support.moto_server import MotoServer, moto_server

ISSUER = [sys.executable, "-m", "issuer.cli"]
TARGET = f"s3://{BUCKET}/api/truststore.pem"
CONFIG = """
[issuer]
trust_domain = "test.example"

[[roles]]
name = "onprem"
methods = ["token"]
"""


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture
def env(tmp_path: Path, pg_url: str, moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The command's environment: ISSUER_* settings and AWS pointed at moto, nothing from the developer's shell."""
    versioned_bucket(moto, monkeypatch)  # sets the fake credentials and AWS_ENDPOINT_URL in os.environ too
    (tmp_path / "issuer.toml").write_text(CONFIG)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ISSUER_", "AWS_"))}
    environ = {
        **base,
        "ISSUER_CONFIG": str(tmp_path / "issuer.toml"),
        "ISSUER_STATE_DIR": str(tmp_path / "state"),
        "ISSUER_DATABASE_URL": pg_url,
        "ISSUER_CA_PASSPHRASE": PASSPHRASE,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": moto.url,
    }
    created = issuer("ca", "init", env=environ)
    assert created.returncode == 0, created.stderr
    return environ


def issuer(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ISSUER, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("issuer: error: ") and "Traceback" not in result.stderr
    return lines[0]


def s3() -> Any:
    return boto3.client("s3")  # the test process's environment points at moto too


def current(key: str = "api/truststore.pem") -> dict[str, Any]:
    reply = s3().get_object(Bucket=BUCKET, Key=key)
    return {**reply, "body": reply["Body"].read()}


async def test_publish_uploads_once_prints_the_version_and_matches_what_the_service_serves(
    tmp_path: Path, env: dict[str, str]
) -> None:
    first = issuer("truststore", "publish", TARGET, env=env)
    assert first.returncode == 0, first.stderr
    stored = current()
    version = stored["VersionId"]
    assert f"Truststore {TARGET}: version {version} (new; 2 certificate(s)" in first.stdout
    assert "Checking that bucket issuer-truststores is versioned" in first.stdout  # progress, step by step
    assert f"Uploading {TARGET}" in first.stdout
    exported = issuer("truststore", "export", env=env)
    assert stored["body"] == exported.stdout.encode()
    async with running_issuer(tmp_path, env["ISSUER_DATABASE_URL"], config=CONFIG) as h:
        served = await (await h.client.get("/v1/truststore")).read()
        revoked_served = await (await h.client.get("/v1/revoked")).read()
    assert stored["body"] == served

    again = issuer("truststore", "publish", TARGET, "--json", "--revoked-key", "revoked.json", env=env)
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)  # stdout is the JSON alone; progress went to stderr
    assert result["truststore"]["changed"] is False and result["truststore"]["version_id"] == version
    assert result["truststore"]["sha256"] == hashlib.sha256(served).hexdigest()
    assert "nothing to upload" in again.stderr
    assert result["revoked"]["uri"] == f"s3://{BUCKET}/api/revoked.json"
    assert current("api/revoked.json")["body"] == revoked_served  # what GET /v1/revoked serves
    listed = s3().list_object_versions(Bucket=BUCKET, Prefix="api/truststore.pem")["Versions"]
    assert [v["VersionId"] for v in listed] == [version]

    dry = issuer("truststore", "publish", TARGET, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"version {version} (unchanged" in dry.stdout


def test_an_unversioned_bucket_is_a_one_line_error(env: dict[str, str]) -> None:
    s3().create_bucket(Bucket="plain-bucket", CreateBucketConfiguration={"LocationConstraint": REGION})
    line = one_line_error(issuer("truststore", "publish", "s3://plain-bucket/truststore.pem", env=env))
    assert "bucket plain-bucket never had versioning enabled" in line and "put-bucket-versioning" in line
    assert s3().list_objects_v2(Bucket="plain-bucket").get("KeyCount", 0) == 0


def test_a_missing_bucket_is_a_one_line_error(env: dict[str, str]) -> None:
    line = one_line_error(issuer("truststore", "publish", "s3://no-such-bucket-here/t.pem", env=env))
    assert "no-such-bucket-here" in line and "NoSuchBucket" in line and "check the bucket name" in line


def test_usage_mistakes_exit_2(env: dict[str, str]) -> None:
    half = issuer("truststore", "publish", TARGET, "--domain", "api.example.com", env=env)
    assert half.returncode == 2 and "--domain and --api go together" in one_line_error(half)
    bad = issuer("truststore", "publish", "https://example.com/t.pem", env=env)
    assert bad.returncode == 2 and "is not an s3://BUCKET/KEY URI" in bad.stderr


def test_an_unknown_aws_profile_is_a_one_line_error(env: dict[str, str]) -> None:
    line = one_line_error(issuer("truststore", "publish", TARGET, env={**env, "AWS_PROFILE": "no-such-profile"}))
    assert "s3 client" in line and "no-such-profile" in line
