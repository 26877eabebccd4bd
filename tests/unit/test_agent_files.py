"""The agent's output directory: modes, contents, atomic replacement, no leftovers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from clients.agent.files import (
    CredentialSet,
    atomic_write,
    install_credentials,
    prepare_out_dir,
    read_nonce,
    store_nonce,
)
from clients.errors import EX_CONFIG, ConfigError, FilesystemError

NAMES = {"key.pem", "cert.pem", "chain.pem", "bundle.pem", "fullchain.pem"}


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def creds(tag: str) -> CredentialSet:
    return CredentialSet(
        key_pem=f"KEY {tag}\n".encode(),
        cert_pem=f"CERT {tag}\n".encode(),
        chain_pem=f"CHAIN {tag}\n".encode(),
        bundle_pem=f"ROOTS {tag}\n".encode(),
    )


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_out_dir_is_created_0700_even_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        out = prepare_out_dir(tmp_path / "a" / "b")
    finally:
        os.umask(old)
    assert mode(out) == 0o700


def test_out_dir_writable_by_others_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigError) as err:
        prepare_out_dir(shared)
    assert err.value.code == "out_dir_insecure"
    assert err.value.exit_status == EX_CONFIG


def test_out_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError) as err:
        prepare_out_dir(tmp_path / "f")
    assert err.value.code == "out_dir_invalid"


def test_out_dir_under_a_file_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError) as err:
        prepare_out_dir(tmp_path / "f" / "out")
    assert err.value.code == "out_dir_unusable"


def test_install_writes_every_file_with_its_mode_and_content(tmp_path: Path, umask_022: None) -> None:
    out = prepare_out_dir(tmp_path / "out")
    written = install_credentials(out, creds("1"))

    assert written.key.read_bytes() == b"KEY 1\n"
    assert written.cert.read_bytes() == b"CERT 1\n"
    assert written.chain.read_bytes() == b"CHAIN 1\n"
    assert written.bundle.read_bytes() == b"ROOTS 1\n"
    assert written.fullchain.read_bytes() == b"CERT 1\nCHAIN 1\n"
    assert mode(written.key) == 0o600
    for public in (written.cert, written.chain, written.bundle, written.fullchain):
        assert mode(public) == 0o644
    assert mode(out) == 0o700


def test_key_is_created_0600_not_chmodded_later(tmp_path: Path) -> None:
    # Under umask 0 a create-then-chmod writer would briefly leave a 0666 key; ours
    # creates it with 0600, which survives any umask.
    old = os.umask(0)
    try:
        out = prepare_out_dir(tmp_path / "out")
        written = install_credentials(out, creds("1"))
    finally:
        os.umask(old)
    assert mode(written.key) == 0o600


def test_a_second_install_replaces_the_first_and_leaves_no_temp_files(tmp_path: Path) -> None:
    out = prepare_out_dir(tmp_path / "out")
    install_credentials(out, creds("1"))
    written = install_credentials(out, creds("2"))

    assert written.key.read_bytes() == b"KEY 2\n"
    assert written.fullchain.read_bytes() == b"CERT 2\nCHAIN 2\n"
    entries = {p.name for p in out.iterdir()}
    generations = [n for n in entries if n.startswith(".gen-")]
    assert len(generations) == 1, entries  # the old set is gone
    assert entries - NAMES - set(generations) == {".live", ".lock"}
    assert not [n for n in entries if ".tmp" in n]
    assert {p.name for p in (out / generations[0]).iterdir()} == NAMES


def test_plain_files_from_elsewhere_are_replaced(tmp_path: Path) -> None:
    out = prepare_out_dir(tmp_path / "out")
    (out / "cert.pem").write_text("OLD CERT\n")
    (out / "key.pem").write_text("OLD KEY\n")
    written = install_credentials(out, creds("new"))
    assert written.cert.read_bytes() == b"CERT new\n"
    assert written.key.read_bytes() == b"KEY new\n"
    assert mode(written.key) == 0o600


def test_key_and_cert_always_come_from_one_set(tmp_path: Path) -> None:
    # Every stable name resolves through the single .live link, so switching it
    # switches the key and the certificate together.
    out = prepare_out_dir(tmp_path / "out")
    install_credentials(out, creds("1"))
    for name in NAMES:
        assert os.readlink(out / name) == f".live/{name}"
    live = os.readlink(out / ".live")
    assert (out / "key.pem").resolve().parent == (out / live).resolve()
    assert (out / "cert.pem").resolve().parent == (out / live).resolve()


def test_a_crashed_earlier_attempt_is_tidied(tmp_path: Path) -> None:
    out = prepare_out_dir(tmp_path / "out")
    install_credentials(out, creds("1"))
    stale = out / ".gen-crashed"
    stale.mkdir()
    (stale / "key.pem").write_text("half")
    install_credentials(out, creds("2"))
    assert not stale.exists()


def test_atomic_write_replaces_and_sets_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("old")
    target.chmod(0o644)
    atomic_write(target, b"new", mode=0o600)
    assert target.read_bytes() == b"new"
    assert mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_atomic_write_failure_names_the_path(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "f"
    with pytest.raises(FilesystemError) as err:
        atomic_write(target, b"x", mode=0o600)
    assert str(target) in err.value.message
    assert [p.name for p in tmp_path.iterdir()] == []


def test_nonce_round_trip_is_0600(tmp_path: Path) -> None:
    assert read_nonce(tmp_path) is None
    path = store_nonce(tmp_path, "n-1")
    assert read_nonce(tmp_path) == "n-1"
    assert mode(path) == 0o600
    store_nonce(tmp_path, "n-2")
    assert read_nonce(tmp_path) == "n-2"


def test_an_empty_nonce_file_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    (tmp_path / "instance-nonce").write_text("\n")
    with pytest.raises(ConfigError) as err:
        read_nonce(tmp_path)
    assert err.value.code == "nonce_unreadable"
