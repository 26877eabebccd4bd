"""Where the CA's passphrase comes from, and the embedded default's development CA.

Passphrase, in order (read into the settings by ``load_settings``):
``ISSUER_CA_PASSPHRASE``, the file named by ``ISSUER_CA_PASSPHRASE_FILE``, else
``<state_dir>/ca-passphrase`` — generated (mode 0600) when the CA is initialised
without either variable, which is what the embedded default does.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from ca.files import CAFiles, generate_passphrase, init_ca
from issuer.errors import ConfigError
from issuer.settings import Settings

PASSPHRASE_FILE = "ca-passphrase"


def passphrase_path(settings: Settings) -> Path:
    return settings.state_dir / PASSPHRASE_FILE


def read_passphrase(settings: Settings) -> bytes:
    """The CA passphrase (see :class:`Settings`); raises ConfigError saying where it looked."""
    if settings.ca_passphrase is not None:
        return settings.ca_passphrase.reveal()
    path = settings.ca_passphrase_file or passphrase_path(settings)
    try:
        value = path.read_bytes().strip()
    except FileNotFoundError:
        raise ConfigError(
            f"no CA passphrase: set ISSUER_CA_PASSPHRASE or ISSUER_CA_PASSPHRASE_FILE, or create {path}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the CA passphrase file {path}: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"the CA passphrase file {path} is empty")
    return value


def ensure_state_dir(settings: Settings) -> None:
    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def generate_passphrase_file(settings: Settings, *, replace: bool = False) -> Path | None:
    """Write a new random passphrase to ``<state_dir>/ca-passphrase`` (mode 0600) when none is configured.

    Only when neither ``ISSUER_CA_PASSPHRASE`` nor ``ISSUER_CA_PASSPHRASE_FILE`` is set, and the file
    is missing (or ``replace``). Returns the path when it wrote one, else None.
    """
    if settings.ca_passphrase is not None or settings.ca_passphrase_file is not None:
        return None
    path = passphrase_path(settings)
    if path.exists() and not replace:
        return None
    ensure_state_dir(settings)
    # Without ``replace``, never overwrite a file another process created meanwhile.
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    with os.fdopen(os.open(path, flags, 0o600), "wb") as stream:
        stream.write(generate_passphrase() + b"\n")
        stream.flush()
        os.fsync(stream.fileno())
    return path


def initialise_ca(
    settings: Settings,
    *,
    now: datetime,
    root_validity: timedelta,
    issuing_validity: timedelta,
    organization: str | None = None,
    force: bool = False,
) -> tuple[CAFiles, Path | None]:
    """Create the root and issuing CA in ``settings.ca_dir``.

    Returns the files and, when this call generated the passphrase file, its path.
    """
    ensure_state_dir(settings)
    generated = generate_passphrase_file(settings, replace=force)
    files = init_ca(
        settings.ca_dir,
        passphrase=read_passphrase(settings),
        now=now,
        root_validity=root_validity,
        issuing_validity=issuing_validity,
        root_common_name=f"{settings.trust_domain} Root CA",
        issuing_common_name=f"{settings.trust_domain} Issuing CA",
        organization=organization,
        force=force,
    )
    return files, generated
