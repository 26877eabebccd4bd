"""``issuer-agent bootstrap`` end to end against a small local issuer, checked with openssl.

The issuer here is a stand-in (the real service has its own e2e tests): it checks
what the agent sends, signs the CSR's key with a throwaway CA, and answers like v1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clients.agent.cli import main
from tests.support.fake_imds import SAMPLE_DOCUMENT, SAMPLE_RSA2048, fake_imds, serve_in_thread
from tests.support.moto_server import free_port

Json = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]


# --- a throwaway CA and a stand-in issuer -------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class ThrowawayCA:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    issuing_key: ec.EllipticCurvePrivateKey
    issuing: x509.Certificate

    @classmethod
    def create(cls) -> ThrowawayCA:
        now = datetime.now(timezone.utc)
        root_key = ec.generate_private_key(ec.SECP384R1())
        root = (
            x509.CertificateBuilder()
            .subject_name(_name("Test Root"))
            .issuer_name(_name("Test Root"))
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(root_key, hashes.SHA384())
        )
        issuing_key = ec.generate_private_key(ec.SECP256R1())
        issuing = (
            x509.CertificateBuilder()
            .subject_name(_name("Test Issuing"))
            .issuer_name(root.subject)
            .public_key(issuing_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=10))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(root_key, hashes.SHA384())
        )
        return cls(root_key, root, issuing_key, issuing)

    def issue(self, public_key: Any, *, uri: str) -> x509.Certificate:
        now = datetime.now(timezone.utc).replace(microsecond=0)
        return (
            x509.CertificateBuilder()
            .subject_name(_name("machine"))
            .issuer_name(self.issuing.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(seconds=60))
            .not_valid_after(now + timedelta(hours=24))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
            .sign(self.issuing_key, hashes.SHA256())
        )


def pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


Responder = Callable[[str, Json], Optional[web.Response]]


@dataclass
class FakeIssuer:
    url: str
    ca: ThrowawayCA
    received: list[tuple[str, Json, dict[str, str]]] = field(default_factory=list)
    # Returns a response to send instead of issuing, or None to issue normally.
    override: Responder = lambda path, body: None
    extra: Json = field(default_factory=dict)
    # Called during the request, e.g. to look at the disk while the agent waits.
    during: Callable[[str, Json], None] = lambda path, body: None


@pytest.fixture(scope="module")
def ca() -> ThrowawayCA:
    return ThrowawayCA.create()


@pytest.fixture
def issuer(ca: ThrowawayCA) -> Iterator[FakeIssuer]:
    state: dict[str, FakeIssuer] = {}

    async def handle(request: web.Request) -> web.Response:
        fake = state["fake"]
        body = await request.json()
        fake.received.append((request.path, body, dict(request.headers)))
        fake.during(request.path, body)
        override = fake.override(request.path, body)
        if override is not None:
            return override
        csr = x509.load_pem_x509_csr(body["csr"].encode())
        assert csr.is_signature_valid
        method = request.path.rsplit("/", 1)[1]
        cert = ca.issue(csr.public_key(), uri=f"spiffe://test.example/{method}/machine-1")
        answer = {
            "serial": format(cert.serial_number, "x"),
            "certificate": pem(cert),
            "chain": pem(ca.issuing),
            "bundle": pem(ca.root),
            "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "renew_after": (cert.not_valid_after_utc - timedelta(hours=8)).isoformat(),
            "identity": {"method": method, "principal": "machine-1", "uri_san": cert.extensions[-1].value[0].value},
            **fake.extra,
        }
        return web.json_response(answer, status=201)

    app = web.Application()
    app.router.add_post("/v1/issue/{method}", handle)
    with serve_in_thread(app) as url:
        state["fake"] = FakeIssuer(url=url, ca=ca)
        yield state["fake"]


def problem(status: int, code: str, detail: str, request_id: str | None = "req-0123456789") -> web.Response:
    body: Json = {"type": f"about:blank#{code}", "title": "Denied", "status": status, "detail": detail, "code": code}
    if request_id:
        body["request_id"] = request_id
    return web.Response(status=status, text=json.dumps(body), content_type="application/problem+json")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("AWS_", "ISSUER_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def openssl(*args: str) -> str:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_installed_pair_is_valid(out: Path) -> None:
    """openssl, independently: the key matches the certificate and the chain verifies to the bundle."""
    assert openssl("pkey", "-in", str(out / "key.pem"), "-pubout") == openssl(
        "x509", "-in", str(out / "cert.pem"), "-noout", "-pubkey"
    )
    verified = openssl(
        "verify",
        "-CAfile",
        str(out / "bundle.pem"),
        "-untrusted",
        str(out / "chain.pem"),
        "-purpose",
        "sslclient",
        str(out / "fullchain.pem"),
    )
    assert verified.strip().endswith(": OK")
    assert stat.S_IMODE(os.stat(out / "key.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


# --- help and usage -------------------------------------------------------------------------------


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "bootstrap" in capsys.readouterr().out
    assert main(["bootstrap", "--help"]) == 0
    text = capsys.readouterr().out
    assert "examples:" in text
    for method in ("--method token", "--method aws-ec2", "--method aws-iam"):
        assert method in text
    assert "ISSUER_JOIN_TOKEN" in text
    assert "key.pem (0600)" in text
    assert "issuer.json" in text
    for status in ("64  bad usage", "75  temporary", "78  configuration"):
        assert status in text


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 64


def test_missing_token_fails_with_one_line_and_touches_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    status = main(["bootstrap", "--method", "token", "--server", "http://127.0.0.1:9", "--out", str(out)])
    assert status == 64
    err = capsys.readouterr().err
    assert err.strip() == (
        "error: no join token: give --token, --token-file or set ISSUER_JOIN_TOKEN (code token_missing)"
    )
    assert not out.exists()


def test_iam_without_server_id_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["bootstrap", "--method", "aws-iam", "--server", "http://127.0.0.1:9", "--out", str(tmp_path)])
    assert status == 64
    assert "(code server_id_missing)" in one_line_error(capsys.readouterr().err)


def test_an_option_of_another_method_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bootstrap", "--method", "aws-ec2", "--token", "t", "--server", "https://x.test", "--out", str(tmp_path)]
    assert main(argv) == 64
    assert "--token is for --method token" in one_line_error(capsys.readouterr().err)


def test_plain_http_to_a_remote_issuer_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bootstrap", "--method", "token", "--token", "t", "--server", "http://192.0.2.10", "--out", str(tmp_path)]
    assert main(argv) == 64
    assert "(code insecure_transport)" in one_line_error(capsys.readouterr().err)


# --- token ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
def test_token_bootstrap_installs_a_working_pair(
    issuer: FakeIssuer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    key_type: str,
) -> None:
    monkeypatch.setenv("ISSUER_JOIN_TOKEN", "join-token-1")
    out = tmp_path / "out"
    argv = ["bootstrap", "--method", "token", "--server", issuer.url, "--out", str(out), "--role", "onprem"]
    assert main([*argv, "--key-type", key_type]) == 0

    ((path, body, _),) = issuer.received
    assert path == "/v1/issue/token"
    assert body["token"] == "join-token-1"
    assert body["role"] == "onprem"
    assert set(body) == {"csr", "role", "token"}
    assert_installed_pair_is_valid(out)
    key = serialization.load_pem_private_key((out / "key.pem").read_bytes(), password=None)
    expected = ec.EllipticCurvePrivateKey if key_type.startswith("ec") else rsa.RSAPrivateKey
    assert isinstance(key, expected)

    printed = capsys.readouterr().out
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert f"serial {cert.serial_number:x}" in printed
    assert f"wrote {out.resolve() / 'key.pem'} (0600)" in printed
    assert "identity token machine-1 (spiffe://test.example/token/machine-1)" in printed
    renew = cert.not_valid_after_utc - timedelta(hours=8)
    assert f"renew after {renew:%Y-%m-%dT%H:%M:%SZ}" in printed


def test_token_from_a_file(issuer: FakeIssuer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("join-token-from-file\n")
    argv = ["bootstrap", "--method", "token", "--token-file", str(token_file), "--server", issuer.url]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    assert issuer.received[0][1]["token"] == "join-token-from-file"


def test_a_problem_is_shown_with_code_and_request_id_and_nothing_is_written(
    issuer: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    issuer.override = lambda path, body: problem(401, "token_invalid", "The join token is not valid.")
    out = tmp_path / "out"
    assert main(["bootstrap", "--method", "token", "--token", "t", "--server", issuer.url, "--out", str(out)]) == 1
    assert one_line_error(capsys.readouterr().err) == (
        "error: The join token is not valid. (code token_invalid, HTTP 401, request req-0123456789)"
    )
    assert not (out / "key.pem").exists()


def test_an_unavailable_issuer_exits_75_so_schedulers_retry(
    issuer: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    issuer.override = lambda path, body: problem(503, "upstream_unavailable", "STS did not answer.")
    argv = ["bootstrap", "--method", "token", "--token", "t", "--server", issuer.url, "--out", str(tmp_path)]
    assert main(argv) == 75
    assert "(code upstream_unavailable, HTTP 503, request req-0123456789)" in capsys.readouterr().err


def test_an_unreachable_issuer_exits_75(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = f"http://127.0.0.1:{free_port()}"
    argv = ["bootstrap", "--method", "token", "--token", "t", "--server", server, "--out", str(tmp_path)]
    assert main(argv) == 75
    assert "(code server_unreachable)" in one_line_error(capsys.readouterr().err)


def test_a_certificate_for_another_key_is_refused_and_the_old_pair_kept(
    issuer: FakeIssuer, ca: ThrowawayCA, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["bootstrap", "--method", "token", "--token", "t", "--server", issuer.url, "--out", str(out)]
    assert main(argv) == 0
    old_key, old_cert = (out / "key.pem").read_bytes(), (out / "cert.pem").read_bytes()

    stranger = ca.issue(ec.generate_private_key(ec.SECP256R1()).public_key(), uri="spiffe://test.example/x")

    def wrong_key(path: str, body: Json) -> web.Response:
        return web.json_response(
            {
                "serial": format(stranger.serial_number, "x"),
                "certificate": pem(stranger),
                "chain": pem(ca.issuing),
                "bundle": pem(ca.root),
                "not_before": "2025-01-01T00:00:00+00:00",
                "not_after": "2025-01-02T00:00:00+00:00",
                "renew_after": "2025-01-01T16:00:00+00:00",
                "identity": {"method": "token", "principal": "m", "uri_san": "spiffe://test.example/x"},
            },
            status=201,
        )

    issuer.override = wrong_key
    assert main(argv) == 1
    assert "(code certificate_key_mismatch)" in one_line_error(capsys.readouterr().err)
    assert (out / "key.pem").read_bytes() == old_key
    assert (out / "cert.pem").read_bytes() == old_cert


# --- EC2 --------------------------------------------------------------------------------------------


def test_ec2_bootstrap_sends_the_exact_document_and_keeps_the_nonce(
    issuer: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    nonce_on_disk_during_request: list[str] = []
    issuer.during = lambda path, body: nonce_on_disk_during_request.append((out / "instance-nonce").read_text().strip())
    with fake_imds() as imds:
        argv = ["bootstrap", "--method", "aws-ec2", "--imds-endpoint", imds.url, "--server", issuer.url]
        assert main([*argv, "--out", str(out)]) == 0
        (_, first, _) = issuer.received[0]
        assert first["document"] == SAMPLE_DOCUMENT
        assert first["rsa2048"] == SAMPLE_RSA2048
        # Written before the request, so a crash after the issuer bound the instance cannot lose it.
        assert nonce_on_disk_during_request == [first["nonce"]]
        assert len(first["nonce"]) >= 43  # token_urlsafe(32)
        assert stat.S_IMODE(os.stat(out / "instance-nonce").st_mode) == 0o600
        assert_installed_pair_is_valid(out)
        assert "instance nonce in" in capsys.readouterr().out

        # The next attestation presents the same nonce; a nonce the issuer returns replaces it.
        issuer.extra = {"nonce": "server-chosen-nonce"}
        assert main([*argv, "--out", str(out)]) == 0
        assert issuer.received[1][1]["nonce"] == first["nonce"]
        assert (out / "instance-nonce").read_text().strip() == "server-chosen-nonce"


def test_ec2_nonce_from_the_issuer_is_kept_even_when_the_answer_is_unusable(issuer: FakeIssuer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    issuer.override = lambda path, body: web.json_response({"nonce": "bound-nonce"}, status=201)
    with fake_imds() as imds:
        argv = ["bootstrap", "--method", "aws-ec2", "--imds-endpoint", imds.url, "--server", issuer.url]
        assert main([*argv, "--out", str(out)]) == 1
    assert (out / "instance-nonce").read_text().strip() == "bound-nonce"


def test_ec2_on_an_imdsv1_only_host_explains(
    issuer: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.fake_imds import ImdsConfig

    with fake_imds(ImdsConfig(mode="v1-only")) as imds:
        argv = ["bootstrap", "--method", "aws-ec2", "--imds-endpoint", imds.url, "--server", issuer.url]
        assert main([*argv, "--out", str(tmp_path / "out")]) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "IMDSv2 is required" in line
    assert line.endswith("(code imds_v2_unavailable)")
    assert issuer.received == []


def test_ec2_endpoint_from_the_environment(issuer: FakeIssuer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with fake_imds() as imds:
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url)
        argv = ["bootstrap", "--method", "aws-ec2", "--server", issuer.url, "--out", str(tmp_path / "out")]
        assert main(argv) == 0
        assert [r.path for r in imds.requests] == [
            "/latest/api/token",
            "/latest/dynamic/instance-identity/document",
            "/latest/dynamic/instance-identity/rsa2048",
        ]


# --- IAM --------------------------------------------------------------------------------------------


def test_iam_bootstrap_binds_the_proof_to_the_csr_it_sends(
    issuer: FakeIssuer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVEXAMPLE000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("ISSUER_SERVER_ID", "issuer.test.example")
    out = tmp_path / "out"
    argv = ["bootstrap", "--method", "aws-iam", "--sts-region", "eu-west-1", "--server", issuer.url]
    assert main([*argv, "--out", str(out)]) == 0

    ((path, body, _),) = issuer.received
    assert path == "/v1/issue/aws-iam"
    sts = body["sts_request"]
    csr = x509.load_pem_x509_csr(body["csr"].encode())
    assert (
        sts["headers"]["X-Issuer-CSR-SHA256"]
        == hashlib.sha256(csr.public_bytes(serialization.Encoding.DER)).hexdigest()
    )
    assert sts["headers"]["X-Issuer-Server-ID"] == "issuer.test.example"
    assert sts["url"] == "https://sts.eu-west-1.amazonaws.com/"
    assert base64.b64decode(sts["body"]) == b"Action=GetCallerIdentity&Version=2011-06-15"
    assert "/eu-west-1/sts/aws4_request" in sts["headers"]["Authorization"]
    assert_installed_pair_is_valid(out)


def test_iam_without_credentials_says_where_it_looked(
    issuer: FakeIssuer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bootstrap", "--method", "aws-iam", "--server-id", "issuer.test.example", "--server", issuer.url]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 1
    line = one_line_error(capsys.readouterr().err)
    assert line.startswith("error: no AWS credentials found; botocore looked in: ")
    assert line.endswith("(code aws_credentials_missing)")
    assert issuer.received == []


def test_iam_host_and_region_must_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "bootstrap", "--method", "aws-iam", "--server-id", "s", "--server", "https://issuer.test",
        "--sts-region", "eu-west-1", "--sts-endpoint-host", "sts.us-east-2.amazonaws.com", "--out", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 64
    assert "(code sts_region_mismatch)" in one_line_error(capsys.readouterr().err)


def test_the_agent_imports_only_the_standard_library_cryptography_and_lazily_botocore() -> None:
    code = (
        "import sys, clients.agent.cli, clients.agent.daemon; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'aiohttp', 'sqlalchemy', 'asyncpg', 'boto3', 'botocore', 'issuer', 'ca', 'asn1crypto'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.strip() == "[]"
