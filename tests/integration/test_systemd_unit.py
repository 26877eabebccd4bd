"""deploy/systemd/issuer.service: valid for systemd, hardened, and its hardening does not break the service.

``systemd-analyze verify`` needs the binary in ``ExecStart`` to exist, so the test verifies a copy
whose only change is that path (the venv's ``issuer``); every other line is the shipped unit's.
``MemoryDenyWriteExecute=yes`` is checked for real: the service runs under the kernel's
memory-deny-write-execute (``PR_SET_MDWE``, what the directive amounts to) on Postgres and issues
a certificate to the agent.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.cli import ISSUER, cli_env, ok
from tests.support.moto_server import free_port
from tests.support.x509_check import openssl_verify

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "issuer.service"
SHIPPED_BINARY = "/opt/issuer/bin/issuer"
VENV_BINARY = Path(sys.executable).parent / "issuer"
AGENT = Path(sys.executable).parent / "issuer-agent"

HARDENING = {
    "User": "issuer",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "StateDirectory": "issuer",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "MemoryDenyWriteExecute": "yes",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
    "EnvironmentFile": "/etc/issuer/issuer.env",
}

# Sets the kernel's memory-deny-write-execute on this process (inherited by forks, kept across exec),
# then execs the command in argv[1:].
MDWE_EXEC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit("PR_SET_MDWE failed: errno %d" % ctypes.get_errno())
os.execv(sys.argv[1], sys.argv[1:])
"""


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("SKIPPING: systemd-analyze is not installed, the unit file is not verified here")
    return path


def _service_section(text: str) -> dict[str, list[str]]:
    """Every ``[Service]`` key with all its values, in order (systemd allows a key more than once)."""
    values: dict[str, list[str]] = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def _verifiable_copy(tmp_path: Path, text: str) -> Path:
    exec_start = f"\nExecStart={SHIPPED_BINARY} "
    assert text.count(exec_start) == 1, "one ExecStart, naming the installed binary"
    copy = tmp_path / "issuer.service"
    copy.write_text(text.replace(exec_start, f"\nExecStart={VENV_BINARY} "))
    return copy


def _verify(analyze: str, unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)


def test_unit_verifies_with_systemd_analyze(tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    result = _verify(analyze, _verifiable_copy(tmp_path, UNIT.read_text()))
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_verify_catches_a_mistyped_directive(tmp_path: Path) -> None:
    """The check above can fail: a misspelt hardening directive is reported."""
    analyze = _systemd_analyze()
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict")
    result = _verify(analyze, _verifiable_copy(tmp_path, broken))
    assert "ProtectSytem" in result.stderr, result.stderr


def test_unit_is_hardened() -> None:
    service = _service_section(UNIT.read_text())
    for key, wanted in HARDENING.items():
        assert service.get(key) == [wanted], (key, service.get(key))
    assert service["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert service["ExecStart"][0].startswith(f"{SHIPPED_BINARY} serve ")
    assert "DynamicUser" not in service  # a dedicated user (issuer.sysusers), so operators can run `ca init` as it
    sysusers = (UNIT.parent / "issuer.sysusers").read_text()
    assert any(line.startswith("u issuer ") for line in sysusers.splitlines())
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string((UNIT.parent / "issuer.env.example").read_text().join(["[env]\n", ""]))
    assert "ISSUER_DATABASE_URL" in {key.upper() for key in parser["env"]}


def test_unit_exposure_is_low(tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(_verifiable_copy(tmp_path, UNIT.read_text()))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("SKIPPING: this systemd-analyze has no `security --offline`")
    line = next((ln for ln in result.stdout.splitlines() if "Overall exposure level" in ln), "")
    assert line, result.stdout + result.stderr
    exposure = float(line.split(":")[1].split()[0])
    assert exposure <= 2.0, line


def _mdwe_supported() -> bool:
    """Whether this kernel has PR_SET_MDWE (Linux 6.3+); asked in a child, since the setting cannot be undone."""
    probe = "import ctypes, sys; sys.exit(0 if ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) == 0 else 1)"
    return subprocess.run([sys.executable, "-c", probe], timeout=30, check=False).returncode == 0


@pytest.mark.postgres
def test_service_works_under_memory_deny_write_execute(tmp_path: Path, pg_url: str) -> None:
    if not _mdwe_supported():
        pytest.skip("SKIPPING: this kernel has no PR_SET_MDWE; MemoryDenyWriteExecute is not exercised here")
    # The wrapper does deny: a writable and executable mapping is refused under it.
    denied = subprocess.run(
        [sys.executable, "-c", MDWE_EXEC, sys.executable, "-c",
         "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert denied.returncode != 0 and "PermissionError" in denied.stderr, denied.stderr

    env = cli_env(tmp_path, pg_url)
    ok("ca", "init", env=env)  # file keys: the passphrase-encrypted key is decrypted under MDWE below
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-c", MDWE_EXEC, *ISSUER, "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(port, server, tmp_path / "serve.log")
        token = ok("token", "create", "--role", "onprem", "--name", "mdwe-box", env=env).strip()
        out = tmp_path / "agent"
        agent = subprocess.run(
            [sys.executable, "-c", MDWE_EXEC, str(AGENT), "bootstrap", "--method", "token",
             "--server", f"http://127.0.0.1:{port}", "--out", str(out)],
            env={**env, "ISSUER_JOIN_TOKEN": token}, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert agent.returncode == 0, agent.stdout + agent.stderr
        openssl_verify(
            (out / "cert.pem").read_bytes(), (out / "chain.pem").read_bytes(), (out / "bundle.pem").read_bytes()
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/crl", timeout=10) as reply:
            assert reply.status == 200  # a CRL signed with the file key, in a worker under MDWE
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            assert b"issuer_issuances_total" in reply.read()
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    assert server.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def _wait_ready(port: int, server: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"issuer serve exited {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.3)
    raise AssertionError(f"issuer serve never became ready:\n{log.read_text()[-3000:]}")
