"""``issuer revoke`` as an operator runs it: a real process against the database the service uses.

Certificates are issued by the real app; the command runs as ``python -m issuer.cli`` with the
environment an operator sets. Failures are one line on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from issuer.attest.ec2_certs import AwsCertStore
from tests.integration.test_revocation import (
    EC2_CONFIG,
    crl_serials,
    get_crl,
    get_revoked,
    issue,
    openssl_style,
    truststore,
)
from tests.integration.test_revocation_instance import INSTANCE, ec2_request
from tests.support.fake_aws_iid import FakeAwsSigner
from tests.support.harness import PASSPHRASE, running_issuer
from tests.support.x509_check import openssl_verify_crl

ISSUER = [sys.executable, "-m", "issuer.cli"]


def issuer(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ISSUER, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def one_line_error(result: subprocess.CompletedProcess[str], *, status: int) -> str:
    assert result.returncode == status, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("issuer: error: "), lines[0]
    return lines[0]


def make_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    (tmp_path / "issuer.toml").write_text(EC2_CONFIG)
    base = {k: v for k, v in os.environ.items() if not k.startswith("ISSUER_")}
    return {
        **base,
        "ISSUER_CONFIG": str(tmp_path / "issuer.toml"),
        "ISSUER_STATE_DIR": str(tmp_path / "state"),
        "ISSUER_DATABASE_URL": database_url,
        "ISSUER_CA_PASSPHRASE": PASSPHRASE,
    }


async def test_revoke_by_serial_and_principal_from_the_command_line(tmp_path: Path, db_url: str) -> None:
    env = make_env(tmp_path, db_url)
    async with running_issuer(tmp_path, db_url, config=EC2_CONFIG) as h:
        one, two, three = await issue(h, "box-1"), await issue(h, "box-2"), await issue(h, "box-2")

        preview = issuer(
            "revoke",
            "--serial",
            openssl_style(one["serial"]),
            "--reason",
            "key-compromise",
            "--dry-run",
            "--json",
            env=env,
        )
        assert preview.returncode == 0, preview.stderr
        planned = json.loads(preview.stdout)
        assert planned["dry_run"] is True and planned["reason"] == "keyCompromise"
        assert [c["serial"] for c in planned["revoked"]] == [one["serial"]]
        assert json.loads(issuer("certs", "show", one["serial"], "--json", env=env).stdout)["status"] == "active"

        done = issuer(
            "revoke", "--serial", openssl_style(one["serial"]), "--reason", "KEY_COMPROMISE", "--note", "lost", env=env
        )
        assert done.returncode == 0, done.stderr
        assert "Revoked 1 certificate(s)" in done.stdout and "(keyCompromise)" in done.stdout
        assert one["serial"] in done.stdout and "GET /v1/revoked" in done.stdout
        shown = json.loads(issuer("certs", "show", one["serial"], "--json", env=env).stdout)
        assert (shown["status"], shown["revocation_reason"]) == ("revoked", "keyCompromise")

        again = issuer("revoke", "--serial", one["serial"], "--reason", "superseded", env=env)
        assert again.returncode == 0, again.stderr
        assert f"Already revoked: {one['serial']} (keyCompromise" in again.stdout

        by_principal = issuer("revoke", "--principal", "box-2", "--reason", "cessation-of-operation", "--json", env=env)
        assert by_principal.returncode == 0, by_principal.stderr
        revoked = json.loads(by_principal.stdout)
        assert revoked["reason"] == "cessationOfOperation" and revoked["binding"] is None
        assert sorted(c["serial"] for c in revoked["revoked"]) == sorted([two["serial"], three["serial"]])

        serials = {one["serial"], two["serial"], three["serial"]}
        assert set((await get_revoked(h))["serials"]) == serials
        crl = await get_crl(h)
        assert set(crl_serials(crl)) == serials
        openssl_verify_crl(crl, await truststore(h))


async def test_command_line_mistakes_are_one_line(tmp_path: Path, pg_url: str) -> None:
    env = make_env(tmp_path, pg_url)
    async with running_issuer(tmp_path, pg_url, config=EC2_CONFIG) as h:
        body = await issue(h, "box-1")
    line = one_line_error(issuer("revoke", "--serial", body["serial"], "--reason", "stolen", env=env), status=2)
    assert "'stolen' is not a revocation reason" in line and "keyCompromise" in line
    line = one_line_error(issuer("revoke", "--serial", "00:ab:cd:ef", "--reason", "unspecified", env=env), status=1)
    assert "no certificate with serial 00:ab:cd:ef" in line
    line = one_line_error(issuer("revoke", "--serial", "zz:01", "--reason", "unspecified", env=env), status=2)
    assert "not a certificate serial" in line
    line = one_line_error(
        issuer("revoke", "--serial", body["serial"], "--reason", "unspecified", "--reset-binding", env=env), status=2
    )
    assert "--reset-binding applies to --instance only" in line
    line = one_line_error(issuer("revoke", "--principal", "nobody", "--reason", "unspecified", env=env), status=1)
    assert "no identity with principal 'nobody'" in line
    line = one_line_error(issuer("revoke", "--instance", "web-1", "--reason", "unspecified", env=env), status=1)
    assert "not an EC2 instance ID" in line
    line = one_line_error(issuer("revoke", "--instance", INSTANCE, "--reason", "unspecified", env=env), status=1)
    assert f"no certificate or binding for instance {INSTANCE}" in line
    missing = issuer("revoke", "--reason", "unspecified", env=env)
    assert (
        missing.returncode == 2 and "one of the arguments --serial --principal --instance is required" in missing.stderr
    )
    # None of the mistakes changed anything.
    assert json.loads(issuer("certs", "show", body["serial"], "--json", env=env).stdout)["status"] == "active"
    helped = issuer("revoke", "--help", env=env)
    assert helped.returncode == 0 and "cessationOfOperation" in helped.stdout and "--reset-binding" in helped.stdout


@pytest.fixture(scope="module")
def aws() -> FakeAwsSigner:
    return FakeAwsSigner.create(kind="rsa2048")


async def test_revoke_an_instance_from_the_command_line(tmp_path: Path, pg_url: str, aws: FakeAwsSigner) -> None:
    env = make_env(tmp_path, pg_url)
    certs = AwsCertStore.builtin(extra={"eu-west-1": [aws.cert]})
    async with running_issuer(tmp_path, pg_url, config=EC2_CONFIG, aws_certs=certs) as h:
        status, body = await h.post("/v1/issue/aws-ec2", ec2_request(aws))
        assert status == 201, body
        leaf = x509.load_pem_x509_certificate(body["certificate"].encode())

    kept = issuer("revoke", "--instance", INSTANCE, "--reason", "keyCompromise", env=env)
    assert kept.returncode == 0, kept.stderr
    assert format(leaf.serial_number, "x") in kept.stdout
    assert "Instance binding kept" in kept.stdout and "--reset-binding" in kept.stdout
    assert [b["instance_id"] for b in json.loads(issuer("instances", "list", "--json", env=env).stdout)] == [INSTANCE]

    preview = issuer(
        "revoke", "--instance", INSTANCE, "--reason", "keyCompromise", "--reset-binding", "--dry-run", env=env
    )
    assert preview.returncode == 0, preview.stderr
    assert "Nothing to revoke" in preview.stdout and "Instance binding would be forgotten" in preview.stdout
    assert "Dry run: nothing was changed." in preview.stdout
    assert len(json.loads(issuer("instances", "list", "--json", env=env).stdout)) == 1

    reset = issuer("revoke", "--instance", INSTANCE, "--reason", "keyCompromise", "--reset-binding", "--json", env=env)
    assert reset.returncode == 0, reset.stderr
    result = json.loads(reset.stdout)
    assert result["binding"] == "forgotten" and result["revoked"] == []
    assert [c["serial"] for c in result["already_revoked"]] == [format(leaf.serial_number, "x")]
    assert json.loads(issuer("instances", "list", "--json", env=env).stdout) == []
