"""The agent's output directory: crash-safe writes of the key, the certificates and the nonce.

Layout (the same trick as the kubelet's atomic volume writer)::

    DIR/key.pem        -> .live/key.pem        0600
    DIR/cert.pem       -> .live/cert.pem       0644
    DIR/chain.pem      -> .live/chain.pem      0644
    DIR/bundle.pem     -> .live/bundle.pem     0644
    DIR/fullchain.pem  -> .live/fullchain.pem  0644  (leaf + chain)
    DIR/issuer.json    -> .live/issuer.json    0644  (where it came from and when to renew; no secrets)
    DIR/.live          -> .gen-XXXXXXXX        the one name that is switched
    DIR/.gen-XXXXXXXX/                         one complete set, 0700
    DIR/instance-nonce                         0600, a plain file (EC2 only)

Why: renaming key.pem and cert.pem one after the other always leaves a moment
(and after a crash, a state) where the key on disk does not match the certificate.
Here a new set is written and fsynced in a fresh directory, then one rename of the
``.live`` symlink switches every file at once; before it readers see the old set,
after it the new one, never a mix. Only a switch from plain files left by an older
layout goes file by file, once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from clients.errors import ConfigError, FilesystemError

__all__ = [
    "BUNDLE_FILE",
    "CERT_FILE",
    "CHAIN_FILE",
    "FULLCHAIN_FILE",
    "KEY_FILE",
    "NONCE_FILE",
    "STATE_FILE",
    "CredentialSet",
    "WrittenFiles",
    "atomic_write",
    "install_credentials",
    "live_directory",
    "prepare_out_dir",
    "read_nonce",
    "store_nonce",
]

KEY_FILE: Final = "key.pem"
CERT_FILE: Final = "cert.pem"
CHAIN_FILE: Final = "chain.pem"
BUNDLE_FILE: Final = "bundle.pem"
FULLCHAIN_FILE: Final = "fullchain.pem"
NONCE_FILE: Final = "instance-nonce"
STATE_FILE: Final = "issuer.json"
_LIVE: Final = ".live"
_GEN_PREFIX: Final = ".gen-"
_LOCK: Final = ".lock"
_PRIVATE: Final = 0o600
_PUBLIC: Final = 0o644


@dataclass(frozen=True)
class CredentialSet:
    """PEM bytes of one issuance, all for the same key, and the agent's note about it.

    ``state`` is the JSON of :class:`clients.agent.state.AgentState`; it goes into
    the same generation so that it always describes the certificate beside it.
    """

    key_pem: bytes
    cert_pem: bytes
    chain_pem: bytes
    bundle_pem: bytes
    state: bytes = b""

    def files(self) -> tuple[tuple[str, bytes, int], ...]:
        fullchain = _pem_join(self.cert_pem, self.chain_pem)
        files = (
            (KEY_FILE, self.key_pem, _PRIVATE),
            (CERT_FILE, self.cert_pem, _PUBLIC),
            (CHAIN_FILE, self.chain_pem, _PUBLIC),
            (BUNDLE_FILE, self.bundle_pem, _PUBLIC),
            (FULLCHAIN_FILE, fullchain, _PUBLIC),
        )
        # 0644 like cert.pem: everything in it is public (the certificate says as much) and
        # monitoring that may read cert.pem may read when it is due, too.
        return (*files, (STATE_FILE, self.state, _PUBLIC)) if self.state else files


@dataclass(frozen=True)
class WrittenFiles:
    """Where each file is now (the stable names in the output directory)."""

    directory: Path
    key: Path
    cert: Path
    chain: Path
    bundle: Path
    fullchain: Path


def _pem_join(*parts: bytes) -> bytes:
    return b"".join(p if p.endswith(b"\n") else p + b"\n" for p in parts if p.strip())


def prepare_out_dir(path: Path) -> Path:
    """Create ``path`` with mode 0700 when missing; return it resolved.

    Raises :class:`ConfigError` (exit 78: no retry fixes it) when it cannot be
    created, is not a directory or other users can write to it (they could swap the key under us).
    """
    try:
        if not path.exists():
            path.mkdir(mode=0o700, parents=True)
            os.chmod(path, 0o700)  # mkdir's mode passes through the umask
        info = path.stat()
    except OSError as exc:
        raise ConfigError(
            f"cannot create the output directory {path}: {exc.strerror}", code="out_dir_unusable"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path} exists and is not a directory", code="out_dir_invalid")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write in the output directory {path} (permission denied)", code="out_dir_unusable")
    if info.st_mode & 0o022:
        raise ConfigError(
            f"{path} is writable by other users (mode {stat.S_IMODE(info.st_mode):04o}); run: chmod go-w {path}",
            code="out_dir_insecure",
        )
    return path.resolve()


def atomic_write(path: Path, data: bytes, *, mode: int) -> None:
    """Replace ``path`` with ``data``: a temp file created with ``mode`` in the same
    directory, fsync, rename over ``path``, fsync the directory. Readers see the old
    or the new content, never a part. Raises :class:`FilesystemError`."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")
    try:
        _write_new_file(tmp, data, mode=mode)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise FilesystemError(f"cannot write {path}: {exc.strerror or exc}") from None


