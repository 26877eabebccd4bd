"""What Lambda runs: the deployment zip, unpacked in a fresh directory, its handler called in a process
whose only import path beyond the standard library is that directory (issue 20 §1).

The zip is the one ``make authorizer-zip`` builds — for Lambda's Python (``LAMBDA_PYTHON`` of
deploy/authorizer/build_zip.py, 3.12) and this machine's architecture: ``dist/authorizer-<arch>.zip``
when it is that build, else the same script makes one into a temporary directory. Its handler runs
on an interpreter of that Python found here (PATH, pyenv, /usr/bin: cffi's extension in the zip
loads only there); without one these tests skip loudly, and fail under ``CI``. The process answers
events one per line on stdin, so one "Lambda environment" keeps its memory across invocations:
genuine CRLs allow a good certificate and deny a revoked one; tampered, foreign, rolled-back and
expired CRLs deny once the grace (0 here) is over.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest
from cryptography import x509

from tests.support.authorizer_pki import CrlServer, Pki, crl, crl_server, make_pki, pem_of, tampered
from tests.support.authorizer_zip import BUILD, build_zip, require_lambda_python
from tests.unit.test_authorizer import http_event, rest_event

REPO = Path(__file__).resolve().parents[2]
LAMBDA_PYTHON: str = build_zip().LAMBDA_PYTHON
# The zip whose native code this machine runs.
ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())

# One event per line in, one "RESULT <json>" line out; the handler's own log lines pass through.
DRIVER = """
import json, os, sys
import lambda_function, cryptography, clients, _cffi_backend
where = {m.__name__: m.__file__ for m in (lambda_function, cryptography, clients, _cffi_backend)}
where["python"] = "%d.%d" % sys.version_info[:2]
print("ORIGINS " + json.dumps(where), flush=True)
for line in sys.stdin:
    call = json.loads(line)
    os.environ.clear()
    os.environ.update(call["env"])
    print("RESULT " + json.dumps(lambda_function.lambda_handler(call["event"], None)), flush=True)
"""


def _manifest(zip_path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(zip_path) as zf:
        manifest: dict[str, Any] = json.loads(zf.read("authorizer-build.json"))
    return manifest


@pytest.fixture(scope="module")
def arch() -> str:
    if ARCH is None:
        pytest.skip(f"SKIPPING: Lambda has no zip for this machine ({platform.machine()})")
    return ARCH


@pytest.fixture(scope="module")
def zip_path(arch: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    name: str = build_zip().zip_name(arch)
    built = REPO / "dist" / name
    if built.exists() and _manifest(built)["python_version"] == LAMBDA_PYTHON:
        return built
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, str(BUILD), "--arch", arch, "--python-version", LAMBDA_PYTHON, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out / name


@pytest.fixture(scope="module")
def python() -> str:
    """An interpreter of the Lambda runtime's Python (skips loudly without one; fails under CI)."""
    return require_lambda_python(LAMBDA_PYTHON)


