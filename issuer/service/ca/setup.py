"""Where the CA's passphrase comes from — never the state directory that holds the keys — and the
embedded default's development CA.

Passphrase, in order (read into the settings by ``load_settings``): ``ISSUER_CA_PASSPHRASE``;
the file named by ``ISSUER_CA_PASSPHRASE_FILE`` (or ``issuer ca init --passphrase-file``);
else the user's ``$XDG_CONFIG_HOME/issuer/ca-passphrase`` (``~/.config/issuer/ca-passphrase``).
``ca init`` generates it (mode 0600, never overwriting one) where none exists yet, and refuses to
put it inside the state directory: whoever copies the state directory (a backup, a volume
snapshot, a replica's secret volume) must not get the key files and what unlocks them together.
A ``<state_dir>/ca-passphrase`` left by an earlier release is still read, with a warning to move it.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from pathlib import Path

from ca.files import CAFiles, generate_passphrase, init_ca
from issuer.errors import ConfigError
from issuer.settings import Settings, default_passphrase_file

__all__ = [
    "LEGACY_PASSPHRASE_FILE",
    "describe_passphrase",
    "ensure_state_dir",
    "generate_passphrase_file",
    "initialise_ca",
    "passphrase_path",
    "read_passphrase",
]

log = logging.getLogger("issuer.ca")

# Where releases before 2026-12 generated it: beside the keys. Read (with a warning), never written.
LEGACY_PASSPHRASE_FILE = "ca-passphrase"


def passphrase_path(settings: Settings) -> Path:
    """The passphrase file this configuration reads (and ``ca init`` generates when it is missing)."""
    return settings.ca_passphrase_file or settings.default_passphrase_file or default_passphrase_file(os.environ)


def _inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


def read_passphrase(settings: Settings) -> bytes:
    """The CA passphrase (see the module docstring); raises ConfigError saying where it looked."""
    if settings.ca_passphrase is not None:
        return settings.ca_passphrase.reveal()
    path = passphrase_path(settings)
    legacy = settings.state_dir / LEGACY_PASSPHRASE_FILE
    if settings.ca_passphrase_file is None and not path.exists() and legacy.exists():
        log.warning(
            "the CA passphrase is read from %s, beside the keys it unlocks; move it to %s "
            "(or point ISSUER_CA_PASSPHRASE_FILE at a secret)",
            legacy,
            path,
        )
        path = legacy
    elif _inside(path, settings.state_dir):
        log.warning("the CA passphrase file %s is inside the state directory, beside the keys it unlocks", path)
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


def describe_passphrase(settings: Settings, *, generated: Path | None) -> str:
    """Where the CA passphrase is, for what ``ca init`` prints."""
    if generated is not None:
        return (
            f"generated into {generated} (mode 0600), apart from the keys in {settings.ca_dir}; "
            "keep them apart in backups too"
        )
    if settings.ca_passphrase is not None:
        return "from ISSUER_CA_PASSPHRASE"
    return f"from {passphrase_path(settings)}"


def ensure_state_dir(settings: Settings) -> None:
    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def generate_passphrase_file(settings: Settings) -> Path | None:
    """Write a new random passphrase (mode 0600) to :func:`passphrase_path` when none is configured.

    Only when ``ISSUER_CA_PASSPHRASE`` is not set and the file does not exist; an existing file is
    never overwritten (several state directories may share the user's default one). Returns the
    path when it wrote one, else None. Raises :class:`ConfigError` ``passphrase_beside_keys`` when
    the file would be inside the state directory.
    """
    if settings.ca_passphrase is not None:
        return None
    path = passphrase_path(settings)
    if path.exists():
        return None
    if _inside(path, settings.state_dir):
        raise ConfigError(
            f"will not write the CA passphrase to {path}: it is inside the state directory "
            f"{settings.state_dir}, beside the keys it unlocks; choose a path outside it",
            code="passphrase_beside_keys",
        )
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Never overwrite a file another process created meanwhile.
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    with os.fdopen(descriptor, "wb") as stream:
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
    generated = generate_passphrase_file(settings)
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
