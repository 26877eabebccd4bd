"""``issuer-agent renew`` over real HTTP against the fake issuer, which verifies every JWS it gets
(signature with the x5c key, alg for the key, aud, exp - iat <= 300, csr_sha256, sub, jti): the
wire format is pinned here. Also mTLS against a TLS server that requires a client certificate."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from clients.agent.cli import main
from tests.support.fake_imds import serve_in_thread
from tests.unit import agent_support
from tests.unit.test_agent_fake_issuer import SERVER_ID, FakeIssuer, TestCA, tls_files

# The fixtures shared with the other agent tests that run main against the fake issuer.
ca, clean_env, fake, url = agent_support.ca, agent_support.clean_env, agent_support.fake, agent_support.url


def bootstrap(url: str, out: Path, *extra: str) -> None:
    argv = ["bootstrap", "--method", "token", "--token", "t-1", "--server", url, "--out", str(out), *extra]
    assert main(argv) == 0


def serial_of(out: Path) -> str:
    return format(x509.load_pem_x509_certificate((out / "cert.pem").read_bytes()).serial_number, "x")


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_bootstrap_writes_issuer_json(url: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    bootstrap(url, out, "--role", "onprem")
    state = json.loads((out / "issuer.json").read_text())
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert state == {
        "version": 1,
        "server": url,
        "server_id": SERVER_ID,  # from the issuer's answer
        "method": "token",
        "role": "onprem",
        "serial": serial_of(out),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "renew_after": state["renew_after"],
    }
    assert stat.S_IMODE(os.stat(out / "issuer.json").st_mode) == 0o644
    assert (out / "issuer.json").is_symlink()  # switched with the key and the certificate


def test_not_due_prints_when_and_sends_nothing(
    url: str, fake: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    bootstrap(url, out)
    capsys.readouterr()
    assert main(["renew", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"not due: certificate {serial_of(out)} is due for renewal at 20")
    assert "--force renews now" in printed
    assert main(["renew", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert fake.issued("/v1/renew") == []


@pytest.mark.parametrize(
    ("key_type", "key_class"), [("ec-p384", ec.EllipticCurvePrivateKey), ("rsa-2048", rsa.RSAPrivateKey)]
)
def test_forced_renewal_makes_a_new_key_of_the_same_type_and_switches_everything(
    url: str, fake: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str], key_type: str, key_class: type
) -> None:
    out = tmp_path / "out"
    bootstrap(url, out, "--key-type", key_type)
    old_serial, old_key = serial_of(out), (out / "key.pem").read_bytes()
    capsys.readouterr()

    assert main(["renew", "--out", str(out), "--force"]) == 0
    (seen,) = fake.issued("/v1/renew")
    assert set(seen.body) == {"csr"}
    assert seen.headers["Authorization"].startswith("Bearer ey")  # the fake verified it, or it would be 401
    new_serial = serial_of(out)
    assert new_serial != old_serial and fake.status[old_serial] == "superseded"
    key = serialization.load_pem_private_key((out / "key.pem").read_bytes(), password=None)
    assert isinstance(key, key_class) and (out / "key.pem").read_bytes() != old_key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        assert key.curve.name == "secp384r1"
    assert stat.S_IMODE(os.stat(out / "key.pem").st_mode) == 0o600
    state = json.loads((out / "issuer.json").read_text())
    assert (state["serial"], state["method"], state["server"]) == (new_serial, "token", url)
    printed = capsys.readouterr().out
    assert f"renewed {old_serial} -> {new_serial}" in printed
    assert f"serial {new_serial}" in printed and "renew after" in printed


def test_key_type_can_change_at_renewal(url: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    bootstrap(url, out)
    assert main(["renew", "--out", str(out), "--force", "--key-type", "rsa-2048"]) == 0
    assert isinstance(serialization.load_pem_private_key((out / "key.pem").read_bytes(), None), rsa.RSAPrivateKey)


def test_due_by_time_renews_without_force(url: str, fake: FakeIssuer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    fake.lifetime = timedelta(seconds=20)  # 60 s backdated: 2/3 of 80 s is already behind us
    bootstrap(url, out)
    old = serial_of(out)
    assert main(["renew", "--out", str(out)]) == 0
    assert serial_of(out) != old


def test_server_id_from_the_command_line_when_the_issuer_does_not_say(
    url: str, fake: FakeIssuer, tmp_path: Path
) -> None:
    fake.announce_server_id = False
    out = tmp_path / "out"
    bootstrap(url, out)
    assert json.loads((out / "issuer.json").read_text())["server_id"] is None
    assert main(["renew", "--out", str(out), "--force"]) == 64  # no audience: a usage error, nothing sent
    assert fake.issued("/v1/renew") == []
    assert main(["renew", "--out", str(out), "--force", "--server-id", "wrong.example"]) == 1
    assert main(["renew", "--out", str(out), "--force", "--server-id", SERVER_ID]) == 0
    assert [s.headers.get("Authorization", "")[:9] for s in fake.issued("/v1/renew")] == ["Bearer ey"] * 2


@pytest.mark.parametrize("code", ["certificate_revoked", "certificate_superseded", "renewal_chain_too_old"])
def test_a_refusal_exits_1_with_a_hint_and_keeps_the_files(
    url: str, fake: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str], code: str
) -> None:
    out = tmp_path / "out"
    bootstrap(url, out)
    before = (out / "key.pem").read_bytes(), (out / "cert.pem").read_bytes()
    fake.refuse_renewals = code
    capsys.readouterr()
    assert main(["renew", "--out", str(out), "--force"]) == 1
    err = capsys.readouterr().err
    assert f"(code {code}, HTTP 403" in error_line(err)
    assert "hint: the issuer will not renew this certificate; run `issuer-agent bootstrap` again" in err
    assert ((out / "key.pem").read_bytes(), (out / "cert.pem").read_bytes()) == before


def test_a_token_outside_the_issuers_time_window_points_at_the_clock_not_at_bootstrap(
    url: str, fake: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    bootstrap(url, out)
    fake.refuse_renewals = "renew_token_expired"
    capsys.readouterr()
    assert main(["renew", "--out", str(out), "--force"]) == 1
    err = capsys.readouterr().err
    assert "(code renew_token_expired" in error_line(err)
    assert "clock" in err and "NTP" in err
    assert "bootstrap` again" not in err


def test_busy_issuer_exits_75_and_shows_retry_after(
    url: str, fake: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    bootstrap(url, out)
    fake.script["/v1/renew"] = [(503, "signer_unavailable", "17")]
    assert main(["renew", "--out", str(out), "--force"]) == 75
    assert "retry after 17s" in error_line(capsys.readouterr().err)


def test_renew_without_a_certificate_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["renew", "--out", str(tmp_path), "--server", "http://127.0.0.1:9"]) == 78
    assert "(code not_bootstrapped)" in error_line(capsys.readouterr().err)


def test_on_change_runs_after_renewal_with_the_event_in_its_environment(url: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    bootstrap(url, out)
    record = tmp_path / "hook.json"
    script = f"import json, os; open({str(record)!r}, 'w').write(json.dumps({{k: v for k, v in os.environ.items() if k.startswith('ISSUER_AGENT_')}}))"
    command = subprocess.list2cmdline([sys.executable, "-c", script])
    assert main(["renew", "--out", str(out), "--force", "--on-change", command]) == 0
    seen = json.loads(record.read_text())
    assert seen["ISSUER_AGENT_EVENT"] == "renew"
    assert seen["ISSUER_AGENT_SERIAL"] == serial_of(out)
    assert seen["ISSUER_AGENT_OUT"] == str(out.resolve())


def test_a_failing_on_change_command_is_reported_not_fatal(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    bootstrap(url, out)
    old = serial_of(out)
    assert main(["renew", "--out", str(out), "--force", "--on-change", "false"]) == 0
    assert serial_of(out) != old
    assert "warning: on-change command failed: false exited with status 1" in capsys.readouterr().err


# --- mTLS -------------------------------------------------------------------------------------------


def test_renewal_over_mtls_presents_the_current_certificate_and_no_token(
    fake: FakeIssuer, ca: TestCA, tmp_path: Path
) -> None:
    ca_bundle, context = tls_files(tmp_path, ca, require_client_cert=True)
    out = tmp_path / "out"
    with serve_in_thread(fake.http_app(), ssl_context=context) as https:
        # Bootstrapping has no client certificate yet, so it goes to the plain-HTTP door of the same issuer.
        with serve_in_thread(fake.http_app()) as http:
            bootstrap(http, out)
        old = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
        argv = [
            "renew",
            "--out",
            str(out),
            "--force",
            "--auth",
            "mtls",
            "--server",
            https,
            "--ca-bundle",
            str(ca_bundle),
        ]
        assert main(argv) == 0
    (seen,) = fake.issued("/v1/renew")
    assert seen.client_cert == old  # what the TLS layer saw
    assert "Authorization" not in seen.headers
    assert serial_of(out) != format(old.serial_number, "x")
    assert json.loads((out / "issuer.json").read_text())["server"] == https


def test_mtls_against_plain_http_is_a_usage_error(url: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    bootstrap(url, out)
    assert main(["renew", "--out", str(out), "--force", "--auth", "mtls"]) == 64


def test_a_tls_server_requiring_a_client_certificate_refuses_the_token_mode(
    fake: FakeIssuer, ca: TestCA, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_bundle, context = tls_files(tmp_path, ca, require_client_cert=True)
    out = tmp_path / "out"
    with serve_in_thread(fake.http_app()) as http:
        bootstrap(http, out)
    with serve_in_thread(fake.http_app(), ssl_context=context) as https:
        argv = ["renew", "--out", str(out), "--force", "--server", https, "--ca-bundle", str(ca_bundle)]
        # The server hangs up during the handshake; the agent cannot tell that from a network fault.
        assert main(argv) == 75
    assert "(code server_unreachable)" in error_line(capsys.readouterr().err)
    assert fake.issued("/v1/renew") == []  # nothing reached the handler


# --- status -----------------------------------------------------------------------------------------


def test_status_says_what_is_installed_and_fails_when_there_is_nothing_valid(
    url: str, fake: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["status", "--out", str(out)]) == 3  # missing
    assert capsys.readouterr().out == f"no certificate in {out}\n"
    bootstrap(url, out)
    capsys.readouterr()
    assert main(["status", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"serial {serial_of(out)}\nissuer {url} (server id {SERVER_ID}, method token)\n")
    assert "renew after 20" in printed and "EXPIRED" not in printed

    fake.lifetime = timedelta(seconds=-1)
    fake.tokens.add("t-1")
    bootstrap(url, out)
    capsys.readouterr()
    assert main(["status", "--out", str(out)]) == 1
    assert "EXPIRED at" in capsys.readouterr().out
