"""Exit statuses a scheduler can act on: 64 usage and 78 configuration never look transient,
75 is only for "try again later", 1 for refusals. Each case through ``main``."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.agent.cli import main
from tests.support.fake_imds import serve_in_thread
from tests.support.moto_server import free_port
from tests.unit import agent_support
from tests.unit.test_agent_fake_issuer import FakeIssuer, TestCA, tls_files

EX_USAGE, EX_TEMPFAIL, EX_CONFIG = 64, 75, 78


# The fixtures shared with the other agent tests that run main against the fake issuer.
ca, clean_env, fake, url = agent_support.ca, agent_support.clean_env, agent_support.fake, agent_support.url


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(argv)
    return status, capsys.readouterr().err


def token_bootstrap(server: str, out: Path, *extra: str) -> list[str]:
    return ["bootstrap", "--method", "token", "--token", "t-1", "--server", server, "--out", str(out), *extra]


# --- 64: the command line is wrong ------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["bootstrap", "--method", "token"],  # --server and --out missing (argparse)
        ["bootstrap", "--method", "carrier-pigeon", "--server", "https://i", "--out", "o"],
        ["renew", "--out", "o", "--auth", "kerberos"],
        ["run", "--method", "token", "--server", "https://i", "--out", "o", "--once", "--bogus"],
        ["bootstrap", "--method", "token", "--token", "t", "--server", "https://i", "--out", "o", "--timeout", "0"],
        ["bootstrap", "--method", "aws-ec2", "--token", "t", "--server", "https://i", "--out", "o"],
        ["bootstrap", "--method", "aws-iam", "--server", "https://i", "--out", "o"],  # no server id
        ["bootstrap", "--method", "token", "--server", "https://i", "--out", "o"],  # no token
        ["bootstrap", "--method", "token", "--token", "t", "--server", "http://192.0.2.1", "--out", "o"],
        ["renew", "--out", "o", "--server", "http://127.0.0.1:1", "--auth", "mtls"],
        ["run", "--method", "token", "--server", "https://i", "--out", "o", "--on-change", "'unbalanced"],
        ["run", "--method", "token", "--server", "https://i", "--out", "o", "--on-change-timeout", "-1"],
    ],
)
def test_usage_errors_exit_64_and_touch_nothing(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    status, err = run(argv, capsys)
    assert status == EX_USAGE, err
    assert not (tmp_path / "o").exists()


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("bootstrap", "renew", "run", "status"):
        assert main([command, "--help"]) == 0
        assert "exit status" in capsys.readouterr().out


# --- 78: something named on the command line cannot be used ----------------------------------------


def test_a_missing_ca_bundle_is_a_configuration_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = token_bootstrap("https://127.0.0.1:1", out, "--ca-bundle", str(tmp_path / "missing.pem"))
    status, err = run(argv, capsys)
    assert status == EX_CONFIG
    assert "(code ca_bundle_invalid)" in err
    assert not out.exists()


def test_an_issuer_certificate_that_does_not_verify_is_a_configuration_error(
    fake: FakeIssuer, ca: TestCA, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, context = tls_files(tmp_path, ca, require_client_cert=False)
    with serve_in_thread(fake.http_app(), ssl_context=context) as https:
        # No --ca-bundle: the system trust store does not know the test CA. Retrying cannot fix that.
        status, err = run(token_bootstrap(https, tmp_path / "out"), capsys)
    assert status == EX_CONFIG
    assert "(code tls_verify_failed)" in err and "--ca-bundle" in err
    assert fake.seen == []


def test_an_unreadable_token_file_is_a_configuration_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bootstrap", "--method", "token", "--token-file", str(tmp_path / "nope"), "--server", "http://127.0.0.1:1"]
    status, err = run([*argv, "--out", str(tmp_path / "out")], capsys)
    assert status == EX_CONFIG
    assert "(code token_file_unreadable)" in err


@pytest.mark.parametrize("command", ["bootstrap", "run"])
def test_an_unusable_out_directory_is_a_configuration_error(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("x")
    argv = [command, "--method", "token", "--token", "t", "--server", "http://127.0.0.1:1", "--out"]
    status, err = run([*argv, str(tmp_path / "file")], capsys)
    assert status == EX_CONFIG and "(code out_dir_invalid)" in err
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    status, err = run([*argv, str(shared)], capsys)
    assert status == EX_CONFIG and "(code out_dir_insecure)" in err


def test_broken_files_in_out_are_a_configuration_error(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(token_bootstrap(url, out)) == 0
    (out / ".live" / "key.pem").unlink()
    for argv in (["renew", "--out", str(out)], ["status", "--out", str(out)]):
        status, err = run(argv, capsys)
        assert status == EX_CONFIG and "(code key_missing)" in err


# --- 75: only what may work later without anyone changing anything ----------------------------------


def test_an_unreachable_issuer_is_transient(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, err = run(token_bootstrap(f"http://127.0.0.1:{free_port()}", tmp_path / "out"), capsys)
    assert status == EX_TEMPFAIL and "(code server_unreachable)" in err


@pytest.mark.parametrize("http_status", [429, 502, 503, 504])
def test_busy_answers_are_transient(
    http_status: int, fake: FakeIssuer, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.script["/v1/issue/token"] = [(http_status, "busy", "30")]
    status, err = run(token_bootstrap(url, tmp_path / "out"), capsys)
    assert status == EX_TEMPFAIL and f"HTTP {http_status}" in err


# --- 1: refused -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("http_status", "code"), [(401, "token_invalid"), (403, "binding_mismatch"), (500, "internal_error")]
)
def test_refusals_and_server_faults_exit_1(
    http_status: int, code: str, fake: FakeIssuer, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.script["/v1/issue/token"] = [(http_status, code, None)]
    status, err = run(token_bootstrap(url, tmp_path / "out"), capsys)
    assert status == 1 and f"(code {code}, HTTP {http_status}" in err
