"""The ``__main__`` of ``issuer-agent.pyz``: unpack once into a private cache, then run the agent.

Python cannot import a compiled extension (cryptography's Rust core, cffi's backend) from inside
a zip, and botocore reads its data files from disk, so the packages are unpacked the first time
into ``<cache>/<content hash>`` and imported from there ever after (as shiv and pex do). The cache
is ``$ISSUER_AGENT_CACHE``, else ``$XDG_CACHE_HOME/issuer-agent`` or ``~/.cache/issuer-agent``,
else (a read-only home, e.g. systemd's ``ProtectHome=read-only``) ``<tmp>/issuer-agent-<uid>``.
It must be a directory of this user that nobody else can write (anyone who can write there can
run code as this user); one that is not is refused with one line, and so are a Python older than
3.9.2, another CPU architecture and a C library that is not glibc 2.28+, before anything runs.

Self-contained and standard library only: it runs before any of the packages it unpacks.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import stat
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["MANIFEST", "PAYLOAD", "cache_candidates", "check_host", "main", "private_directory", "unpack"]

MANIFEST = "issuer_agent_pyz.json"
PAYLOAD = "site/"
EX_CONFIG = 78  # sysexits.h: nothing retried will fix it
_MARKER = ".complete"
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


class BootstrapError(Exception):
    """One line for a person; exit 78."""


def check_host(manifest: dict[str, object], *, version: tuple[int, ...], machine: str, libc: tuple[str, str]) -> None:
    """Raise :class:`BootstrapError` when this Python, CPU or C library cannot run what the file holds."""
    minimum = tuple(int(p) for p in str(manifest["python_min"]).split("."))
    if version < minimum:
        have = ".".join(str(p) for p in version[:3])
        raise BootstrapError(f"issuer-agent needs Python {manifest['python_min']} or newer, this is {have}")
    arch = _ARCH_ALIASES.get(machine.lower(), machine.lower())
    if arch != manifest["arch"]:
        raise BootstrapError(
            f"this issuer-agent.pyz is for {manifest['arch']}, this machine is {arch}: "
            f"use the {arch} file (make agent-pyz builds both)"
        )
    name, libc_version = libc
    need = str(manifest["glibc_min"])
    if name != "glibc" or _version(libc_version) < _version(need):
        found = f"{name} {libc_version}".strip() or "an unknown C library"
        raise BootstrapError(
            f"issuer-agent.pyz needs glibc {need} or newer (its cryptography is a manylinux build), found {found}; "
            "install with pip instead"
        )


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return ()


def cache_candidates(env: Mapping[str, str], *, uid: int, home: str) -> list[Path]:
    """Where to unpack, in order of preference."""
    explicit = env.get("ISSUER_AGENT_CACHE")
    if explicit:
        return [Path(explicit)]
    base = Path(env.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"))
    return [base / "issuer-agent", Path(tempfile.gettempdir()) / f"issuer-agent-{uid}"]


def private_directory(path: Path, *, uid: int) -> Path:
    """Create ``path`` (0700) if needed and check that only ``uid`` can change what is in it.

    Raises ``OSError`` when it cannot be created, :class:`BootstrapError` when it is not private:
    a symlink, not a directory, another owner, writable by group or others, or in a directory
    others can write without the sticky bit (they could swap it).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise BootstrapError(f"{path} is not a directory (a symlink?)")
    if info.st_uid != uid:
        raise BootstrapError(f"{path} belongs to uid {info.st_uid}, not {uid}")
    if info.st_mode & 0o022:
        raise BootstrapError(f"{path} is writable by others (mode {stat.S_IMODE(info.st_mode):04o})")
    parent = os.stat(path.parent)
    if parent.st_mode & 0o022 and not parent.st_mode & stat.S_ISVTX:
        raise BootstrapError(f"{path.parent} is writable by others and not sticky")
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write in {path}")
    return path


def unpack(archive: zipfile.ZipFile, digest: str, *, root: Path) -> Path:
    """``root/<digest>`` holding the payload, unpacked now unless an earlier run finished it.

    Unpacked into a fresh directory beside it and renamed into place, so a crash or a second
    process at the same moment never leaves (or uses) half a set.
    """
    final = root / digest
    marker = final / _MARKER
    if marker.is_file() and marker.read_text() == digest:
        return final
    work = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
    try:
        for member in archive.infolist():
            if not member.filename.startswith(PAYLOAD) or member.is_dir():
                continue
            relative = member.filename[len(PAYLOAD) :]
            if relative.startswith("/") or ".." in relative.split("/"):
                raise BootstrapError(f"unsafe name in the archive: {member.filename}")
            target = work / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)
        (work / _MARKER).write_text(digest)
        if final.exists():  # a broken earlier attempt (no marker): replace it
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(work, final)
        except OSError:
            if not (final / _MARKER).exists():  # not another process that won the race
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _prepare(archive_path: str) -> Path:
    with zipfile.ZipFile(archive_path) as archive:
        manifest = json.loads(archive.read(MANIFEST))
        check_host(manifest, version=sys.version_info[:3], machine=platform.machine(), libc=platform.libc_ver())
        uid = os.geteuid()
        tried: list[str] = []
        for candidate in cache_candidates(os.environ, uid=uid, home=os.path.expanduser("~")):
            try:
                root = private_directory(candidate, uid=uid)
                return unpack(archive, str(manifest["digest"]), root=root)
            except OSError as exc:
                tried.append(f"{candidate}: {exc.strerror or exc}")
            except BootstrapError as exc:
                tried.append(str(exc))
        raise BootstrapError(
            "no private cache directory to unpack into (" + "; ".join(tried) + "); "
            "set ISSUER_AGENT_CACHE to a directory only this user can write"
        )


def main() -> int:
    archive_path = os.path.dirname(os.path.abspath(__file__))
    try:
        site = _prepare(archive_path)
    except BootstrapError as exc:
        print(f"issuer-agent: error: {exc}", file=sys.stderr)
        return EX_CONFIG
    sys.path.insert(0, str(site))
    from clients.agent.cli import main as agent_main

    return agent_main()


if __name__ == "__main__":
    sys.exit(main())
