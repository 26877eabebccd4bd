"""What is installed in the output directory: read the live set, install a new one.

:func:`read_current` reads the key, the certificate and ``issuer.json`` of one
generation (never a mix of two) and checks that they belong together;
:func:`install_issued` writes a checked issuance and its ``issuer.json`` as the
next generation. Bootstrap and renewal both end in :func:`install_issued`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from clients.agent.denial import clear_denial
from clients.agent.files import (
    CERT_FILE,
    FULLCHAIN_FILE,
    KEY_FILE,
    STATE_FILE,
    CredentialSet,
    WrittenFiles,
    install_credentials,
    live_directory,
)
from clients.agent.http import ClientCertificate
from clients.agent.issued import IssuedCertificate
from clients.agent.state import AgentState, parse_state
from clients.errors import ConfigError
from clients.keys import PrivateKey, private_key_pem, same_public_key

__all__ = ["CurrentCredentials", "install_issued", "read_current", "serial_hex"]

# A writer may switch generations and prune the old one while we read it; read again then.
_READ_ATTEMPTS: Final = 3


@dataclass(frozen=True)
class CurrentCredentials:
    """The live key and certificate, and ``issuer.json`` when it describes this certificate."""

    key: PrivateKey
    certificate: x509.Certificate
    state: AgentState | None
    # Files of this very generation, for presenting the pair over mTLS.
    client_certificate: ClientCertificate

    @property
    def serial(self) -> str:
        return serial_hex(self.certificate)

    @property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def renew_after(self) -> datetime | None:
        """The issuer's ``renew_after`` from ``issuer.json``; None without one."""
        return self.state.renew_after if self.state else None


def serial_hex(certificate: x509.Certificate) -> str:
    """The serial as the issuer writes it: lowercase hex, no leading zeros."""
    return format(certificate.serial_number, "x")


def read_current(out_dir: Path) -> CurrentCredentials | None:
    """The installed pair in ``out_dir``, or None when there is no certificate yet.

    Raises :class:`ConfigError` (exit 78) when a certificate is there but cannot be
    used: no or an unreadable key, a key that does not match, a file that does not
    parse, an ``issuer.json`` that does not parse. A person must look: replacing the
    files could throw away the only working pair.
    """
    for _ in range(_READ_ATTEMPTS):
        live = live_directory(out_dir)
        if not live.is_dir():
            if live == out_dir:
                return None  # nothing installed yet
            continue  # switched and pruned under us; the next resolve finds the new set
        try:
            return _read(live)
        except FileNotFoundError:
            continue
    raise ConfigError(f"the files in {out_dir} keep changing while being read", code="out_dir_busy")


def _read(live: Path) -> CurrentCredentials | None:
    if not (live / CERT_FILE).exists():
        if live.is_dir():
            return None
        raise FileNotFoundError(live)  # pruned between the resolve and now: read again
    try:
        cert_pem = (live / CERT_FILE).read_bytes()
    except FileNotFoundError:
        raise  # pruned: read again
    except OSError as exc:
        raise ConfigError(f"cannot read {live / CERT_FILE}: {exc.strerror}", code="certificate_unreadable") from None
    try:
        key_pem = (live / KEY_FILE).read_bytes()
    except FileNotFoundError:
        if not live.is_dir():
            raise  # pruned: read again
        raise ConfigError(
            f"{live / CERT_FILE} exists but {KEY_FILE} does not; restore the key or bootstrap into an empty directory",
            code="key_missing",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {live / KEY_FILE}: {exc.strerror}", code="key_unreadable") from None
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ConfigError(
            f"{live / CERT_FILE} is not a PEM certificate: {exc}", code="certificate_unreadable"
        ) from None
    key = _load_key(key_pem, live / KEY_FILE)
    if not same_public_key(certificate, key):
        raise ConfigError(f"{KEY_FILE} and {CERT_FILE} in {live} do not belong together", code="key_mismatch")
    state = _read_state(live / STATE_FILE)
    if state is not None and state.serial.lower() != serial_hex(certificate):
        state = None  # describes another certificate (written by hand?): its renew_after does not apply
    return CurrentCredentials(
        key=key,
        certificate=certificate,
        state=state,
        client_certificate=ClientCertificate(fullchain=live / FULLCHAIN_FILE, key=live / KEY_FILE),
    )


def _load_key(pem: bytes, path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key: {exc}", code="key_unreadable") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ConfigError(f"{path} is a {type(key).__name__}; the agent uses EC and RSA keys", code="key_unsupported")
    return key


def _read_state(path: Path) -> AgentState | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None  # bootstrapped by an agent that did not write it yet
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", code="state_unreadable") from None
    try:
        return parse_state(raw)
    except ValueError as exc:
        raise ConfigError(f"{path} is not usable ({exc}); fix or delete it", code="state_unreadable") from None


def install_issued(out_dir: Path, *, key: PrivateKey, issued: IssuedCertificate, state: AgentState) -> WrittenFiles:
    """Install ``key`` with the checked ``issued`` certificate and ``state`` as the next generation.

    Raises :class:`clients.errors.FilesystemError`; the previous set stays live then. A note
    that the issuer denied this machine (:mod:`clients.agent.denial`) is out of date then: removed.
    """
    written = install_credentials(
        out_dir,
        CredentialSet(
            key_pem=private_key_pem(key),
            cert_pem=issued.certificate_pem.encode("ascii"),
            chain_pem=issued.chain_pem.encode("ascii"),
            bundle_pem=issued.bundle_pem.encode("ascii"),
            state=state.to_json(),
        ),
    )
    clear_denial(out_dir)
    return written
