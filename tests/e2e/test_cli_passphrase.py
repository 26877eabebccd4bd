"""The CA passphrase never sits beside the keys it unlocks: ``ca init`` generates it in the user's
config home (or ``--passphrase-file``), refuses a path inside the state directory, says where it
is, and a file an earlier release left in the state directory still works, with a warning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.cli import cli_env, issuer, ok, one_line_error, serve
from tests.support.moto_server import free_port


@pytest.fixture
def env(tmp_path: Path, pg_url: str) -> dict[str, str]:
    return cli_env(tmp_path, pg_url, passphrase=None)


def passphrases_in(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if "passphrase" in p.name]


def test_ca_init_generates_the_passphrase_in_the_config_home_not_the_state_dir(
    tmp_path: Path, env: dict[str, str]
) -> None:
    shown = ok("ca", "init", env=env)
    generated = tmp_path / "config" / "issuer" / "ca-passphrase"
    assert (
        f"passphrase: generated into {generated} (mode 0600), apart from the keys in {tmp_path / 'state' / 'ca'}"
        in shown
    )
    assert generated.stat().st_mode & 0o777 == 0o600 and len(generated.read_bytes().strip()) >= 32
    assert passphrases_in(tmp_path / "state") == []
    ok("ca", "rotate", env=env)  # finds it again where it put it
    assert generated.read_bytes().strip()  # and never rewrote it


def test_a_passphrase_file_outside_the_state_dir(tmp_path: Path, env: dict[str, str]) -> None:
    secret = tmp_path / "secrets" / "issuer-ca"
    shown = ok("ca", "init", "--passphrase-file", str(secret), env=env)
    assert f"passphrase: generated into {secret}" in shown
    assert f"ISSUER_CA_PASSPHRASE_FILE={secret}" in shown  # what serve and rotate need
    assert not (tmp_path / "config").exists() and passphrases_in(tmp_path / "state") == []
    refused = issuer("ca", "rotate", env=env)  # without the variable the default file is not there
    assert "no CA passphrase" in one_line_error(refused)
    ok("ca", "rotate", env={**env, "ISSUER_CA_PASSPHRASE_FILE": str(secret)})


@pytest.mark.parametrize("where", ["state/ca-passphrase", "state/ca/passphrase"])
def test_a_passphrase_file_in_the_state_dir_is_refused(tmp_path: Path, env: dict[str, str], where: str) -> None:
    line = one_line_error(issuer("ca", "init", "--passphrase-file", str(tmp_path / where), env=env))
    assert "inside the state directory" in line and "beside the keys" in line
    assert passphrases_in(tmp_path) == []
    assert not (tmp_path / "state" / "ca" / "issuing.key.pem").exists()
    line = one_line_error(issuer("ca", "init", env={**env, "ISSUER_CA_PASSPHRASE_FILE": str(tmp_path / where)}))
    assert "inside the state directory" in line


def test_an_existing_default_passphrase_is_reused_never_overwritten(tmp_path: Path, env: dict[str, str]) -> None:
    kept = tmp_path / "config" / "issuer" / "ca-passphrase"
    kept.parent.mkdir(parents=True)
    kept.write_text("an-operators-own-passphrase-0123456789\n")
    shown = ok("ca", "init", "--force", env=env)
    assert f"passphrase: from {kept}" in shown
    assert kept.read_text() == "an-operators-own-passphrase-0123456789\n"


def test_a_passphrase_left_in_the_state_dir_by_an_earlier_release_still_works(
    tmp_path: Path, env: dict[str, str]
) -> None:
    ok("ca", "init", env=env)
    generated = tmp_path / "config" / "issuer" / "ca-passphrase"
    legacy = tmp_path / "state" / "ca-passphrase"
    generated.rename(legacy)  # where releases before this one put it
    rotated = issuer("ca", "rotate", env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert f"the CA passphrase is read from {legacy}, beside the keys it unlocks; move it to {generated}" in (
        rotated.stderr
    )


def test_the_embedded_default_keeps_its_generated_passphrase_out_of_the_state_dir(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISSUER_")}
    env |= {"ISSUER_STATE_DIR": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    server = serve(env, free_port())  # no configuration at all: SQLite and a development CA
    try:
        assert (tmp_path / "state" / "ca" / "issuing.key.pem").exists()
        assert (tmp_path / "config" / "issuer" / "ca-passphrase").stat().st_mode & 0o777 == 0o600
        assert passphrases_in(tmp_path / "state") == []
    finally:
        server.terminate()
        server.wait(timeout=30)
