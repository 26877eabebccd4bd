"""Build the Lambda authorizer's deployment zip for one architecture: ``dist/authorizer-<arch>.zip``.

At the zip's root, as Lambda expects: ``lambda_function.py`` (handler
``lambda_function.lambda_handler``), the package ``clients/authorizer/``, ``cryptography`` and its
dependencies (``cffi``, ``pycparser``) as manylinux wheels for the architecture and the runtime's
Python, and ``authorizer-build.json`` saying what was built. The zip is reproducible: entries
sorted, one fixed timestamp. ``make authorizer-zip`` builds both architectures.

    python deploy/authorizer/build_zip.py --arch x86_64 --arch arm64 --out dist
    python deploy/authorizer/build_zip.py --arch x86_64 --python-version 3.11 --out /tmp/zips
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
PACKAGE: Final = REPO / "clients" / "authorizer"
# The Lambda runtime the zips are for (python3.12; deploy/aws/issuer.yaml's function says the same).
LAMBDA_PYTHON: Final = "3.12"
PLATFORMS: Final = {
    # manylinux2014 is glibc 2.17; Lambda's python3.12+ runtimes (Amazon Linux 2023) have glibc 2.34.
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_28_x86_64"),
    "arm64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64"),
}
# 1980-01-01, the earliest time a zip entry can carry: the same input gives the same bytes.
FIXED_TIME: Final = (1980, 1, 1, 0, 0, 0)
# What the deps directory holds that Lambda does not need.
LEFT_OUT: Final = ("bin", "__pycache__")


class BuildError(Exception):
    """A step failed; the message is the one line printed."""


def build(*, arch: str, python_version: str, out: Path, requirement: str) -> Path:
    """Build ``out/authorizer-<arch>.zip``; returns its path. Raises :class:`BuildError`."""
    if arch not in PLATFORMS:
        raise BuildError(f"unknown architecture {arch!r}: x86_64 or arm64")
    out.mkdir(parents=True, exist_ok=True)
    target = out / zip_name(arch)
    with tempfile.TemporaryDirectory(prefix=f"authorizer-{arch}-") as scratch:
        deps = Path(scratch) / "deps"
        _pip_install(deps, arch=arch, python_version=python_version, requirement=requirement)
        manifest = {
            "handler": "lambda_function.lambda_handler",
            "architecture": arch,
            "python_version": python_version,
            "platforms": list(PLATFORMS[arch]),
            "packages": _installed(deps),
        }
        partial = target.with_suffix(".zip.partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            files = sorted(_files(deps), key=lambda pair: pair[0])
            for name, path in files:
                _add(zf, name, path.read_bytes(), executable=bool(path.stat().st_mode & stat.S_IXUSR))
            _add(zf, "clients/__init__.py", b'"""The issuer\'s clients; here only the authorizer."""\n')
            for module in sorted(PACKAGE.glob("*.py")):
                _add(zf, f"clients/authorizer/{module.name}", module.read_bytes())
            _add(zf, "lambda_function.py", (PACKAGE / "lambda_function.py").read_bytes())
            _add(zf, "authorizer-build.json", json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
        os.replace(partial, target)
    return target


def zip_name(arch: str) -> str:
    """The file name of the zip for ``arch`` (what deploy/aws/issuer.yaml's AuthorizerCodeKey defaults to)."""
    return f"authorizer-{arch}.zip"


def _pip_install(deps: Path, *, arch: str, python_version: str, requirement: str) -> None:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    command += ["--target", str(deps), "--only-binary=:all:", "--implementation", "cp", "--no-compile"]
    command += ["--python-version", python_version]
    for platform in PLATFORMS[arch]:
        command += ["--platform", platform]
    command.append(requirement)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BuildError(f"pip could not install {requirement} for {arch} / Python {python_version}: {last}")


def _installed(deps: Path) -> dict[str, str]:
    found = importlib.metadata.distributions(path=[str(deps)])
    return dict(sorted((d.metadata["Name"].lower(), d.version) for d in found))


def _files(deps: Path) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for path in deps.rglob("*"):
        relative = path.relative_to(deps)
        if path.is_dir() or any(part in LEFT_OUT for part in relative.parts) or path.suffix == ".pyc":
            continue
        out.append((relative.as_posix(), path))
    return out


def _add(zf: zipfile.ZipFile, name: str, data: bytes, *, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.external_attr = ((0o755 if executable else 0o644) | stat.S_IFREG) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build_zip.py",
        description="Build the Lambda authorizer's deployment zip(s).",
        epilog="example: python deploy/authorizer/build_zip.py --arch x86_64 --arch arm64 --out dist",
    )
    parser.add_argument("--arch", action="append", choices=sorted(PLATFORMS), help="x86_64 or arm64 (repeatable)")
    parser.add_argument(
        "--python-version", default=LAMBDA_PYTHON, help=f"the Lambda runtime's Python (default {LAMBDA_PYTHON})"
    )
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="directory for the zips (default dist/)")
    default = f"cryptography=={importlib.metadata.version('cryptography')}"
    parser.add_argument("--requirement", default=default, help=f"what pip installs (default {default})")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("pip") is None:
        print("build_zip: pip is not available to this Python", file=sys.stderr)
        return 1
    for arch in args.arch or sorted(PLATFORMS):
        print(f"building the authorizer zip for {arch} (Python {args.python_version}) ...", flush=True)
        try:
            path = build(arch=arch, python_version=args.python_version, out=args.out, requirement=args.requirement)
        except BuildError as exc:
            print(f"build_zip: {exc}", file=sys.stderr)
            return 1
        size = path.stat().st_size / 1024 / 1024
        print(f"  {path} ({size:.1f} MB), handler lambda_function.lambda_handler, runtime python{args.python_version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
