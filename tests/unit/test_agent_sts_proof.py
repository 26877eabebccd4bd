"""The IAM proof: what is signed, with which credentials, and that AWS-style verifiers accept it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from cryptography.hazmat.primitives.asymmetric import ec

from clients.errors import CredentialsError, UsageError
from clients.keys import build_csr, csr_der
from clients.sts_proof import (
    SignedStsRequest,
    StaticCredentials,
    default_region,
    load_credentials,
    sign_get_caller_identity,
    signing_region,
    sts_host,
)
from tests.support.fake_imds import serve_in_thread
from tests.support.moto_server import MotoServer, moto_server

SERVER_ID = "issuer.test.example"
AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^,]+), SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$")


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No credentials or region from the developer's machine; botocore never reaches for real IMDS."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path


@pytest.fixture(scope="module")
def csr() -> bytes:
    return csr_der(build_csr(ec.generate_private_key(ec.SECP256R1()), common_name="host-1"))


def parse_auth(headers: dict[str, str]) -> tuple[list[str], list[str], str]:
    match = AUTH.match(headers["Authorization"])
    assert match, headers["Authorization"]
    return match.group(1).split("/"), match.group(2).split(";"), match.group(3)


def resign(wire: dict[str, object], credentials: ReadOnlyCredentials, region: str) -> str:
    """The signature botocore computes for the request as it travels (from the wire form)."""
    headers = wire["headers"]
    assert isinstance(headers, dict)
    _, signed, _ = parse_auth(headers)
    request = AWSRequest(
        method=str(wire["method"]),
        url=str(wire["url"]),
        data=base64.b64decode(str(wire["body"])),
        headers={k: v for k, v in headers.items() if k.lower() in signed},
    )
    request.context["timestamp"] = headers["X-Amz-Date"]
    auth = SigV4Auth(credentials, "sts", region)
    return auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)


def sign_with_env(csr: bytes, region: str = "eu-west-1") -> tuple[SignedStsRequest, dict[str, object]]:
    signed = sign_get_caller_identity(credentials=load_credentials(), region=region, server_id=SERVER_ID, csr_der=csr)
    return signed, signed.to_wire()


def test_signed_request_has_the_shape_the_issuer_checks(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch, csr: bytes
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVEXAMPLE000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    signed, wire = sign_with_env(csr)

    assert wire["method"] == "POST"
    assert wire["url"] == "https://sts.eu-west-1.amazonaws.com/"
    assert base64.b64decode(str(wire["body"])) == b"Action=GetCallerIdentity&Version=2011-06-15"
    headers = signed.headers
    assert headers["Host"] == "sts.eu-west-1.amazonaws.com"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded; charset=utf-8"
    assert headers["X-Issuer-Server-ID"] == SERVER_ID
    assert headers["X-Issuer-CSR-SHA256"] == hashlib.sha256(csr).hexdigest()
    assert "X-Amz-Security-Token" not in headers
    scope, signed_headers, _ = parse_auth(dict(headers))
    assert scope[0] == "AKIAENVEXAMPLE000001"
    assert scope[1] == headers["X-Amz-Date"][:8]
    assert "/".join(scope[2:]) == "eu-west-1/sts/aws4_request"
    assert {"host", "x-amz-date", "x-issuer-server-id", "x-issuer-csr-sha256", "content-type"} <= set(signed_headers)
    assert signed_headers == sorted(signed_headers)
    assert json.loads(json.dumps(wire)) == wire  # all plain JSON


def test_botocore_reproduces_the_signature_and_it_covers_the_issuer_headers(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch, csr: bytes
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVEXAMPLE000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    _, wire = sign_with_env(csr)
    headers = wire["headers"]
    assert isinstance(headers, dict)
    _, _, signature = parse_auth(headers)
    creds = ReadOnlyCredentials("AKIAENVEXAMPLE000001", "env-secret", None)

    assert resign(wire, creds, "eu-west-1") == signature
    assert resign(wire, ReadOnlyCredentials("AKIAENVEXAMPLE000001", "other", None), "eu-west-1") != signature
    for header in ("X-Issuer-CSR-SHA256", "X-Issuer-Server-ID"):
        tampered = {**wire, "headers": {**headers, header: "0" * 64}}
        assert resign(tampered, creds, "eu-west-1") != signature, header


def test_session_token_is_sent_and_signed(aws_env: Path, monkeypatch: pytest.MonkeyPatch, csr: bytes) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAENVEXAMPLE000002")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-2")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-xyz")
    _, wire = sign_with_env(csr, region="us-west-2")
    headers = wire["headers"]
    assert isinstance(headers, dict)
    assert headers["X-Amz-Security-Token"] == "session-token-xyz"
    _, signed_headers, signature = parse_auth(headers)
    assert "x-amz-security-token" in signed_headers
    creds = ReadOnlyCredentials("ASIAENVEXAMPLE000002", "env-secret-2", "session-token-xyz")
    assert resign(wire, creds, "us-west-2") == signature


def test_profile_credentials_come_from_the_shared_credentials_file(aws_env: Path, csr: bytes) -> None:
    (aws_env / "aws-credentials").write_text(
        "[default]\naws_access_key_id = AKIADEFAULT000000000\naws_secret_access_key = d\n"
        "[machine]\naws_access_key_id = AKIAPROFILE000000000\naws_secret_access_key = profile-secret\n"
    )
    creds = load_credentials(profile="machine")
    assert (creds.access_key, creds.secret_key, creds.token) == ("AKIAPROFILE000000000", "profile-secret", None)
    assert "profile-secret" not in repr(creds)  # the secret stays out of logs and tracebacks
    signed = sign_get_caller_identity(credentials=creds, region="eu-west-1", server_id=SERVER_ID, csr_der=csr)
    scope, _, _ = parse_auth(dict(signed.headers))
    assert scope[0] == "AKIAPROFILE000000000"


def test_credential_process_is_used_as_for_iam_roles_anywhere(aws_env: Path) -> None:
    helper = aws_env / "signing_helper.py"
    helper.write_text(
        "import json\nprint(json.dumps({'Version': 1, 'AccessKeyId': 'ASIAROLESANYWHERE001',"
        " 'SecretAccessKey': 's', 'SessionToken': 'ra-token', 'Expiration': '2099-01-01T00:00:00Z'}))\n"
    )
    (aws_env / "aws-config").write_text(f"[profile ra]\ncredential_process = {sys.executable} {helper}\n")
    creds = load_credentials(profile="ra")
    assert (creds.access_key, creds.token) == ("ASIAROLESANYWHERE001", "ra-token")


def test_a_failing_credential_process_is_reported(aws_env: Path) -> None:
    (aws_env / "aws-config").write_text(f"[profile ra]\ncredential_process = {sys.executable} -c 'exit(3)'\n")
    with pytest.raises(CredentialsError) as err:
        load_credentials(profile="ra")
    assert err.value.code == "aws_credentials_failed"


@pytest.fixture
def container_endpoint() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def creds(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "ecs-auth-token":
            return web.json_response({"message": "no"}, status=403)
        return web.json_response(
            {
                "AccessKeyId": "ASIACONTAINER0000001",
                "SecretAccessKey": "container-secret",
                "Token": "container-token",
                "Expiration": "2099-01-01T00:00:00Z",
            }
        )

    app = web.Application()
    app.router.add_get("/creds", creds)
    with serve_in_thread(app) as url:
        yield f"{url}/creds", seen


def test_ecs_container_credentials(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch, container_endpoint: tuple[str, list[str]], csr: bytes
) -> None:
    url, seen = container_endpoint
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url)
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "ecs-auth-token")
    creds = load_credentials()
    assert (creds.access_key, creds.secret_key, creds.token) == (
        "ASIACONTAINER0000001",
        "container-secret",
        "container-token",
    )
    assert seen == ["ecs-auth-token"]
    signed = sign_get_caller_identity(credentials=creds, region="eu-west-1", server_id=SERVER_ID, csr_der=csr)
    assert signed.headers["X-Amz-Security-Token"] == "container-token"


def test_no_credentials_lists_where_botocore_looked(aws_env: Path) -> None:
    with pytest.raises(CredentialsError) as err:
        load_credentials()
    message = err.value.message
    assert err.value.code == "aws_credentials_missing"
    assert message.startswith("no AWS credentials found; botocore looked in: ")
    assert "AWS_ACCESS_KEY_ID" in message
    assert str(aws_env / "aws-credentials") in message
    assert "credential_process" in message
    assert "container credentials" in message
    assert "instance profile" in message


def test_unknown_profile_is_named(aws_env: Path) -> None:
    with pytest.raises(CredentialsError) as err:
        load_credentials(profile="nope")
    assert err.value.code == "aws_profile_not_found"
    assert "'nope'" in err.value.message


def test_default_region(aws_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_region() == "us-east-1"
    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")
    assert default_region() == "ap-southeast-2"
    (aws_env / "aws-config").write_text("[profile p]\nregion = eu-central-1\n")
    assert default_region(profile="p") == "eu-central-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    assert default_region() == "eu-west-3"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("sts.amazonaws.com", "us-east-1"),
        ("sts.eu-west-1.amazonaws.com", "eu-west-1"),
        ("sts-fips.us-east-2.amazonaws.com", "us-east-2"),
        ("sts.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
        ("sts.cn-north-1.amazonaws.com.cn", "cn-north-1"),
        ("sts.ap-south-1.api.aws", "ap-south-1"),
        ("sts.example.internal", "xx-given-1"),  # a host that names no region: the region given
    ],
)
def test_signing_region_follows_the_host(host: str, expected: str) -> None:
    assert signing_region(host, region="xx-given-1") == expected


def test_regional_hosts() -> None:
    assert sts_host("eu-west-1") == "sts.eu-west-1.amazonaws.com"
    assert sts_host("cn-northwest-1") == "sts.cn-northwest-1.amazonaws.com.cn"


def test_global_host_signs_for_us_east_1(csr: bytes) -> None:
    signed = sign_get_caller_identity(
        credentials=StaticCredentials("AKIASTATIC0000000001", "s"),
        region="eu-west-1",
        server_id=SERVER_ID,
        csr_der=csr,
        host="sts.amazonaws.com",
    )
    assert signed.url == "https://sts.amazonaws.com/"
    scope, _, _ = parse_auth(dict(signed.headers))
    assert scope[2] == "us-east-1"


@pytest.mark.parametrize("server_id", ["", " padded", "a\r\nX-Evil: 1", "naïve"])
def test_unusable_server_ids_are_refused(server_id: str, csr: bytes) -> None:
    with pytest.raises(UsageError):
        sign_get_caller_identity(
            credentials=StaticCredentials("AKIA", "s"), region="eu-west-1", server_id=server_id, csr_der=csr
        )


# --- an independent verifier: moto's STS with request authentication on ------------------------


@pytest.fixture(scope="module")
def moto_sts() -> Iterator[tuple[MotoServer, StaticCredentials, str]]:
    # The first two actions (create user, create access key) run unauthenticated; every
    # later request must carry a valid SigV4 signature of a key moto knows.
    with moto_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "2"}) as moto:
        iam = boto3.client(
            "iam",
            endpoint_url=moto.url,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        user = iam.create_user(UserName="machine-1")["User"]
        key = iam.create_access_key(UserName="machine-1")["AccessKey"]
        yield moto, StaticCredentials(key["AccessKeyId"], key["SecretAccessKey"]), user["Arn"]


def replay(moto: MotoServer, wire: dict[str, object]) -> tuple[int, str]:
    """What the issuer does with the proof: send it as is (Host kept) to the STS endpoint."""
    headers = wire["headers"]
    assert isinstance(headers, dict)
    request = urllib.request.Request(
        moto.url + "/", data=base64.b64decode(str(wire["body"])), method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_moto_sts_accepts_the_proof_and_names_the_signer(
    moto_sts: tuple[MotoServer, StaticCredentials, str], csr: bytes
) -> None:
    moto, creds, arn = moto_sts
    signed = sign_get_caller_identity(credentials=creds, region="us-east-1", server_id=SERVER_ID, csr_der=csr)
    status, body = replay(moto, signed.to_wire())
    assert status == 200, body
    assert "GetCallerIdentityResponse" in body
    assert f"<Arn>{arn}</Arn>" in body


def test_moto_sts_rejects_a_proof_moved_to_another_csr(
    moto_sts: tuple[MotoServer, StaticCredentials, str], csr: bytes
) -> None:
    moto, creds, _ = moto_sts
    wire = sign_get_caller_identity(credentials=creds, region="us-east-1", server_id=SERVER_ID, csr_der=csr).to_wire()
    headers = wire["headers"]
    assert isinstance(headers, dict)
    moved = {**wire, "headers": {**headers, "X-Issuer-CSR-SHA256": hashlib.sha256(b"other csr").hexdigest()}}
    status, body = replay(moto, moved)
    assert status == 403, body
    assert "SignatureDoesNotMatch" in body
