"""Where issuing keys come from: a ``key_ref`` in the registry names the backend and the key.

- ``file:<path>`` — an encrypted PKCS#8 key file, decrypted with the CA passphrase; a
  relative path is relative to the CA directory (``<state_dir>/ca``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from ca.files import load_key_file
from ca.signer import LocalFileSigner, Signer
from issuer.errors import ConfigError
from issuer.store.records import IssuerRecord

__all__ = ["KeySigners", "file_key_ref", "resolve_file_ref"]


def file_key_ref(path: Path, *, ca_dir: Path) -> str:
    """The ``key_ref`` of a key file: relative to ``ca_dir`` when it lies inside it."""
    try:
        return f"file:{path.resolve().relative_to(ca_dir.resolve())}"
    except ValueError:
        return f"file:{path.resolve()}"


def resolve_file_ref(key_ref: str, *, ca_dir: Path) -> Path:
    path = Path(key_ref.removeprefix("file:"))
    return path if path.is_absolute() else ca_dir / path


class KeySigners:
    """The :class:`~issuer.service.registry.SignerLoader` for every key backend this build knows.

    ``passphrase`` is called only when a file key must be decrypted.
    """

    def __init__(self, *, ca_dir: Path, passphrase: Callable[[], bytes]) -> None:
        self._ca_dir = ca_dir
        self._passphrase = passphrase

    async def __call__(
        self,
        issuer: IssuerRecord,
        *,
        certificate: x509.Certificate,
        chain: tuple[x509.Certificate, ...],
        roots: tuple[x509.Certificate, ...],
    ) -> Signer:
        if issuer.key_ref.startswith("file:"):
            key = load_key_file(resolve_file_ref(issuer.key_ref, ca_dir=self._ca_dir), passphrase=self._passphrase())
            try:
                return LocalFileSigner(issuer_certificate=certificate, issuer_key=key, roots=roots, chain=chain)
            except ValueError as exc:
                raise ConfigError(f"issuing CA {issuer.subject}: {issuer.key_ref} is not its key ({exc})") from None
        scheme = issuer.key_ref.split(":", 1)[0]
        raise ConfigError(f"issuing CA {issuer.subject}: unknown key backend {scheme!r} in key_ref {issuer.key_ref!r}")
