"""The local-file CA: creating, loading and describing it on disk."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca import (
    CAKeyError,
    CAStateError,
    LeafTemplate,
    describe_ca,
    generate_passphrase,
    init_ca,
    load_local_signer,
)
from tests.support.signing import sign
from tests.support.x509_check import openssl_verify, pem, verify_client_chain

NOW = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)
PASSPHRASE = b"correct horse battery staple"
CA_FILES = {"root.pem", "root.key.pem", "issuing.pem", "issuing.key.pem"}


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "state" / "ca"
    init_ca(directory, passphrase=PASSPHRASE, now=NOW, organization="Example Corp")
    return directory


@pytest.fixture
def open_umask() -> Iterator[None]:
    # With umask 0 the modes we see are exactly the ones the code asked for.
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_init_then_load_issues_verifiable_leaves(ca_dir: Path) -> None:
    signer = load_local_signer(ca_dir, passphrase=PASSPHRASE)
    assert signer.issuer_certificate == x509.load_pem_x509_certificate((ca_dir / "issuing.pem").read_bytes())
    assert signer.roots == (x509.load_pem_x509_certificate((ca_dir / "root.pem").read_bytes()),)
    assert signer.chain == (signer.issuer_certificate,)

    key = ec.generate_private_key(ec.SECP256R1())
    template = LeafTemplate(
        common_name="build-01",
        uri_sans=("spiffe://example.org/onprem/build-01",),
        not_before=NOW - timedelta(seconds=60),
        not_after=NOW + timedelta(hours=24),
    )
    leaf = await sign(signer, template, key.public_key())
    verify_client_chain(leaf, signer.chain, signer.roots, NOW)
    openssl_verify(pem([leaf]), pem(signer.chain), pem(signer.roots), attime=NOW)


def test_files_and_directory_are_private(tmp_path: Path, open_umask: None) -> None:
    directory = tmp_path / "a" / "ca"
    files = init_ca(directory, passphrase=PASSPHRASE, now=NOW)
    assert _mode(directory) == 0o700
    assert {p.name for p in directory.iterdir()} == CA_FILES  # no temporary files left behind
    for path in files.all_paths:
        assert _mode(path) == 0o600, path


def test_an_existing_open_directory_is_tightened(tmp_path: Path, open_umask: None) -> None:
    directory = tmp_path / "ca"
    directory.mkdir(mode=0o755)
    init_ca(directory, passphrase=PASSPHRASE, now=NOW)
    assert _mode(directory) == 0o700


def test_refuses_to_overwrite_unless_forced(ca_dir: Path) -> None:
    before = {name: (ca_dir / name).read_bytes() for name in CA_FILES}
    with pytest.raises(CAStateError) as excinfo:
        init_ca(ca_dir, passphrase=PASSPHRASE, now=NOW)
    assert excinfo.value.code == "ca_exists"
    assert {name: (ca_dir / name).read_bytes() for name in CA_FILES} == before

    init_ca(ca_dir, passphrase=PASSPHRASE, now=NOW, force=True)
    for name in CA_FILES:
        assert (ca_dir / name).read_bytes() != before[name]
        assert _mode(ca_dir / name) == 0o600
    load_local_signer(ca_dir, passphrase=PASSPHRASE)


def test_one_leftover_file_counts_as_an_existing_ca(tmp_path: Path) -> None:
    (tmp_path / "root.pem").write_bytes(b"whatever was here")
    with pytest.raises(CAStateError) as excinfo:
        init_ca(tmp_path, passphrase=PASSPHRASE, now=NOW)
    assert excinfo.value.code == "ca_exists"


def test_wrong_passphrase(ca_dir: Path) -> None:
    with pytest.raises(CAKeyError) as excinfo:
        load_local_signer(ca_dir, passphrase=b"not the passphrase at all")
    assert excinfo.value.code == "ca_passphrase_wrong"
    assert excinfo.value.status_hint == 500


@pytest.mark.parametrize(("passphrase", "code"), [(b"", "ca_passphrase_empty"), (b"short", "ca_passphrase_weak")])
def test_empty_or_short_passphrase_refused_at_init(tmp_path: Path, passphrase: bytes, code: str) -> None:
    with pytest.raises(CAKeyError) as excinfo:
        init_ca(tmp_path / "ca", passphrase=passphrase, now=NOW)
    assert excinfo.value.code == code
    assert not (tmp_path / "ca").exists()


def test_missing_ca(tmp_path: Path) -> None:
    for directory in (tmp_path / "nowhere", tmp_path):
        with pytest.raises(CAStateError) as excinfo:
            load_local_signer(directory, passphrase=PASSPHRASE)
        assert excinfo.value.code == "ca_not_initialised"
        with pytest.raises(CAStateError) as excinfo:
            describe_ca(directory)
        assert excinfo.value.code == "ca_not_initialised"


def test_private_keys_are_really_encrypted(ca_dir: Path) -> None:
    for name in ("root.key.pem", "issuing.key.pem"):
        data = (ca_dir / name).read_bytes()
        assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert PASSPHRASE not in data
        with pytest.raises(TypeError, match="encrypted"):
            serialization.load_pem_private_key(data, password=None)
        assert isinstance(serialization.load_pem_private_key(data, password=PASSPHRASE), ec.EllipticCurvePrivateKey)


def test_the_root_key_may_live_offline(ca_dir: Path) -> None:
    (ca_dir / "root.key.pem").unlink()
    load_local_signer(ca_dir, passphrase=PASSPHRASE)
    assert describe_ca(ca_dir).root_key_present is False


def _other_ca(tmp_path: Path) -> Path:
    other = tmp_path / "other"
    init_ca(other, passphrase=PASSPHRASE, now=NOW)
    return other


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (
            lambda d, o: (d / "issuing.key.pem").write_bytes((o / "issuing.key.pem").read_bytes()),
            "does not hold the key",
        ),
        (lambda d, o: (d / "root.pem").write_bytes((o / "root.pem").read_bytes()), "not signed by a root"),
        (lambda d, o: (d / "issuing.key.pem").unlink(), "issuing.key.pem is missing"),
        (lambda d, o: (d / "issuing.pem").unlink(), "issuing.pem is missing"),
        (lambda d, o: (d / "issuing.pem").write_bytes(b"garbage"), "does not hold PEM certificates"),
        (lambda d, o: (d / "issuing.key.pem").write_bytes(_plain_key(d, PASSPHRASE)), "not an encrypted"),
    ],
    ids=["key-from-another-ca", "root-from-another-ca", "key-missing", "cert-missing", "garbage-cert", "plain-key"],
)
def test_corrupt_files_are_reported(tmp_path: Path, ca_dir: Path, damage: object, words: str) -> None:
    damage(ca_dir, _other_ca(tmp_path))  # type: ignore[operator]
    with pytest.raises(CAStateError) as excinfo:
        load_local_signer(ca_dir, passphrase=PASSPHRASE)
    assert excinfo.value.code == "ca_files_corrupt"
    assert words in excinfo.value.detail


def _plain_key(directory: Path, passphrase: bytes) -> bytes:
    key = serialization.load_pem_private_key((directory / "issuing.key.pem").read_bytes(), password=passphrase)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_describe_ca(ca_dir: Path) -> None:
    root = x509.load_pem_x509_certificate((ca_dir / "root.pem").read_bytes())
    issuing = x509.load_pem_x509_certificate((ca_dir / "issuing.pem").read_bytes())
    info = describe_ca(ca_dir)
    assert info.directory == ca_dir
    assert info.root_key_present is True
    assert info.root.subject == "CN=Issuer Root CA,O=Example Corp"
    assert info.issuing.subject == "CN=Issuer Issuing CA,O=Example Corp"
    assert (info.root.key_type, info.issuing.key_type) == ("ec-p384", "ec-p256")
    assert info.root.serial == root.serial_number
    assert info.issuing.serial_hex == f"{issuing.serial_number:x}"
    assert info.root.sha256_fingerprint == root.fingerprint(hashes.SHA256()).hex()
    assert info.issuing.sha256_fingerprint == issuing.fingerprint(hashes.SHA256()).hex()
    assert info.root.not_after == root.not_valid_after_utc
    assert info.issuing.not_before == issuing.not_valid_before_utc
    assert info.issuing.not_after - info.issuing.not_before == timedelta(days=365, minutes=5)


def test_validity_and_names_are_configurable(tmp_path: Path) -> None:
    init_ca(
        tmp_path,
        passphrase=PASSPHRASE,
        now=NOW,
        root_validity=timedelta(days=730),
        issuing_validity=timedelta(days=30),
        root_common_name="Acme Machines Root",
        issuing_common_name="Acme Machines Issuing 2031",
    )
    info = describe_ca(tmp_path)
    assert info.root.subject == "CN=Acme Machines Root"
    assert info.issuing.subject == "CN=Acme Machines Issuing 2031"
    assert info.root.not_after == NOW + timedelta(days=730)
    assert info.issuing.not_after == NOW + timedelta(days=30)


def test_generated_passphrases() -> None:
    passphrases = {generate_passphrase() for _ in range(16)}
    assert len(passphrases) == 16
    for passphrase in passphrases:
        # 32 random bytes in URL-safe base64 without padding: 43 characters.
        assert re.fullmatch(rb"[A-Za-z0-9_-]{43}", passphrase)
