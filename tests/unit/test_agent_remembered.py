"""What bootstrap was given is remembered beside the certificate: `renew --out DIR` and `run --out DIR`
need nothing else, over HTTPS with the CA bundle given once; explicit flags win and stick; secrets
are never written. Through ``main`` against the fake issuer over real HTTP(S)."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path

import pytest

from clients.agent.cli import main, parse
from clients.agent.commands import settle
from clients.agent.remembered import Remembered, parse_remembered, resolve
from clients.agent.state import parse_state
from clients.errors import EX_USAGE
from tests.support.fake_imds import serve_in_thread
from tests.unit import agent_support
from tests.unit.test_agent_fake_issuer import SERVER_ID, FakeIssuer, TestCA, tls_files

ca, clean_env, fake, url = agent_support.ca, agent_support.clean_env, agent_support.fake, agent_support.url


def remembered(out: Path) -> dict[str, object]:
    settings = json.loads((out / "issuer.json").read_text()).get("settings", {})
    assert isinstance(settings, dict)
    return settings


def test_renew_needs_only_out_after_a_bootstrap_with_a_ca_bundle(
    fake: FakeIssuer, ca: TestCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, context = tls_files(tmp_path, ca, require_client_cert=False)
    out, record = tmp_path / "out", tmp_path / "events"
    hook = f"sh -c 'echo $ISSUER_AGENT_EVENT >> {record}'"
    monkeypatch.chdir(tmp_path)  # a relative --ca-bundle is remembered as an absolute path
    with serve_in_thread(fake.http_app(), ssl_context=context) as https:
        argv = ["bootstrap", "--method", "token", "--token", "t-1", "--server", https, "--out", str(out)]
        assert main([*argv, "--ca-bundle", "ca.pem", "--on-change", hook, "--timeout", "12"]) == 0
        assert remembered(out) == {"ca_bundle": str(bundle), "on_change": hook, "timeout": 12.0}
        capsys.readouterr()
        monkeypatch.chdir("/")
        assert main(["renew", "--out", str(out), "--force"]) == 0, capsys.readouterr().err
        assert main(["run", "--once", "--out", str(out)]) == 0, capsys.readouterr().err  # not due: nothing to do
    assert [s.path for s in fake.seen] == ["/v1/issue/token", "/v1/renew"]
    assert record.read_text().split() == ["bootstrap", "renew"]  # the hook too was remembered
    assert remembered(out) == {"ca_bundle": str(bundle), "on_change": hook, "timeout": 12.0}  # and still is


def test_without_the_remembered_bundle_the_issuer_would_not_verify(
    fake: FakeIssuer, ca: TestCA, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Guards the test above: the bundle is what makes the TLS handshake work.
    _, context = tls_files(tmp_path, ca, require_client_cert=False)
    out = tmp_path / "out"
    with serve_in_thread(fake.http_app(), ssl_context=context) as https:
        argv = ["bootstrap", "--method", "token", "--token", "t-1", "--server", https, "--out", str(out)]
        assert main(argv) == 78
    assert "(code tls_verify_failed)" in capsys.readouterr().err


def test_an_explicit_flag_wins_and_is_remembered_after_the_issuance(url: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["bootstrap", "--method", "token", "--token", "t-1", "--server", url, "--out", str(out)]
    assert main([*argv, "--on-change", "true", "--key-type", "ec-p384"]) == 0
    assert main(["renew", "--out", str(out), "--force", "--on-change", "sh -c 'exit 0'"]) == 0
    assert remembered(out) == {"on_change": "sh -c 'exit 0'", "key_type": "ec-p384"}
    assert main(["renew", "--out", str(out), "--force", "--on-change", ""]) == 0  # '' forgets it
    assert remembered(out) == {"key_type": "ec-p384"}


def test_a_token_is_never_written_only_a_token_file(
    url: str, fake: FakeIssuer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.tokens |= {"SECRET-JOIN-TOKEN-1", "SECRET-JOIN-TOKEN-2"}
    token_file = tmp_path / "token"
    token_file.write_text("SECRET-JOIN-TOKEN-1\n")
    out = tmp_path / "out"
    argv = ["bootstrap", "--method", "token", "--token-file", str(token_file), "--server", url, "--out", str(out)]
    assert main(argv) == 0
    assert remembered(out) == {"token_file": str(token_file)}
    monkeypatch.setenv("ISSUER_JOIN_TOKEN", "SECRET-JOIN-TOKEN-2")
    assert main(["bootstrap", "--method", "token", "--server", url, "--out", str(tmp_path / "other")]) == 0
    for written in (out, tmp_path / "other"):
        text = "".join(p.read_text() for p in written.rglob("*") if p.is_file() and not p.name.endswith(".pem"))
        assert "SECRET-JOIN-TOKEN" not in text


def test_run_without_method_or_server_before_a_bootstrap_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--once", "--out", str(tmp_path / "out")]) == EX_USAGE
    err = capsys.readouterr().err
    assert "--method and --server needed" in err and "(code settings_missing)" in err
    assert not (tmp_path / "out").exists()


def test_run_takes_method_and_server_from_the_bootstrap(
    url: str, fake: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t-1\n")
    out = tmp_path / "out"
    fake.lifetime = timedelta(seconds=20)  # due as soon as issued
    argv = ["bootstrap", "--method", "token", "--token-file", str(token_file), "--server", url, "--out", str(out)]
    assert main(argv) == 0
    fake.status[json.loads((out / "issuer.json").read_text())["serial"]] = "revoked"
    token_file.write_text("t-2\n")  # the operator leaves a new token where the bootstrap read the first
    capsys.readouterr()
    assert main(["run", "--once", "--out", str(out)]) == 0, capsys.readouterr().err
    assert [s.path for s in fake.seen] == ["/v1/issue/token", "/v1/renew", "/v1/issue/token"]
    assert "re-attested: serial" in capsys.readouterr().err


def test_run_for_aws_iam_takes_the_server_id_from_the_bootstrap(url: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["bootstrap", "--method", "token", "--token", "t-1", "--server", url, "--out", str(out)]) == 0
    state = out / "issuer.json"  # as an aws-iam bootstrap would have left it
    state.write_text(state.read_text().replace('"method": "token"', '"method": "aws-iam"'))
    args, _, current = settle(parse(["run", "--out", str(out)], {}), {})
    assert (args.method, args.server_id) == ("aws-iam", SERVER_ID) and current is not None
    args, _, _ = settle(parse(["run", "--out", str(out)], {}), {"ISSUER_SERVER_ID": "from-env"})
    assert args.server_id == "from-env"  # the environment over what issuer.json remembers


# --- resolve, without I/O ---------------------------------------------------------------------------


def state_with(settings: Remembered, *, method: str = "aws-ec2") -> object:
    raw = {
        "version": 1, "server": "https://issuer.example.org", "server_id": "issuer.example.org", "method": method,
        "role": "fleet", "serial": "ab", "not_after": "2031-01-02T00:00:00+00:00",
        "renew_after": "2031-01-01T16:00:00+00:00", "settings": settings.to_json(),
    }  # fmt: skip
    return parse_state(json.dumps(raw).encode())


def resolved(
    argv: list[str], settings: Remembered, *, method: str = "aws-ec2"
) -> tuple[argparse.Namespace, Remembered]:
    return resolve(parse(argv, {}), state_with(settings, method=method))  # type: ignore[arg-type]


def test_the_command_line_over_the_remembered_over_the_defaults() -> None:
    kept = Remembered(ca_bundle="/etc/issuer/ca.pem", imds_endpoint="http://[fd00:ec2::254]", timeout=12.0)
    args, keep = resolved(["run", "--out", "/x", "--timeout", "5"], kept)
    assert (args.method, args.server, args.role) == ("aws-ec2", "https://issuer.example.org", "fleet")
    assert args.ca_bundle == Path("/etc/issuer/ca.pem") and args.imds_endpoint == "http://[fd00:ec2::254]"
    assert args.timeout == 5.0 and keep.timeout == 5.0
    assert (args.auth, args.on_change_timeout, args.insecure_http, args.imds_max_wait) == ("token", 30.0, False, 120.0)
    assert keep.auth is None and keep.imds_max_wait is None  # defaults are not remembered


def test_options_of_the_old_method_are_dropped_when_the_method_changes() -> None:
    args, keep = resolved(
        ["run", "--out", "/x", "--method", "aws-iam", "--server-id", "i"], Remembered(imds_endpoint="http://x")
    )
    assert args.imds_endpoint is None and keep.imds_endpoint is None


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ([], "'settings' is not a JSON object"),
        ({"timeout": -1}, "settings.timeout"),
        ({"timeout": True}, "settings.timeout"),
        ({"auth": "carrier-pigeon"}, "settings.auth"),
        ({"insecure_http": "yes"}, "settings.insecure_http"),
        ({"ca_bundle": ""}, "settings.ca_bundle"),
    ],
)
def test_unusable_settings_are_named(settings: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_remembered(settings)


def test_settings_of_a_newer_agent_are_ignored() -> None:
    assert parse_remembered({"timeout": 7, "future_option": 1}) == Remembered(timeout=7.0)
