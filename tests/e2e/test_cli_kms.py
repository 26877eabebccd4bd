"""``issuer ca init | rotate`` with keys in AWS KMS and ``issuer serve`` signing through KMS, as real processes.

moto's KMS server is the peer: every process finds it through ``AWS_ENDPOINT_URL_KMS`` (botocore's
own setting; the issuer has no endpoint option). ``issuer serve`` runs with no passphrase in its
environment and no key file in its CA directory. Every failure is one line ``issuer: error: ...``.
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.cli import ca_status, cli_env, issue, issuer, ok, one_line_error, serve
from tests.support.moto_server import MotoServer, free_port, moto_env, moto_server
from tests.support.x509_check import openssl_verify

REGION = "eu-west-1"


@pytest.fixture(scope="module")
def kms() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture
def env(tmp_path: Path, pg_url: str, kms: MotoServer) -> dict[str, str]:
    # No ISSUER_CA_PASSPHRASE: a local root's key file gets a generated one; nothing else needs it.
    aws = moto_env(region=REGION, AWS_ENDPOINT_URL_KMS=kms.url)
    return cli_env(tmp_path, pg_url, passphrase=None, aws=aws)


def unique(name: str) -> str:
    return f"alias/e2e-{name}-{os.urandom(4).hex()}"


def kms_arns(text: str) -> list[str]:
    return [word.rstrip(",.") for word in text.split() if word.startswith("arn:aws:kms:")]


def verify_against_exported_truststore(tmp_path: Path, env: dict[str, str], *leaves: bytes) -> None:
    truststore = tmp_path / "truststore.pem"
    ok("truststore", "export", "--out", str(truststore), env=env)
    for leaf in leaves:
        openssl_verify(leaf, b"", truststore.read_bytes())  # leaf alone, as API Gateway checks


def test_init_with_a_new_kms_key_then_serve_with_no_passphrase_and_no_key_file(
    tmp_path: Path, env: dict[str, str]
) -> None:
    ca_dir = tmp_path / "state" / "ca"
    name = unique("issuing")
    shown = ok("ca", "init", "--create-kms-key", name, env=env)
    (arn,) = set(kms_arns(shown))
    assert f"created KMS key {arn}" in shown and "registered as the active issuer" in shown
    assert "passphrase: generated into" in shown and f"kms:Sign and kms:GetPublicKey on {arn}" in shown
    assert sorted(p.name for p in ca_dir.iterdir()) == ["issuing.pem", "registered.json", "root.key.pem", "root.pem"]
    (only,) = ca_status(env)["issuers"]
    assert only["key_ref"] == f"kms:{arn}" and only["phase"] == "active"
    assert "the CA registry already has an issuing CA" in one_line_error(
        issuer("ca", "init", "--create-kms-key", unique("again"), env=env)
    )

    # Root key and passphrase offline: the replica has certificates only.
    vault = tmp_path / "vault"
    vault.mkdir()
    (ca_dir / "root.key.pem").rename(vault / "root.key.pem")
    (tmp_path / "config" / "issuer" / "ca-passphrase").rename(vault / "ca-passphrase")
    assert "ISSUER_CA_PASSPHRASE" not in env and "ISSUER_CA_PASSPHRASE_FILE" not in env
    port = free_port()
    server = serve(env, port)
    try:
        leaf = issue(env, port, "kms-e2e")
        certificate = x509.load_pem_x509_certificate(leaf)
        assert certificate.issuer.rfc4514_string() == "CN=test.example Issuing CA"
        certificate.verify_directly_issued_by(x509.load_pem_x509_certificate((ca_dir / "issuing.pem").read_bytes()))
        verify_against_exported_truststore(tmp_path, env, leaf)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as ready:
            assert ready.status == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_kms_root_and_rotation_through_the_cli(tmp_path: Path, env: dict[str, str]) -> None:
    ca_dir = tmp_path / "state" / "ca"
    shown = ok("ca", "init", "--create-root-kms-key", unique("root"), "--create-kms-key", unique("first"), env=env)
    report = ca_status(env)
    ((root,), (first,)) = report["roots"], report["issuers"]
    root_arn, first_arn = root["key_ref"].removeprefix("kms:"), first["key_ref"].removeprefix("kms:")
    assert {root_arn, first_arn} <= set(kms_arns(shown)) and root["key"] == root["key_ref"]
    assert "passphrase: generated" not in shown and not (tmp_path / "config" / "issuer" / "ca-passphrase").exists()
    assert sorted(p.name for p in ca_dir.iterdir()) == ["issuing.pem", "registered.json", "root.pem"]
    root_cert = x509.load_pem_x509_certificate((ca_dir / "root.pem").read_bytes())
    assert root_cert.public_key().key_size == 384  # type: ignore[union-attr]

    port = free_port()
    server = serve(env, port)
    try:
        first_leaf = issue(env, port, "under-the-first")
        rotated = ok("ca", "rotate", "--create-kms-key", unique("second"), "--kms-key-spec", "ECC_NIST_P384", env=env)
        assert "nothing to copy: replicas sign in KMS" in rotated and "created:      KMS key arn:aws:kms:" in rotated
        new_fp = next(line.split()[-1] for line in rotated.splitlines() if line.strip().startswith("fingerprint:"))
        assert "key:          kms:arn:aws:kms:" in rotated and first_arn not in rotated
        assert list(ca_dir.glob("*.key.pem")) == []
        ok("ca", "activate", new_fp[:16], env=env)
        deadline = time.monotonic() + 30
        while True:
            second_leaf = issue(env, port, f"after-{time.monotonic()}")
            parsed = x509.load_pem_x509_certificate(second_leaf)
            if parsed.issuer.rfc4514_string() != "CN=test.example Issuing CA":
                break
            assert time.monotonic() < deadline, "the server never switched to the new issuer"
            time.sleep(0.3)
        new_issuer = x509.load_pem_x509_certificate((ca_dir / f"issuing-{new_fp[:16]}.pem").read_bytes())
        parsed.verify_directly_issued_by(new_issuer)
        new_issuer.verify_directly_issued_by(root_cert)
        assert new_issuer.public_key().key_size == 384  # type: ignore[union-attr]
        verify_against_exported_truststore(tmp_path, env, first_leaf, second_leaf)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_kms_failures_are_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    line = one_line_error(issuer("ca", "init", "--root-kms-key", "alias/x", env=env))
    assert "a root in KMS needs the issuing key in KMS too" in line
    assert "is not a KMS alias name" in one_line_error(issuer("ca", "init", "--create-kms-key", "alias/aws/x", env=env))
    closed = {**env, "AWS_ENDPOINT_URL_KMS": f"http://127.0.0.1:{free_port()}"}
    line = one_line_error(issuer("ca", "init", "--issuing-kms-key", "alias/absent", env=closed))
    assert "alias/absent" in line and "could not be reached" in line
    # Nothing was left behind by the failed init: a later one succeeds in the same state directory.
    assert not (tmp_path / "state" / "ca" / "root.key.pem").exists()
    line = one_line_error(issuer("ca", "init", "--issuing-kms-key", "alias/absent", env=env))
    assert "alias/absent" in line and "does not exist" in line

    shown = ok("ca", "init", "--create-kms-key", unique("served"), env=env)
    (arn,) = set(kms_arns(shown))
    result = issuer("serve", "--port", str(free_port()), env=closed)
    assert result.returncode != 0 and "Traceback" not in result.stderr and "listening on" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("issuer: error: issuing CA CN=test.example Issuing CA: ") and arn in last, last
    assert "could not be reached" in last

    unsigned = one_line_error(issuer("ca", "rotate", "--kms-key", "alias/absent", env=env))
    assert "alias/absent" in unsigned and "does not exist" in unsigned


def test_help_shows_the_kms_options(env: dict[str, str]) -> None:
    init = ok("ca", "init", "--help", env=env)
    for flag in ("--issuing-kms-key", "--create-kms-key", "--kms-key-spec", "--root-kms-key", "--kms-region"):
        assert flag in init
    rotate = ok("ca", "rotate", "--help", env=env)
    for flag in ("--kms-key", "--create-kms-key", "--kms-key-spec", "--kms-region"):
        assert flag in rotate
