"""The issuer under test: its configuration, CA and schema, and ``issuer serve`` as a subprocess.

Everything goes through the real ``issuer`` command (``migrate``, ``ca init``,
``serve``), so the benchmark measures what an operator runs.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError, process
from bench.workload import ACCOUNT, REGION
from tests.support.moto_server import free_port

__all__ = [
    "EC2_ROLE",
    "PASSPHRASE",
    "RENEW_ROLE",
    "TOKEN_ROLE",
    "IssuerServer",
    "IssuerSetup",
    "prepare_issuer",
    "run_issuer",
]

TOKEN_ROLE = "bench-onprem"
RENEW_ROLE = "bench-renew"
EC2_ROLE = "bench-ec2"
PASSPHRASE = "bench-passphrase-0123456789abcdef"
ISSUER = [sys.executable, "-m", "issuer.cli"]

CONFIG = """\
# written by python -m bench
[issuer]
trust_domain = "bench.example"

[aws.ec2]
# The benchmark's stand-in "AWS" signing certificate, trusted for one region.
extra_certs = {{ "{region}" = ["{aws_cert}"] }}

[[roles]]
name = "{token_role}"
methods = ["token"]
ttl = "24h"

[[roles]]
# The certificates the renew run renews: issued by join token first, apart from the token run's.
name = "{renew_role}"
methods = ["token"]
ttl = "24h"

[[roles]]
name = "{ec2_role}"
methods = ["aws-ec2"]
account_ids = ["{account}"]
regions = ["{region}"]
max_instance_age = "1h"
ttl = "12h"
"""


@dataclass(frozen=True, slots=True)
class IssuerSetup:
    """A configured issuer: its environment (config, state dir, database, passphrase) and files."""

    env: Mapping[str, str]
    config_path: Path
    state_dir: Path
    database_url: str

    @property
    def ca_dir(self) -> Path:
        return self.state_dir / "ca"


def run_issuer(args: Sequence[str], env: Mapping[str, str], *, what: str) -> None:
    """Run ``issuer ARGS``; raises :class:`BenchError` ``setup_failed`` with its last line of output if it fails."""
    result = subprocess.run([*ISSUER, *args], env=dict(env), capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise BenchError(f"{what} failed: {lines[-1] if lines else f'exit {result.returncode}'}", code="setup_failed")


def prepare_issuer(work_dir: Path, *, database_url: str, aws_cert_pem: bytes) -> IssuerSetup:
    """Write ``issuer.toml``, migrate the (empty) database and create the CA with ``issuer ca init``."""
    aws_cert = work_dir / "aws-bench-rsa2048.pem"
    aws_cert.write_bytes(aws_cert_pem)
    config_path = work_dir / "issuer.toml"
    config_path.write_text(
        CONFIG.format(
            region=REGION,
            aws_cert=aws_cert,
            token_role=TOKEN_ROLE,
            renew_role=RENEW_ROLE,
            ec2_role=EC2_ROLE,
            account=ACCOUNT,
        )
    )
    state_dir = work_dir / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISSUER_")}
    env.update(
        {
            "ISSUER_CONFIG": str(config_path),
            "ISSUER_STATE_DIR": str(state_dir),
            "ISSUER_DATABASE_URL": database_url,
            "ISSUER_CA_PASSPHRASE": PASSPHRASE,
        }
    )
    run_issuer(["migrate"], env, what="issuer migrate")
    run_issuer(["ca", "init"], env, what="issuer ca init")
    return IssuerSetup(env=env, config_path=config_path, state_dir=state_dir, database_url=database_url)


class IssuerServer:
    """``issuer serve --workers N`` on a free loopback port, its log in ``log_path``."""

    def __init__(
        self,
        setup: IssuerSetup,
        *,
        workers: int,
        log_path: Path,
        log_level: str = "info",
        cprofile_output: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        args = ["serve", "--port", str(self.port), "--workers", str(workers), "--log-level", log_level]
        command = [*ISSUER, *args]
        env = dict(setup.env)
        if cprofile_output is not None:
            # The same command under bench.cprofile_serve, which needs this checkout on the path.
            command = [sys.executable, "-m", "bench.cprofile_serve", str(cprofile_output), *args]
            root = str(Path(__file__).resolve().parent.parent)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def wait_ready(self, *, seconds: float = 60.0) -> None:
        """Until ``GET /readyz`` answers 200; raises :class:`BenchError` if the server exits or never gets there."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BenchError(
                    f"issuer serve exited with {self._proc.returncode}: {self._last_log_line()}",
                    code="server_failed",
                )
            if await asyncio.to_thread(self._ready):
                return
            await asyncio.sleep(0.2)
        raise BenchError(f"issuer serve was not ready at {self.url} within {seconds:g}s", code="server_failed")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as resp:  # noqa: S310 - our own loopback URL
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _last_log_line(self) -> str:
        self._log.flush()
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no output"

    def stop(self, *, timeout: float = 40.0) -> None:
        """SIGTERM (graceful), then SIGKILL if it outlives ``timeout``."""
        process.stop(self._proc, timeout=timeout)
        self._log.close()
