"""podman as these machines run it, for the container image test.

What it takes here (learned the hard way): runc as the runtime, cgroupfs as the cgroup
manager, a containers.conf without default ulimits, and the host's network (the
container reaches the host's Postgres on 127.0.0.1). No image can be pulled, so the
base image is made from Debian packages with debootstrap and cached as a local image.
pip inside a build needs the host's CA bundle: registries are behind a TLS proxy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BASE_IMAGE",
    "Podman",
    "debian_mirror",
    "ensure_base_image",
    "host_ca_bundle",
    "host_index_url",
    "missing_tools",
]

BASE_IMAGE = "localhost/issuer-e2e-base:bookworm"
BASE_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
TOOLS = ("podman", "runc", "debootstrap")


def missing_tools() -> list[str]:
    """The tools of :data:`TOOLS` that are not on PATH."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


@dataclass(frozen=True, slots=True)
class Podman:
    """``podman`` with this machine's runtime flags; ``conf`` is the containers.conf it runs with."""

    conf: Path
    runtime: str

    @classmethod
    def here(cls, directory: Path) -> Podman:
        conf = directory / "containers.conf"
        conf.write_text("[containers]\ndefault_ulimits = []\n")
        runtime = shutil.which("runc")
        assert runtime is not None, "runc is not installed"
        return cls(conf=conf, runtime=runtime)

    def argv(self, *args: str) -> list[str]:
        return ["podman", "--runtime", self.runtime, "--cgroup-manager", "cgroupfs", *args]

    def run(
        self, *args: str, timeout: float = 120, check: bool = True, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``podman ARGS``; with ``check``, a failure raises AssertionError carrying podman's output."""
        result = subprocess.run(
            self.argv(*args),
            env={**os.environ, **(env or {}), "CONTAINERS_CONF": str(self.conf)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args[:3])} … exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                f"{result.stderr[-3000:]}"
            )
        return result

    def image_exists(self, name: str) -> bool:
        return self.run("image", "exists", name, check=False).returncode == 0

    def image_id(self, name: str) -> str | None:
        result = self.run("image", "inspect", "--format", "{{.Id}}", name, check=False)
        if result.returncode != 0:
            return None
        return result.stdout.strip() or None

    def build(self, context: Path, *, tag: str, base_image: str, timeout: float = 1200) -> str:
        """``podman build`` the Dockerfile in ``context`` on ``base_image``; returns the image id.

        pip in the build gets the host's CA bundle (mounted read-only, named by ``PIP_CERT``) and
        the host's index when that is a mirror. The image this tag named before is removed when
        the build replaced it (its layers stay as the build cache).
        """
        before = self.image_id(tag)
        args = ["build", "--network", "host", "--build-arg", f"BASE_IMAGE={base_image}"]
        args += ["-v", f"{host_ca_bundle()}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]
        index = host_index_url()
        if index:
            args += ["--build-arg", f"PIP_INDEX_URL={index}"]
        self.run(*args, "-t", tag, str(context), timeout=timeout)
        after = self.image_id(tag)
        assert after is not None, f"podman build did not tag {tag}"
        if before and before != after:
            self.run("rmi", before, check=False)
        return after


def debian_mirror(*, sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt already uses (deb822 ``*.sources`` or one-line ``sources.list``), else deb.debian.org."""
    deb822 = sorted((sources / "sources.list.d").glob("*.sources")) if (sources / "sources.list.d").is_dir() else []
    for path in deb822:
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields = dict(_deb822_fields(stanza))
            suites, uris = fields.get("suites", "").split(), fields.get("uris", "").split()
            if "bookworm" in suites and uris and "security" not in uris[0]:
                return uris[0]
    one_line = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            match = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s", line.strip() + " ")
            if match:
                return match.group(1)
    return DEFAULT_MIRROR


def _deb822_fields(stanza: str) -> list[tuple[str, str]]:
    fields = []
    for line in stanza.splitlines():
        if line.startswith("#") or ":" not in line or line[:1].isspace():
            continue
        key, _, value = line.partition(":")
        fields.append((key.strip().lower(), value.strip()))
    return fields


def host_ca_bundle() -> Path:
    """The CA bundle pip uses on this host: PIP_CERT, REQUESTS_CA_BUNDLE, SSL_CERT_FILE, pip's config, the system's."""
    candidates = [os.environ.get(name) for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")]
    candidates.append(_pip_config("global.cert"))
    candidates.append("/etc/ssl/certs/ca-certificates.crt")
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise AssertionError("no CA bundle for pip found (PIP_CERT, REQUESTS_CA_BUNDLE, SSL_CERT_FILE, pip config)")


def host_index_url() -> str | None:
    """The package index pip uses on this host when it is not PyPI's default (an http(s) mirror), else None."""
    value = os.environ.get("PIP_INDEX_URL") or _pip_config("global.index-url")
    return value if value and value.startswith(("http://", "https://")) else None


def _pip_config(key: str) -> str | None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", key], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def ensure_base_image(podman: Podman, *, name: str = BASE_IMAGE, timeout: float = 1200) -> float:
    """Make ``name`` from Debian bookworm packages unless it exists; returns the seconds spent (0 when cached).

    ``debootstrap --variant=minbase`` with Python 3.11, venv and pip, imported with ``podman import``.
    """
    if podman.image_exists(name):
        return 0.0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="issuer-base-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "root"
        mirror = debian_mirror()
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(root), mirror],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"debootstrap from {mirror} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        try:
            imported = subprocess.run(
                podman.argv("import", "-", name),
                stdin=tar.stdout,
                env={**os.environ, "CONTAINERS_CONF": str(podman.conf)},
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait(timeout=60)
        if imported.returncode != 0 or tar.returncode != 0:
            raise AssertionError(f"podman import of the Debian base failed: {imported.stderr[-3000:]}")
    return time.monotonic() - started
