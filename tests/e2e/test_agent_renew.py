"""issuer-agent renew and run against the real service: the agent's token and the server's checks agree.

The daemon test leaves `issuer-agent run` (a real process) running through three certificate
lifetimes of a few seconds and checks, all along, that --out holds a valid certificate for
its key; the server supersedes each certificate it replaces.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from clients.agent.cli import main as agent_main
from tests.support.harness import check_leaf_against_truststore, running_issuer

SHORT = """
[issuer]
trust_domain = "test.example"
server_id = "issuer.test.example"

[[roles]]
name = "edge"
methods = ["token"]
ttl = "{ttl}"
"""


async def test_agent_renew_uses_a_new_key_and_the_server_supersedes_the_old(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_issuer(tmp_path, pg_url, config=SHORT.format(ttl="1h")) as h:
        server = str(h.client.make_url("")).rstrip("/")
        out = tmp_path / "agent"
        monkeypatch.setenv("ISSUER_JOIN_TOKEN", await h.token(role="edge", name="box"))
        assert (
            await asyncio.to_thread(
                agent_main, ["bootstrap", "--method", "token", "--server", server, "--out", str(out)]
            )
            == 0
        )
        first_key = (out / "key.pem").read_bytes()
        first = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
        assert json.loads((out / "issuer.json").read_text())["server_id"] == "issuer.test.example"
        capsys.readouterr()

        # Not due yet: nothing happens, exit 0, and it says when.
        assert await asyncio.to_thread(agent_main, ["renew", "--out", str(out)]) == 0
        said = capsys.readouterr()
        assert "due" in (said.out + said.err).lower(), said
        assert (out / "key.pem").read_bytes() == first_key

        assert await asyncio.to_thread(agent_main, ["renew", "--out", str(out), "--force"]) == 0, capsys.readouterr()
        second = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
        assert second.serial_number != first.serial_number
        assert (out / "key.pem").read_bytes() != first_key
        key = serialization.load_pem_private_key((out / "key.pem").read_bytes(), password=None)
        assert second.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
        statuses = {c.serial: c.status for c in await h.certificates()}
        assert statuses == {format(first.serial_number, "x"): "superseded", format(second.serial_number, "x"): "active"}
        await check_leaf_against_truststore(h, {"certificate": (out / "cert.pem").read_text()})


async def test_a_daemon_keeps_a_valid_certificate_through_three_lifetimes(tmp_path: Path, pg_url: str) -> None:
    lifetime = 12  # seconds: renew_after is 8 s after issue, brought forward by the agent's jitter
    async with running_issuer(tmp_path, pg_url, config=SHORT.format(ttl=f"{lifetime}s")) as h:
        server = str(h.client.make_url("")).rstrip("/")
        out = tmp_path / "agent"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ISSUER_"))}
        env["ISSUER_JOIN_TOKEN"] = await h.token(role="edge", name="daemon-box")
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "issuer-agent"),
            "run",
            "--method",
            "token",
            "--server",
            server,
            "--out",
            str(out),
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        seen: set[int] = set()
        checks = 0
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            while loop.time() < started + 3 * lifetime:  # three lifetimes of the first certificate
                await asyncio.sleep(0.25)
                if not (out / "cert.pem").exists():
                    assert loop.time() < started + 10, "no certificate after 10 s"
                    continue
                leaf = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
                key = serialization.load_pem_private_key((out / "key.pem").read_bytes(), password=None)
                now = datetime.now(UTC)
                assert leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc, "the installed certificate expired"
                assert leaf.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
                seen.add(leaf.serial_number)
                checks += 1
        finally:
            process.terminate()
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        log = stderr.decode()
        assert process.returncode == 0, log
        assert len(seen) >= 4, log  # the bootstrap certificate and a renewal in each lifetime
        assert checks > 3 * lifetime, log
        statuses = [c.status for c in await h.certificates()]
        assert statuses.count("active") == 1 and statuses.count("superseded") == len(statuses) - 1
        assert "renewed" in log