def install_credentials(out_dir: Path, credentials: CredentialSet) -> WrittenFiles:
    """Write a complete new set and switch to it at once (see the module docstring).

    Older sets are removed afterwards. Raises :class:`FilesystemError`; on failure
    before the switch the previous set stays live and nothing new is left behind.
    """
    with _locked(out_dir):
        generation = _write_generation(out_dir, credentials)
        try:
            _replace_symlink(out_dir / _LIVE, generation.name)
            _fsync_dir(out_dir)
            for name, _, _ in credentials.files():
                target = f"{_LIVE}/{name}"
                link = out_dir / name
                if not (link.is_symlink() and os.readlink(link) == target):
                    _replace_symlink(link, target)
            _fsync_dir(out_dir)
        except OSError as exc:
            raise FilesystemError(f"cannot install the new files in {out_dir}: {exc.strerror or exc}") from None
        _prune_generations(out_dir, keep=generation.name)
    return WrittenFiles(
        directory=out_dir,
        key=out_dir / KEY_FILE,
        cert=out_dir / CERT_FILE,
        chain=out_dir / CHAIN_FILE,
        bundle=out_dir / BUNDLE_FILE,
        fullchain=out_dir / FULLCHAIN_FILE,
    )


def live_directory(out_dir: Path) -> Path:
    """The directory holding the live set: the generation ``.live`` points to, or ``out_dir``
    itself for plain files of an older layout. Reading every file through this one path
    gives a consistent set even while a writer switches to the next one."""
    live = out_dir / _LIVE
    return live.resolve() if live.is_symlink() else out_dir


def read_nonce(out_dir: Path) -> str | None:
    """The stored EC2 instance nonce, or None when there is none yet.

    Raises :class:`ConfigError` when the file exists but is empty or unreadable:
    the issuer bound this instance to that nonce, so a person must decide.
    """
    path = out_dir / NONCE_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", code="nonce_unreadable") from None
    if not text:
        raise ConfigError(
            f"{path} is empty; restore it, or ask an operator to reset this instance's binding and delete it",
            code="nonce_unreadable",
        )
    return text


def store_nonce(out_dir: Path, nonce: str) -> Path:
    """Atomically write the instance nonce (mode 0600); return its path."""
    path = out_dir / NONCE_FILE
    atomic_write(path, nonce.encode("utf-8") + b"\n", mode=_PRIVATE)
    return path


def _write_generation(out_dir: Path, credentials: CredentialSet) -> Path:
    try:
        generation = Path(tempfile.mkdtemp(prefix=_GEN_PREFIX, dir=out_dir))  # mode 0700
    except OSError as exc:
        raise FilesystemError(f"cannot write in {out_dir}: {exc.strerror or exc}") from None
    try:
        for name, data, mode in credentials.files():
            _write_new_file(generation / name, data, mode=mode)
        _fsync_dir(generation)
    except OSError as exc:
        shutil.rmtree(generation, ignore_errors=True)
        raise FilesystemError(f"cannot write in {out_dir}: {exc.strerror or exc}") from None
    return generation


def _write_new_file(path: Path, data: bytes, *, mode: int) -> None:
    # Created with its final mode (O_EXCL: never through a planted file or symlink);
    # fchmod only undoes the umask for the public files.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_symlink(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.tmp-{secrets.token_hex(6)}")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except OSError:
        tmp.unlink()
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune_generations(out_dir: Path, *, keep: str) -> None:
    # Also tidies sets left by a crash before a switch; best effort, the switch is done.
    for entry in out_dir.iterdir():
        if entry.name.startswith(_GEN_PREFIX) and entry.name != keep and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """Serialise writers (a daemon and a manual run) of the same directory."""
    try:
        fd = os.open(out_dir / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, _PRIVATE)
    except OSError as exc:
        raise FilesystemError(f"cannot lock {out_dir}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
