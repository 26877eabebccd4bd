"""``issuer-agent status`` tells the truth: it asks the issuer (GET /v1/revoked) whether the certificate
was revoked, knows when the issuer denied the machine's identity, gives each verdict its own exit
status, falls back to the files with a warning when the issuer cannot be asked, and speaks JSON."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from clients.agent.cli import main
from clients.errors import EX_NOPERM
from tests.support.fake_imds import serve_in_thread
from tests.support.moto_server import free_port
from tests.unit import agent_support
from tests.unit.test_agent_fake_issuer import FakeIssuer

ca, clean_env, fake, url = agent_support.ca, agent_support.clean_env, agent_support.fake, agent_support.url

VALID, EXPIRED, MISSING, REVOKED = 0, 1, 3, 4


def bootstrap(url: str, out: Path, token: str = "t-1") -> str:
    assert main(["bootstrap", "--method", "token", "--token", token, "--server", url, "--out", str(out)]) == 0
    return str(json.loads((out / "issuer.json").read_text())["serial"])


def status_json(out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(["status", "--out", str(out), "--json", *extra])
    document = json.loads(capsys.readouterr().out)
    assert document["exit_status"] == code
    return code, document


def revoked_lookups(fake: FakeIssuer) -> int:
    return len([s for s in fake.seen if s.path == "/v1/revoked"])


def test_missing_valid_and_revoked_have_their_own_exit_statuses(
    url: str, fake: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert status_json(out, capsys)[0] == MISSING
    serial = bootstrap(url, out)

    code, document = status_json(out, capsys)
    assert code == VALID and revoked_lookups(fake) == 1
    assert document["state"] == "valid" and document["serial"] == serial and document["issuer_checked"] is True
    assert document["server"] == url and document["method"] == "token" and document["revocation"] is None

    fake.status[serial] = "revoked"
    code, document = status_json(out, capsys)
    assert code == REVOKED and document["state"] == "revoked"
    assert document["revocation"]["reason"] == "keyCompromise"
    assert main(["status", "--out", str(out)]) == REVOKED
    assert "REVOKED at 20" in capsys.readouterr().out


def test_an_expired_certificate_is_not_a_missing_one(
    url: str, fake: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.lifetime = timedelta(seconds=-1)
    out = tmp_path / "out"
    bootstrap(url, out)
    code, document = status_json(out, capsys)
    assert (code, document["state"]) == (EXPIRED, "expired")


def test_an_unreachable_issuer_gives_a_warning_and_the_files_decide(
    fake: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    with serve_in_thread(fake.http_app()) as gone:
        serial = bootstrap(gone, out)
    fake.status[serial] = "revoked"  # the issuer would say so, but it is not there to ask
    code, document = status_json(out, capsys)
    assert code == VALID and document["issuer_checked"] is False
    (warning,) = document["warnings"]
    assert f"could not ask the issuer whether {serial} is revoked" in warning and "judging from the files" in warning
    assert main(["status", "--out", str(out)]) == VALID
    assert capsys.readouterr().err.startswith("warning: could not ask the issuer")


def test_offline_asks_nobody(url: str, fake: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    serial = bootstrap(url, out)
    fake.status[serial] = "revoked"
    code, document = status_json(out, capsys, "--offline")
    assert code == VALID and revoked_lookups(fake) == 0 and document["warnings"] == []


def test_another_issuer_can_be_named(
    url: str, fake: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    bootstrap(url, out)
    code, document = status_json(out, capsys, "--server", f"http://127.0.0.1:{free_port()}", "--timeout", "2")
    assert code == VALID and document["issuer_checked"] is False and revoked_lookups(fake) == 0


def test_a_denied_identity_is_remembered_and_reported_until_a_certificate_is_issued_again(
    url: str, fake: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    serial = bootstrap(url, out)
    fake.script["/v1/renew"] = [(403, "identity_denied", None)]
    capsys.readouterr()
    assert main(["renew", "--out", str(out), "--force"]) == EX_NOPERM
    err = capsys.readouterr().err
    assert "(code identity_denied, HTTP 403" in err and "an operator must lift the denial" in err

    code, document = status_json(out, capsys)
    assert (code, document["state"]) == (EX_NOPERM, "denied")
    assert document["denial"]["serial"] == serial and document["denial"]["code"] == "identity_denied"
    assert main(["status", "--out", str(out)]) == EX_NOPERM
    assert "DENIED: the issuer denies this machine's identity" in capsys.readouterr().out

    # An operator lifted the denial; the next certificate clears the note.
    assert main(["renew", "--out", str(out), "--force"]) == 0
    assert not (out / "denied.json").exists()
    assert status_json(out, capsys)[0] == VALID


def test_a_denied_bootstrap_exits_77_and_status_says_denied(
    url: str, fake: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    fake.script["/v1/issue/token"] = [(403, "identity_denied", None)]
    argv = ["bootstrap", "--method", "token", "--token", "t-1", "--server", url, "--out", str(out)]
    assert main(argv) == EX_NOPERM
    code, document = status_json(out, capsys)
    assert (code, document["state"], document["serial"]) == (EX_NOPERM, "denied", None)


def test_the_help_lists_every_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--help"]) == 0
    printed = capsys.readouterr().out
    for line in ("0   valid", "1   expired", "3   missing", "4   revoked", f"{EX_NOPERM}  denied", "78"):
        assert line in printed, line
