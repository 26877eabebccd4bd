"""``issuer ca init | rotate --aws-pca-arn``, ``issuer serve`` issuing through AWS Private CA and ``issuer
revoke`` reaching it, as real processes.

moto's ACM PCA and S3 server is the peer, running in this test's process (tests/support/moto_pca.py)
so that its backend can be extended to honour ApiPassthrough and Validity as Private CA does; every
``issuer`` process reaches it over HTTP through ``AWS_ENDPOINT_URL_ACM_PCA``/``_S3`` with an IAM key
moto checks. ``issuer serve`` runs with no CA passphrase and no key file.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ca.hierarchy import create_root
from tests.support.cli import ca_status, cli_env, issue, issuer, ok, one_line_error, serve
from tests.support.moto_pca import MotoPca, PcaCa, moto_pca
from tests.support.moto_server import free_port
from tests.support.x509_check import openssl_verify, openssl_verify_crl


@pytest.fixture
def moto() -> Iterator[MotoPca]:
    with moto_pca() as m:
        m.honour_passthrough()
        yield m


@pytest.fixture
def private_ca(moto: MotoPca) -> PcaCa:
    from datetime import UTC, datetime

    return moto.create_ca(create_root(now=datetime.now(UTC), organization="Example Corp"))


@pytest.fixture
def env(tmp_path: Path, pg_url: str, moto: MotoPca) -> dict[str, str]:
    return cli_env(tmp_path, pg_url, passphrase=None, aws=moto.env())


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_init_serve_issue_revoke_and_the_private_cas_crl(
    tmp_path: Path, env: dict[str, str], moto: MotoPca, private_ca: PcaCa
) -> None:
    shown = ok("ca", "init", "--aws-pca-arn", private_ca.arn, env=env)
    assert "Registered an AWS Private CA as the active issuing CA" in shown
    assert f"s3://{private_ca.bucket}/" in shown and "acm-pca:IssueCertificate" in shown
    (only,) = ca_status(env)["issuers"]
    assert (only["key_ref"], only["phase"]) == (f"pca:{private_ca.arn}", "active")
    assert "already has an issuing CA" in one_line_error(issuer("ca", "init", "--aws-pca-arn", private_ca.arn, env=env))

    port = free_port()
    server = serve(env, port)
    try:
        leaf_pem = issue(env, port, "pca-e2e")
        leaf = x509.load_pem_x509_certificate(leaf_pem)
        leaf.verify_directly_issued_by(private_ca.certificate)
        truststore = tmp_path / "truststore.pem"
        ok("truststore", "export", "--out", str(truststore), env=env)
        openssl_verify(leaf_pem, b"", truststore.read_bytes())  # openssl verify -CAfile truststore.pem leaf.pem
        assert get(f"http://127.0.0.1:{port}/readyz")[0] == 200

        serial = format(leaf.serial_number, "x")
        said = ok("revoke", "--serial", serial, "--reason", "keyCompromise", env=env)
        assert f"Revoked at its CA too: {serial}" in said
        assert [v for v in moto.revoked_serials(private_ca.arn).values()] == ["KEY_COMPROMISE"]

        moto.publish_crl(private_ca)
        fingerprint = private_ca.certificate.fingerprint(hashes.SHA256()).hex()[:16]
        status, der = get(f"http://127.0.0.1:{port}/v1/crl?issuer={fingerprint}")
        assert status == 200, der
        crl = x509.load_der_x509_crl(der)
        assert [r.serial_number for r in crl] == [leaf.serial_number]
        openssl_verify_crl(crl, truststore.read_bytes())
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_revocation_private_ca_did_not_take_is_reported_and_retried(
    tmp_path: Path, env: dict[str, str], moto: MotoPca, private_ca: PcaCa
) -> None:
    ok("ca", "init", "--aws-pca-arn", private_ca.arn, env=env)
    port = free_port()
    server = serve(env, port)
    try:
        serial = format(x509.load_pem_x509_certificate(issue(env, port, "pca-retry")).serial_number, "x")
    finally:
        server.terminate()
        server.wait(timeout=30)
    unreachable = {**env, "AWS_ENDPOINT_URL_ACM_PCA": f"http://127.0.0.1:{free_port()}"}
    failed = issuer("revoke", "--serial", serial, "--reason", "keyCompromise", env=unreachable)
    assert "revoked here, but 1 revocation(s) did not reach the CA" in one_line_error(failed)
    assert "run the same command again to retry" in failed.stderr
    assert moto.revoked_serials(private_ca.arn) == {}
    shown = ok("certs", "show", serial, env=env)
    assert "revoked" in shown  # the local revocation stands

    again = ok("revoke", "--serial", serial, "--reason", "keyCompromise", env=env)
    assert f"Already revoked: {serial}" in again and f"Revoked at its CA too: {serial}" in again
    assert len(moto.revoked_serials(private_ca.arn)) == 1


def test_rotate_from_a_file_ca_to_private_ca_and_usage_errors(
    tmp_path: Path, env: dict[str, str], private_ca: PcaCa
) -> None:
    file_env = {**env, "ISSUER_CA_PASSPHRASE": "e2e-passphrase-0123456789abcdef"}
    ok("ca", "init", env=file_env)
    shown = ok("ca", "rotate", "--aws-pca-arn", private_ca.arn, env=env)  # no root key, no passphrase needed
    assert "Prepared an AWS Private CA as the next issuing CA" in shown
    assert "added as a new trust anchor" in shown
    phases = {i["key_ref"].split(":", 1)[0]: i["phase"] for i in ca_status(env)["issuers"]}
    assert phases == {"file": "active", "pca": "prepared"}

    bad = issuer("ca", "rotate", "--aws-pca-arn", "arn:aws:kms:eu-west-1:123456789012:key/x", env=env)
    assert bad.returncode == 2 and "is not an AWS Private CA ARN" in one_line_error(bad)
    mixed = issuer("ca", "rotate", "--aws-pca-arn", private_ca.arn, "--kms-key", "alias/x", env=env)
    assert mixed.returncode == 2 and "does not go with --kms-key" in one_line_error(mixed)
    gone = private_ca.arn.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    assert "does not exist" in one_line_error(issuer("ca", "rotate", "--aws-pca-arn", gone, "--force", env=env))
