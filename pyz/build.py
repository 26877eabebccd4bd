"""Build ``issuer-agent.pyz``: the agent and its dependencies in one file for Linux x86_64 or aarch64.

    python -m pyz.build --arch x86_64 --output dist/issuer-agent.pyz
    python -m pyz.build --arch aarch64 --output dist/issuer-agent-aarch64.pyz

Runs as ``python3 issuer-agent.pyz COMMAND`` (or, made executable, as ``issuer-agent``) on any
CPython 3.9.2 to 3.14 with glibc 2.28+ (Amazon Linux 2023, RHEL 8/9, Ubuntu 20.04+, Debian 10+):

- the agent's own code, copied from ``clients/`` (the Lambda authorizer left out);
- wheels for the target, downloaded by pip (``--only-binary=:all: --platform ... --python-version 3.9.2``):
  cryptography is an ``abi3`` wheel, one build for every CPython from 3.9 on; cffi's compiled
  backend is not, so the ``_cffi_backend`` of each CPython 3.9 to 3.14 is put side by side
  (each interpreter imports the one named for it); botocore with only the service models its
  credential providers use (sts, sso, sso-oidc, signin): the others are ~25 MB it never reads;
- a bootstrap ``__main__`` (:mod:`pyz.bootstrap`) that checks the host and unpacks into a private cache.

Why not shiv or pex: shiv unpacks only into ``~/.shiv`` (read-only under systemd's
``ProtectHome``) and has no check of the interpreter or architecture; pex's multi-platform
resolution would do, but with a runtime of its own and more to trust. What this needs is ~250
lines of standard library, and the zip is reproducible (fixed times, sorted names).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Final

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pyz.bootstrap import MANIFEST, PAYLOAD

__all__ = ["ARCHES", "build", "main"]

REPO: Final = Path(__file__).resolve().parents[1]
ARCHES: Final = ("x86_64", "aarch64")
PYTHON_MIN: Final = "3.9.2"  # cryptography excludes 3.9.0 and 3.9.1
GLIBC_MIN: Final = "2.28"
CFFI_PYTHONS: Final = ("3.9", "3.10", "3.11", "3.12", "3.13", "3.14")
# Service models botocore's credential providers load: assume-role and web identity (sts),
# IAM Identity Center (sso, sso-oidc), `aws login` sessions (signin). The rest is left out.
BOTOCORE_SERVICES: Final = frozenset({"sts", "sso", "sso-oidc", "signin"})
_EPOCH: Final = (1980, 1, 1, 0, 0, 0)
_SHEBANG: Final = b"#!/usr/bin/env python3\n"


class BuildError(Exception):
    pass


# pip evaluates environment markers for the interpreter it runs on, not for --python-version, so
# what the dependencies ask for on other Pythons is added by :func:`close_over_pythons`. botocore
# allows urllib3 1.26 everywhere but 2.x only from 3.10 on: one file for all needs 1.26.
_FOR_EVERY_PYTHON: Final = ("urllib3>=1.25.4,<1.27",)


def _requirements() -> list[str]:
    """The base install's dependencies, as pyproject.toml says (cryptography, botocore)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *_FOR_EVERY_PYTHON]


def _platforms(arch: str) -> list[str]:
    return ["--platform", f"manylinux_2_28_{arch}", "--platform", f"manylinux2014_{arch}"]


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"pip {' '.join(args[:2])} failed:\n{done.stdout or ''}{done.stderr or ''}")


def download(arch: str, into: Path) -> tuple[list[Path], list[Path]]:
    """(wheels of the dependency tree for CPython 3.9 on ``arch``, cffi wheels for every other CPython)."""
    base = into / "base"
    _pip(
        "download", "--quiet", "--only-binary=:all:", "--implementation", "cp", "--python-version", PYTHON_MIN,
        *_platforms(arch), "--dest", str(base), *_requirements(),
    )  # fmt: skip
    wheels = close_over_pythons(base, arch)
    cffi = [w for w in wheels if w.name.startswith("cffi-")]
    if len(cffi) != 1:
        raise BuildError(f"expected one cffi wheel among {[w.name for w in wheels]}")
    version = cffi[0].name.split("-")[1]
    extra = into / "cffi"
    for python in CFFI_PYTHONS[1:]:
        _pip(
            "download", "--quiet", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
            "--python-version", python, *_platforms(arch), "--dest", str(extra), f"cffi=={version}",
        )  # fmt: skip
    return wheels, sorted(extra.glob("*.whl"))


def _marker_environment(python: str, arch: str) -> dict[str, str]:
    full = PYTHON_MIN if python == PYTHON_MIN.rsplit(".", 1)[0] else f"{python}.0"
    return {
        "python_version": python, "python_full_version": full, "implementation_name": "cpython",
        "implementation_version": full, "platform_python_implementation": "CPython", "sys_platform": "linux",
        "platform_system": "Linux", "platform_machine": arch, "os_name": "posix", "extra": "",
        "platform_release": "", "platform_version": "",
    }  # fmt: skip


def _metadata(wheel: Path) -> tuple[str, str, list[str]]:
    """(canonical name, version, Requires-Dist lines) of a wheel."""
    from email.parser import HeaderParser

    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1]
        headers = HeaderParser().parsestr(archive.read(name).decode("utf-8"))
    return canonicalize_name(headers["Name"]), headers["Version"], headers.get_all("Requires-Dist") or []


