"""``issuer ca rotate | activate | retire --publish s3://BUCKET/KEY`` against moto's S3 (versioned bucket).

rotate publishes the truststore with the new issuer; activate publishes *before* switching and
switches only when S3 already held that truststore — otherwise it refuses in one line, leaves the
issuer prepared, and the same command run again (the publish now a no-op) switches; retire
publishes the truststore without the retired issuer. Real processes, real Postgres.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.integration.test_publish import BUCKET, REGION, versioned_bucket
from tests.support.cli import cli_env, issuer, ok, one_line_error, phases
from tests.support.moto_server import MotoServer, moto_env, moto_server

TARGET = f"s3://{BUCKET}/api/truststore.pem"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture
def aws(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    return versioned_bucket(moto, monkeypatch)


@pytest.fixture
def env(tmp_path: Path, pg_url: str, moto: MotoServer, aws: Any) -> dict[str, str]:
    return cli_env(tmp_path, pg_url, aws=moto_env(region=REGION, AWS_ENDPOINT_URL=moto.url))


def published(aws: Any) -> set[str]:
    body = aws.get_object(Bucket=BUCKET, Key="api/truststore.pem")["Body"].read()
    return {c.fingerprint(hashes.SHA256()).hex() for c in x509.load_pem_x509_certificates(body)}


def versions(aws: Any) -> int:
    return len(aws.list_object_versions(Bucket=BUCKET, Prefix="api/truststore.pem").get("Versions", []))


def test_rotate_activate_retire_with_publish(env: dict[str, str], aws: Any) -> None:
    ok("ca", "init", env=env)
    rotated = ok("ca", "rotate", "--publish", TARGET, env=env)
    assert f"Truststore {TARGET}: new version" in rotated and "3 certificate(s)" in rotated
    assert f"--publish {TARGET}" in rotated  # the next step says to publish on activation too
    ((_, new_fp), (_, old_fp)) = phases(env)
    assert {new_fp, old_fp} <= published(aws) and versions(aws) == 1

    activated = ok("ca", "activate", "--publish", TARGET, env=env)
    assert f"Truststore {TARGET}: unchanged" in activated and "Activated" in activated
    assert versions(aws) == 1
    assert phases(env)[0] == ("active", new_fp)

    retired = ok("ca", "retire", old_fp[:16], "--force", "--publish", TARGET, env=env)
    assert f"Truststore {TARGET}: new version" in retired and "2 certificate(s)" in retired
    assert old_fp not in published(aws) and new_fp in published(aws) and versions(aws) == 2


def test_activate_refuses_until_s3_already_held_the_new_issuer(env: dict[str, str], aws: Any) -> None:
    ok("ca", "init", env=env)
    ok("truststore", "publish", TARGET, env=env)  # API Gateway's truststore: old issuer and root only
    ok("ca", "rotate", env=env)  # ... and the operator forgets to publish
    ((_, new_fp), (_, old_fp)) = phases(env)
    assert new_fp not in published(aws)

    line = one_line_error(issuer("ca", "activate", "--publish", TARGET, env=env))
    assert "did not hold this truststore yet" in line and f"issuer ca activate {new_fp[:16]}" in line
    assert phases(env) == [("prepared", new_fp), ("active", old_fp)]  # nothing switched
    assert new_fp in published(aws) and versions(aws) == 2  # but API Gateway's copy now has it

    again = ok("ca", "activate", new_fp[:16], "--publish", TARGET, env=env)
    assert "unchanged" in again and "Activated" in again
    assert phases(env)[0] == ("active", new_fp)


def test_publish_option_mistakes_are_one_line(env: dict[str, str]) -> None:
    ok("ca", "init", env=env)
    for args in (
        ("ca", "rotate", "--domain", "api.example.com", "--api", "rest"),
        ("ca", "activate", "--publish", TARGET, "--domain", "api.example.com"),
        ("ca", "retire", "abcd", "--region", "eu-west-1"),
    ):
        result = issuer(*args, env=env)
        assert result.returncode == 2
        assert "go with --publish" in one_line_error(result) or "go together" in one_line_error(result)
    assert len(phases(env)) == 1  # nothing was prepared
    bad = issuer("ca", "rotate", "--publish", "http://not-s3/x", env=env)
    assert bad.returncode == 2 and "--publish" in bad.stderr
