"""The .pyz bootstrap's own checks: the host it runs on, a cache only this user can change, and
an unpacking that is all or nothing."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from pyz.bootstrap import PAYLOAD, BootstrapError, cache_candidates, check_host, private_directory, unpack

MANIFEST = {"arch": "x86_64", "python_min": "3.9.2", "glibc_min": "2.28", "digest": "d1"}
UID = os.geteuid()


@pytest.mark.parametrize(
    ("version", "machine", "libc", "problem"),
    [
        ((3, 9, 2), "x86_64", ("glibc", "2.34"), None),
        ((3, 13, 0), "AMD64", ("glibc", "2.28"), None),
        ((3, 9, 1), "x86_64", ("glibc", "2.34"), "needs Python 3.9.2 or newer, this is 3.9.1"),
        ((3, 8, 18), "x86_64", ("glibc", "2.34"), "needs Python 3.9.2"),
        ((3, 11, 7), "aarch64", ("glibc", "2.34"), "this issuer-agent.pyz is for x86_64, this machine is aarch64"),
        ((3, 11, 7), "x86_64", ("glibc", "2.17"), "needs glibc 2.28 or newer"),
        ((3, 11, 7), "x86_64", ("", ""), "found an unknown C library"),  # musl (Alpine)
    ],
)
def test_the_host_is_checked_before_anything_runs(
    version: tuple[int, ...], machine: str, libc: tuple[str, str], problem: str | None
) -> None:
    if problem is None:
        check_host(MANIFEST, version=version, machine=machine, libc=libc)
    else:
        with pytest.raises(BootstrapError, match=problem):
            check_host(MANIFEST, version=version, machine=machine, libc=libc)


def test_the_cache_is_the_explicit_one_else_the_users_else_a_private_temporary_one() -> None:
    assert cache_candidates({"ISSUER_AGENT_CACHE": "/var/cache/issuer-agent"}, uid=0, home="/root") == [
        Path("/var/cache/issuer-agent")
    ]
    first, fallback = cache_candidates({}, uid=1000, home="/home/ec2-user")
    assert first == Path("/home/ec2-user/.cache/issuer-agent") and fallback.name == "issuer-agent-1000"
    assert cache_candidates({"XDG_CACHE_HOME": "/x"}, uid=0, home="/root")[0] == Path("/x/issuer-agent")


def test_a_new_cache_directory_is_private(tmp_path: Path) -> None:
    made = private_directory(tmp_path / "a" / "cache", uid=UID)
    assert made.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    ("arrange", "problem"),
    [
        (lambda p: (p.mkdir(), p.chmod(0o777)), "writable by others"),
        (lambda p: (p.mkdir(), p.chmod(0o770)), "writable by others"),
        (lambda p: p.symlink_to(p.parent), "not a directory"),
        (lambda p: p.write_text("x"), "not a directory"),
    ],
)
def test_a_cache_others_could_change_is_refused(tmp_path: Path, arrange: object, problem: str) -> None:
    target = tmp_path / "cache"
    arrange(target)  # type: ignore[operator]
    with pytest.raises(BootstrapError, match=problem):
        private_directory(target, uid=UID)


def test_a_cache_of_another_user_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BootstrapError, match=f"belongs to uid {UID}, not {UID + 1}"):
        private_directory(tmp_path / "cache", uid=UID + 1)


def test_a_cache_in_a_directory_others_can_write_needs_the_sticky_bit(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(BootstrapError, match="writable by others and not sticky"):
        private_directory(shared / "cache", uid=UID)
    shared.chmod(0o1777)  # like /tmp
    assert private_directory(shared / "cache", uid=UID).is_dir()


def archive(files: dict[str, bytes]) -> zipfile.ZipFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return zipfile.ZipFile(buffer)


def test_unpacking_happens_once_and_all_at_once(tmp_path: Path) -> None:
    root = private_directory(tmp_path / "cache", uid=UID)
    files = {PAYLOAD + "pkg/__init__.py": b"x = 1\n", PAYLOAD + "pkg/data/a.json": b"{}", "__main__.py": b""}
    site = unpack(archive(files), "d1", root=root)
    assert (site / "pkg" / "__init__.py").read_bytes() == b"x = 1\n" and not (site / "__main__.py").exists()
    (site / "pkg" / "__init__.py").write_bytes(b"x = 2\n")
    assert unpack(archive(files), "d1", root=root) == site  # not unpacked again
    assert (site / "pkg" / "__init__.py").read_bytes() == b"x = 2\n"
    assert sorted(p.name for p in root.iterdir()) == ["d1"]  # no work directories left


def test_a_half_unpacked_set_is_replaced(tmp_path: Path) -> None:
    root = private_directory(tmp_path / "cache", uid=UID)
    (root / "d1" / "pkg").mkdir(parents=True)  # a crash before the marker
    site = unpack(archive({PAYLOAD + "pkg/m.py": b"ok"}), "d1", root=root)
    assert (site / "pkg" / "m.py").read_bytes() == b"ok"


def test_names_that_climb_out_are_refused(tmp_path: Path) -> None:
    root = private_directory(tmp_path / "cache", uid=UID)
    with pytest.raises(BootstrapError, match="unsafe name"):
        unpack(archive({PAYLOAD + "../evil.py": b""}), "d2", root=root)
    assert not (root / "d2").exists() and not (root / "evil.py").exists()
