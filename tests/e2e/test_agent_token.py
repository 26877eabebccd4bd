"""issuer-agent bootstrap --method token against the running service: files, modes, and a cert openssl accepts."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from clients.agent.cli import main as agent_main
from tests.support.harness import running_issuer
from tests.support.x509_check import openssl_verify


async def test_agent_bootstraps_with_a_join_token(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_issuer(tmp_path, pg_url) as h:
        server = str(h.client.make_url("")).rstrip("/")
        out = tmp_path / "agent"
        monkeypatch.setenv("ISSUER_JOIN_TOKEN", await h.token(name="edge-node-3"))
        code = await asyncio.to_thread(
            agent_main,
            ["bootstrap", "--method", "token", "--server", server, "--out", str(out), "--key-type", "ec-p384"],
        )
        assert code == 0, capsys.readouterr()
        printed = capsys.readouterr().out
        assert "spiffe://test.example/onprem/edge-node-3" in printed and "renew after" in printed

        key_path = out / "key.pem"
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        leaf = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
        assert leaf.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
        openssl_verify(
            (out / "cert.pem").read_bytes(), (out / "chain.pem").read_bytes(), (out / "bundle.pem").read_bytes()
        )
        assert (out / "fullchain.pem").read_bytes() == (out / "cert.pem").read_bytes() + (
            out / "chain.pem"
        ).read_bytes()
        (row,) = await h.certificates()
        assert row.serial == format(leaf.serial_number, "x") and row.key_type == "ec-p384"

        # The token is spent: a second bootstrap fails with the server's code and a non-zero exit.
        code = await asyncio.to_thread(
            agent_main, ["bootstrap", "--method", "token", "--server", server, "--out", str(tmp_path / "again")]
        )
        assert code != 0
        assert "token_used" in capsys.readouterr().err
