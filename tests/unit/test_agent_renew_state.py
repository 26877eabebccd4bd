"""``issuer.json`` and reading the installed set back: round trip, mismatches, older layouts."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from clients.agent.files import CredentialSet, install_credentials, prepare_out_dir
from clients.agent.installed import read_current
from clients.agent.state import AgentState, parse_state
from clients.errors import EX_CONFIG, ConfigError
from tests.unit.test_agent_fake_issuer import T0, TestCA, key_pem, pem

STATE = AgentState(
    server="https://issuer.example.org",
    server_id="issuer.example.org",
    method="aws-ec2",
    role="web-fleet",
    serial="5d60ce9d",
    not_after=datetime(2031, 1, 2, tzinfo=timezone.utc),
    renew_after=datetime(2031, 1, 1, 16, tzinfo=timezone.utc),
)


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.create()


def test_state_round_trips_as_readable_json() -> None:
    raw = STATE.to_json()
    assert parse_state(raw) == STATE
    assert json.loads(raw) == {
        "version": 1,
        "server": "https://issuer.example.org",
        "server_id": "issuer.example.org",
        "method": "aws-ec2",
        "role": "web-fleet",
        "serial": "5d60ce9d",
        "not_after": "2031-01-02T00:00:00+00:00",
        "renew_after": "2031-01-01T16:00:00+00:00",
    }


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"version": 2}', "version 2 is not 1"),
        (json.dumps({**json.loads(STATE.to_json()), "method": "carrier-pigeon"}).encode(), "unknown method"),
        (json.dumps({**json.loads(STATE.to_json()), "serial": ""}).encode(), "'serial' is not a non-empty string"),
        (json.dumps({**json.loads(STATE.to_json()), "not_after": "soon"}).encode(), "not an ISO-8601 time"),
    ],
)
def test_state_that_is_not_ours_is_refused_with_a_reason(document: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_state(document)


def _install(ca: TestCA, out: Path, *, state: AgentState | None, key: ec.EllipticCurvePrivateKey | None = None) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue(key.public_key(), not_before=T0, not_after=T0 + timedelta(days=1), uri="spiffe://t/m")
    serial = format(cert.serial_number, "x")
    if state is not None:
        state = dataclasses.replace(state, serial=serial)
    install_credentials(
        out,
        CredentialSet(key_pem(key), pem(cert).encode(), pem(ca.issuing).encode(), pem(ca.root).encode(),
                      state=state.to_json() if state else b""),
    )  # fmt: skip
    return serial


def test_read_current_returns_the_pair_and_its_state(ca: TestCA, tmp_path: Path) -> None:
    out = prepare_out_dir(tmp_path / "out")
    assert read_current(out) is None
    assert read_current(tmp_path / "missing") is None
    serial = _install(ca, out, state=STATE)
    current = read_current(out)
    assert current is not None
    assert current.serial == serial and current.state is not None and current.state.server_id == "issuer.example.org"
    # The mTLS files are those of this very generation, not the switchable names.
    assert current.client_certificate.fullchain.parent.name.startswith(".gen-")


def test_a_state_for_another_certificate_is_ignored(ca: TestCA, tmp_path: Path) -> None:
    out = prepare_out_dir(tmp_path / "out")
    _install(ca, out, state=None)
    (out / ".live" / "issuer.json").write_bytes(STATE.to_json())  # by hand, for serial 5d60ce9d
    current = read_current(out)
    assert current is not None and current.state is None


def test_plain_files_of_an_older_layout_are_read(ca: TestCA, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue(key.public_key(), not_before=T0, not_after=T0 + timedelta(days=1), uri="spiffe://t/m")
    (tmp_path / "key.pem").write_bytes(key_pem(key))
    (tmp_path / "cert.pem").write_text(pem(cert))
    current = read_current(tmp_path)
    assert current is not None and current.state is None and current.serial == format(cert.serial_number, "x")


@pytest.mark.parametrize(
    ("damage", "code"),
    [
        (lambda live: (live / "key.pem").unlink(), "key_missing"),
        (lambda live: (live / "key.pem").write_bytes(key_pem(ec.generate_private_key(ec.SECP256R1()))), "key_mismatch"),
        (lambda live: (live / "key.pem").write_text("not a key"), "key_unreadable"),
        (lambda live: (live / "cert.pem").write_text("not a certificate"), "certificate_unreadable"),
        (lambda live: (live / "issuer.json").write_text("{"), "state_unreadable"),
    ],
)
def test_broken_files_are_a_configuration_error_not_a_fresh_start(
    ca: TestCA, tmp_path: Path, damage, code: str
) -> None:  # type: ignore[no-untyped-def]
    out = prepare_out_dir(tmp_path / "out")
    _install(ca, out, state=STATE)
    live = (out / ".live").resolve()
    for name in ("key.pem", "cert.pem", "issuer.json"):
        (live / name).chmod(0o600)
    damage(live)
    with pytest.raises(ConfigError) as err:
        read_current(out)
    assert err.value.code == code and err.value.exit_status == EX_CONFIG