def close_over_pythons(dest: Path, arch: str) -> list[Path]:
    """Download what the wheels in ``dest`` require on any of CPython 3.9 to 3.14 (pip only looked at
    its own); raise :class:`BuildError` when one wheel cannot serve every Python a requirement names."""
    environments = [_marker_environment(python, arch) for python in CFFI_PYTHONS]
    for _ in range(10):
        wheels = sorted(dest.glob("*.whl"))
        have = {name: version for name, version, _ in map(_metadata, wheels)}
        missing: dict[str, tuple[Requirement, str]] = {}
        for wheel in wheels:
            for line in _metadata(wheel)[2]:
                requirement = Requirement(line)
                for environment in environments:
                    if requirement.marker is not None and not requirement.marker.evaluate(environment):
                        continue
                    name = canonicalize_name(requirement.name)
                    if name not in have:
                        missing.setdefault(name, (requirement, environment["python_full_version"]))
                    elif not requirement.specifier.contains(have[name], prereleases=True):
                        raise BuildError(
                            f"{wheel.name} needs {requirement} on Python {environment['python_version']}, "
                            f"but {name} {have[name]} was chosen; pin one version that suits every Python"
                        )
        if not missing:
            return wheels
        for requirement, python in missing.values():
            _pip(
                "download", "--quiet", "--only-binary=:all:", "--implementation", "cp", "--python-version", python,
                *_platforms(arch), "--dest", str(dest), f"{requirement.name}{requirement.specifier}",
            )  # fmt: skip
    raise BuildError("the dependencies did not settle after 10 rounds")


def _wheel_files(wheel: Path, *, only: Iterable[str] | None = None) -> Iterator[tuple[str, bytes]]:
    """(path in site-packages, bytes) of a wheel's files; ``only``: name prefixes to keep."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            name = info.filename
            if info.is_dir() or ".dist-info/RECORD" in name:
                continue
            top, _, rest = name.partition("/")
            if top.endswith(".data"):
                kind, _, inner = rest.partition("/")
                if kind not in ("purelib", "platlib"):
                    continue  # scripts, headers, data: nothing the agent imports
                name = inner
            if only is not None and not any(name.startswith(prefix) for prefix in only):
                continue
            yield name, archive.read(info)


def _keep_botocore(name: str) -> bool:
    parts = name.split("/")
    if parts[:2] != ["botocore", "data"] or len(parts) == 3:
        return True  # the code, and the data directory's own files (endpoints.json, partitions.json, ...)
    return parts[2] in BOTOCORE_SERVICES


def payload(wheels: list[Path], cffi_extra: list[Path]) -> dict[str, bytes]:
    """site-packages as {path: bytes}: the agent's code, the wheels, every CPython's cffi backend."""
    files: dict[str, bytes] = {}
    for wheel in wheels:
        for name, data in _wheel_files(wheel):
            if name.startswith("botocore/") and not _keep_botocore(name):
                continue
            files[name] = data
    for wheel in cffi_extra:  # the compiled backend and the libffi it links, nothing else
        for name, data in _wheel_files(wheel, only=("_cffi_backend.", "cffi.libs/")):
            files.setdefault(name, data)
    for path in sorted((REPO / "clients").rglob("*")):
        relative = path.relative_to(REPO).as_posix()
        left_out = relative.startswith(("clients/authorizer/", "clients/deploy/")) or "__pycache__" in relative
        if path.is_file() and path.suffix in (".py", ".typed") and not left_out:
            files[relative] = path.read_bytes()
    return files


def _digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()[:32]


def _entry(name: str, *, executable: bool = False) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o755 if executable else 0o644) << 16
    return info


def write_pyz(output: Path, files: dict[str, bytes], *, arch: str) -> dict[str, object]:
    """Write the zipapp (shebang, ``__main__``, manifest, payload) atomically; return the manifest."""
    manifest: dict[str, object] = {
        "arch": arch,
        "python_min": PYTHON_MIN,
        "glibc_min": GLIBC_MIN,
        "digest": _digest(files),
        "files": len(files),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    with open(partial, "wb") as raw:
        raw.write(_SHEBANG)
        with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            archive.writestr(_entry("__main__.py"), (REPO / "pyz" / "bootstrap.py").read_bytes())
            archive.writestr(_entry(MANIFEST), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            for name in sorted(files):
                archive.writestr(_entry(PAYLOAD + name, executable=name.endswith(".so")), files[name])
    os.chmod(partial, 0o755)  # noqa: S103 - an executable zipapp, as a program in /usr/local/bin is
    os.replace(partial, output)
    return manifest


def build(arch: str, output: Path, *, say: Callable[[str], None] = print) -> dict[str, object]:
    """Download, assemble and write one ``.pyz``; return its manifest. Raises :class:`BuildError`."""
    if arch not in ARCHES:
        raise BuildError(f"--arch must be one of {', '.join(ARCHES)}")
    with tempfile.TemporaryDirectory(prefix="issuer-agent-pyz-") as scratch:
        say(f"downloading wheels for CPython {PYTHON_MIN}+ on manylinux {arch} (pip)")
        wheels, extra = download(arch, Path(scratch))
        say(f"{len(wheels)} wheels: {', '.join(w.name.split('-')[0] + ' ' + w.name.split('-')[1] for w in wheels)}")
        files = payload(wheels, extra)
        manifest = write_pyz(output, files, arch=arch)
    say(
        f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB, {manifest['files']} files, digest {manifest['digest']})"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyz.build",
        description="Build issuer-agent as one file for Linux (CPython 3.9.2+, glibc 2.28+).",
        epilog="example: python -m pyz.build --arch x86_64 --output dist/issuer-agent.pyz",
    )
    parser.add_argument("--arch", required=True, choices=ARCHES)
    parser.add_argument("--output", required=True, type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    try:
        build(args.arch, args.output)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