@pytest.fixture(scope="module")
def unpacked(zip_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("lambda-task")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(target)
    return target


@dataclass
class LambdaEnvironment:
    """One process running the unpacked zip; ``origins`` says where its modules were imported from."""

    process: subprocess.Popen[str]
    origins: dict[str, str]
    logs: list[dict[str, Any]]

    def __call__(self, event: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
        stdin, stdout = self._pipes()
        stdin.write(json.dumps({"event": event, "env": env}) + "\n")
        stdin.flush()
        while True:
            line = stdout.readline()
            assert line, f"the handler process ended: {self.process.stderr.read() if self.process.stderr else ''}"
            if line.startswith("RESULT "):
                result: dict[str, Any] = json.loads(line[7:])
                return result
            self.logs.append(json.loads(line))

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        return self.process.stdin, self.process.stdout


@pytest.fixture
def lambda_env(python: str, unpacked: Path, tmp_path: Path) -> Iterator[LambdaEnvironment]:
    # -S: no site-packages; -P: not the current directory either. PYTHONPATH is the unpacked zip.
    process = subprocess.Popen(
        [python, "-S", "-P", "-c", DRIVER],
        cwd=tmp_path,
        env={"PYTHONPATH": str(unpacked), "PATH": os.environ.get("PATH", "")},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("ORIGINS "), first + (process.stderr.read() if process.stderr else "")
        origins = json.loads(first[8:])
        assert origins.pop("python") == LAMBDA_PYTHON, python
        yield LambdaEnvironment(process, origins, [])
    finally:
        if process.stdin:
            process.stdin.close()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki("Zip")


@pytest.fixture
def revoked(pki: Pki) -> x509.Certificate:
    return pki.leaf()


@pytest.fixture
def server(pki: Pki, revoked: x509.Certificate) -> Iterator[CrlServer]:
    with crl_server(pki, crl(pki.issuing, revoked=[revoked.serial_number], number=5), crl(pki.root)) as srv:
        yield srv


def env_of(server: CrlServer) -> dict[str, str]:
    # TTL 0 and no grace: every invocation revalidates, and a refused CRL denies at once.
    return server.env(ISSUER_CRLS_TTL="0", ISSUER_CRLS_MAX_STALE="0")


def test_the_zip_has_the_handler_and_its_dependencies_at_its_root(zip_path: Path, arch: str) -> None:
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
    assert {"lambda_function.py", "clients/authorizer/handler.py", "cryptography/__init__.py"} <= names
    assert any(n.startswith(f"_cffi_backend.{_abi_tag()}-") for n in names)
    assert not any("__pycache__" in n or n.startswith("bin/") for n in names)
    manifest = _manifest(zip_path)
    assert (manifest["handler"], manifest["python_version"], manifest["architecture"]) == (
        "lambda_function.lambda_handler", LAMBDA_PYTHON, arch)  # fmt: skip


def _abi_tag() -> str:
    return "cpython-" + LAMBDA_PYTHON.replace(".", "")


def test_genuine_crls_from_the_zip(
    lambda_env: LambdaEnvironment, unpacked: Path, server: CrlServer, pki: Pki, revoked: x509.Certificate
) -> None:
    assert all(path.startswith(str(unpacked)) for path in lambda_env.origins.values()), lambda_env.origins
    assert Path(lambda_env.origins["_cffi_backend"]).name.startswith(f"_cffi_backend.{_abi_tag()}-")
    assert lambda_env(http_event(pki.leaf()), env_of(server))["isAuthorized"] is True
    response = lambda_env(rest_event(revoked), env_of(server))
    assert response["policyDocument"]["Statement"][0]["Effect"] == "Deny"
    assert response["context"]["reason"] == "revoked"


@pytest.mark.parametrize("attack", ["tampered", "foreign", "expired"])
def test_bad_crls_deny_from_the_zip(
    lambda_env: LambdaEnvironment, server: CrlServer, pki: Pki, revoked: x509.Certificate, attack: str
) -> None:
    now = datetime.now(UTC)
    if attack == "tampered":  # the revoked serial edited out of the genuine CRL
        issuing = tampered(crl(pki.issuing, revoked=[revoked.serial_number], number=6), revoked.serial_number)
    elif attack == "foreign":  # same name, another key
        issuing = pem_of(crl(make_pki("Zip").issuing, number=7))
    else:
        issuing = pem_of(crl(pki.issuing, this_update=now - timedelta(days=2), next_update=now - timedelta(hours=1)))
    server.crls = issuing + pem_of(crl(pki.root))
    expected = {"tampered": "crl_signature_invalid", "foreign": "crl_signature_invalid", "expired": "crl_expired"}
    for leaf in (revoked, pki.leaf()):
        response = lambda_env(http_event(leaf), env_of(server))
        assert response["isAuthorized"] is False
        assert response["context"]["reason"] == expected[attack]


def test_a_rolled_back_crl_denies_from_the_zip(
    lambda_env: LambdaEnvironment, server: CrlServer, pki: Pki, revoked: x509.Certificate
) -> None:
    good = pki.leaf()
    assert lambda_env(http_event(good), env_of(server))["isAuthorized"] is True  # CRL 5 seen
    server.crls = pem_of(crl(pki.issuing, number=4)) + pem_of(crl(pki.root))  # an older copy, without the revocation
    for leaf in (revoked, good):
        response = lambda_env(http_event(leaf), env_of(server))
        assert response["isAuthorized"] is False and response["context"]["reason"] == "crl_rolled_back"
    assert any(line.get("event") == "crl_refused" for line in lambda_env.logs)


@pytest.mark.slow
def test_make_authorizer_zip_builds_both_architectures_for_lambdas_python(tmp_path: Path) -> None:
    """What ``make authorizer-zip`` runs: Lambda's Python (3.12), each zip's native code for its machine,
    and the same bytes when built twice (entries sorted, one fixed timestamp)."""
    out = tmp_path / "dist"
    command = [sys.executable, str(BUILD), "--arch", "x86_64", "--arch", "arm64", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    for arch, machine, triplet in (("x86_64", 62, "x86_64-linux-gnu"), ("arm64", 183, "aarch64-linux-gnu")):
        path = out / f"authorizer-{arch}.zip"
        assert _manifest(path)["python_version"] == LAMBDA_PYTHON and _manifest(path)["architecture"] == arch
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            assert f"_cffi_backend.{_abi_tag()}-{triplet}.so" in names
            rust = zf.read("cryptography/hazmat/bindings/_rust.abi3.so")
        assert rust[:4] == b"\x7fELF" and int.from_bytes(rust[18:20], "little") == machine
    first = (out / "authorizer-x86_64.zip").read_bytes()
    again = subprocess.run([*command[:3], "x86_64", "--out", str(tmp_path / "again")], capture_output=True, timeout=600)
    assert again.returncode == 0 and (tmp_path / "again" / "authorizer-x86_64.zip").read_bytes() == first
