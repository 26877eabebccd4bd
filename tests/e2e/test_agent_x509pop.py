"""issuer-agent with --method x509pop against the running service: bootstrap with another CA's
certificate and key, renew like any other, and `run --once` re-proving itself with the same files."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from clients.agent.cli import main as agent_main
from tests.support.external_pki import ExternalPki
from tests.support.harness import check_leaf_against_truststore, running_issuer
from tests.support.x509_check import openssl_verify

CONFIG = """
[issuer]
trust_domain = "test.example"
server_id = "issuer.test.example"

[[roles]]
name = "corp"
methods = ["x509pop"]
trust_bundle = "external-cas.pem"
allowed_organizational_units = ["Servers"]
"""


async def test_agent_bootstraps_with_an_external_certificate_and_renews(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = ExternalPki()
    pki.write_bundle(tmp_path / "external-cas.pem")
    cert_file, key_file = pki.machine("build-7", key=rsa.generate_private_key(65537, 2048)).write(tmp_path / "pki")
    async with running_issuer(tmp_path, pg_url, config=CONFIG) as h:
        server = str(h.client.make_url("")).rstrip("/")
        out = tmp_path / "agent"
        external = ["--external-cert", str(cert_file), "--external-key", str(key_file)]
        monkeypatch.setenv("ISSUER_SERVER_ID", "issuer.test.example")
        code = await asyncio.to_thread(
            agent_main, ["bootstrap", "--method", "x509pop", "--server", server, "--out", str(out), *external]
        )
        assert code == 0, capsys.readouterr()
        printed = capsys.readouterr()
        assert "spiffe://test.example/x509pop/build-7" in printed.out, printed
        assert "signed an x509pop proof (RS256)" in printed.err

        assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
        key = serialization.load_pem_private_key((out / "key.pem").read_bytes(), password=None)
        leaf = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
        assert leaf.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
        external_key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        assert key.public_key().public_numbers() != external_key.public_key().public_numbers()  # type: ignore[union-attr]
        openssl_verify(
            (out / "cert.pem").read_bytes(), (out / "chain.pem").read_bytes(), (out / "bundle.pem").read_bytes()
        )
        await check_leaf_against_truststore(h, {"certificate": (out / "cert.pem").read_text()})
        assert json.loads((out / "issuer.json").read_text())["method"] == "x509pop"

        # Renewal needs nothing from the other CA: the certificate we issued vouches for the next key.
        assert await asyncio.to_thread(agent_main, ["renew", "--out", str(out), "--force"]) == 0, capsys.readouterr()
        renewed = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
        assert renewed.serial_number != leaf.serial_number
        statuses = {c.serial: c.status for c in await h.certificates()}
        assert statuses == {format(leaf.serial_number, "x"): "superseded", format(renewed.serial_number, "x"): "active"}

        # A fresh directory: `run --once` (a process: it installs signal handlers) proves itself again
        # with the same files, a new proof and a new jti.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ISSUER_"))}
        env["ISSUER_SERVER_ID"] = "issuer.test.example"
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "issuer-agent"),
            *("run", "--once", "--method", "x509pop", "--server", server, "--out", str(tmp_path / "again")),
            *external,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode == 0, output.decode()
        assert len(await h.certificates()) == 3


async def test_unusable_external_files_fail_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = ExternalPki()
    cert_file, key_file = pki.machine().write(tmp_path / "pki")
    other_cert, _ = pki.machine().write(tmp_path / "other")
    base = ["bootstrap", "--method", "x509pop", "--server-id", "s", "--server", "http://127.0.0.1:9"]
    cases = [
        (["--external-cert", str(other_cert), "--external-key", str(key_file)], "external_key_mismatch"),
        (
            ["--external-cert", str(tmp_path / "absent.pem"), "--external-key", str(key_file)],
            "external_file_unreadable",
        ),
        (["--external-cert", str(key_file), "--external-key", str(key_file)], "external_cert_invalid"),
        (["--external-cert", str(cert_file), "--external-key", str(cert_file)], "external_key_invalid"),
    ]
    for extra, code in cases:
        status = await asyncio.to_thread(agent_main, [*base, "--out", str(tmp_path / "out"), *extra])
        assert status == 78, capsys.readouterr()
        assert f"(code {code})" in capsys.readouterr().err
    # Missing files or server id: a usage error (64), before anything is read.
    assert await asyncio.to_thread(agent_main, [*base[:-2], "--server", "http://127.0.0.1:9", "--out", "x"]) == 64
    assert "external_credentials_missing" in capsys.readouterr().err
