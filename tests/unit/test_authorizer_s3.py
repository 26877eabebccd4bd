"""The authorizer's S3 source: its own SigV4 signing, checked three ways.

1. AWS's published example signature (S3 GET Object with a Range header);
2. botocore's ``S3SigV4Auth`` signing the same request;
3. moto's server with request authentication on, which recomputes every signature with the
   secret of the key it issued and evaluates the caller's IAM policy: our GETs are accepted
   with an IAM user's key and with a role session (``x-amz-security-token``, what Lambda has),
   and refused with a wrong secret, an unknown key, or a key whose policy does not grant the object.

moto lets requests through unauthenticated until ``/moto-api/reset-auth`` is told ``0``
(what ``set_initial_no_auth_action_count`` does in server mode): the fixture builds the IAM
principals, bucket and object first, then switches authentication on for everything after.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from clients.authorizer import AwsEnvironment, RevocationCache, authorize, sigv4_headers
from tests.support.moto_server import MotoServer, moto_server
from tests.unit.test_authorizer import POLICY, allowed, rest_event, revoked_doc
from tests.unit.test_authorizer_cert import Ca, make_ca, make_leaf

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
BUCKET = "issuer-revocations"
# A space exercises the URI encoding. (No parentheses: moto matches IAM resource ARNs as regular
# expressions, so "(v1)" in a policy would not match the key, even for boto3.)
KEY = "authorizer/revoked list v1.json"
OTHER_KEY = "authorizer/other.json"


# --- known answers ----------------------------------------------------------------------------


def test_aws_documented_example_signature() -> None:
    # "Examples: Signature Calculations in AWS Signature Version 4", GET Object with Range.
    aws = AwsEnvironment(
        region="us-east-1",
        access_key_id="AKIAIOSFODNN7EXAMPLE",
        secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    )
    headers = sigv4_headers(
        url="https://examplebucket.s3.amazonaws.com/test.txt",
        aws=aws,
        now=datetime(2013, 5, 24, tzinfo=UTC),
        signed={"Range": "bytes=0-9"},
    )
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


@pytest.mark.parametrize("token", ["", "FwoGZXIvYXdzEJr//////////token+/="])
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5000/bucket/revoked.json",
        "http://bucket.s3.eu-west-1.amazonaws.com/a/b%20c%28d%29.json",
        "http://s3.eu-west-1.amazonaws.com/dotted.bucket/key~x_y-z.json",
        "http://127.0.0.1:5000/bucket/key.json?versionId=a%20b%2Bc&acl=&x-id=GetObject",
    ],
)
def test_same_signature_as_botocore(url: str, token: str) -> None:
    # http:// so that botocore signs the empty payload's hash rather than UNSIGNED-PAYLOAD.
    credentials = Credentials("AKIDEXAMPLE", "secret/with+chars", token or None)
    request = AWSRequest(method="GET", url=url, headers={})
    S3SigV4Auth(credentials, "s3", "eu-west-1").add_auth(request)
    now = datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    aws = AwsEnvironment("eu-west-1", "AKIDEXAMPLE", "secret/with+chars", token)
    ours = sigv4_headers(url=url, aws=aws, now=now)
    assert ours["authorization"] == request.headers["Authorization"]
    assert ours["x-amz-content-sha256"] == request.headers["X-Amz-Content-SHA256"]


# --- moto with authentication on --------------------------------------------------------------


@dataclass(frozen=True)
class S3World:
    server: MotoServer
    user_key: tuple[str, str]
    role_key: tuple[str, str, str]
    revoked_serial: str
    ca: Ca

    def env(self, *, key: str = KEY, secret: str | None = None, session: bool = True, **extra: str) -> dict[str, str]:
        access, real_secret, token = self.role_key if session else (*self.user_key, "")
        env = {
            "ISSUER_REVOKED_URL": f"s3://{BUCKET}/{key}",
            "ISSUER_AUTHZ_POLICY": json.dumps(POLICY),
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": access,
            "AWS_SECRET_ACCESS_KEY": secret if secret is not None else real_secret,
            "AWS_ENDPOINT_URL_S3": self.server.url,
            **extra,
        }
        if token:
            env["AWS_SESSION_TOKEN"] = token
        return env

    def client(self, service: str, key: tuple[str, ...]) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.server.url,
            region_name=REGION,
            aws_access_key_id=key[0],
            aws_secret_access_key=key[1],
            aws_session_token=key[2] if len(key) > 2 else None,
        )


def _read_only(resource: str) -> str:
    """The IAM policy the README tells operators to give the authorizer's role."""
    return json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": resource}]}
    )


@pytest.fixture(scope="module")
def world() -> Iterator[S3World]:
    ca = make_ca()
    revoked = make_leaf(ca)
    serial = format(revoked.serial_number, "x")
    with moto_server() as server:  # authentication off while we set up
        setup = {"aws_access_key_id": "AKIASETUPSETUPSETUP0", "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", endpoint_url=server.url, region_name=REGION, **setup)
        s3 = boto3.client("s3", endpoint_url=server.url, region_name=REGION, **setup)
        object_arn = f"arn:aws:s3:::{BUCKET}/{KEY}"
        role_arn = f"arn:aws:iam::{ACCOUNT_ID}:role/issuer-authorizer"

        iam.create_user(UserName="publisher")
        user_key = iam.create_access_key(UserName="publisher")["AccessKey"]
        user_policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": object_arn},
                {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn},
            ],
        }
        iam.put_user_policy(UserName="publisher", PolicyName="publish", PolicyDocument=json.dumps(user_policy))
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "sts:AssumeRole",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:user/publisher"},
                }
            ],
        }
        iam.create_role(RoleName="issuer-authorizer", AssumeRolePolicyDocument=json.dumps(trust))
        iam.put_role_policy(RoleName="issuer-authorizer", PolicyName="read", PolicyDocument=_read_only(object_arn))
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=revoked_doc(serial), ContentType="application/json")
        s3.put_object(Bucket=BUCKET, Key=OTHER_KEY, Body=revoked_doc(), ContentType="application/json")

        # text/plain: with urllib's default form type, Flask would parse the body away as a form.
        switch = urllib.request.Request(
            f"{server.url}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(switch, timeout=10).read()  # from here on every request is authenticated

        sts = boto3.client(
            "sts",
            endpoint_url=server.url,
            region_name=REGION,
            aws_access_key_id=user_key["AccessKeyId"],
            aws_secret_access_key=user_key["SecretAccessKey"],
        )
        creds = sts.assume_role(RoleArn=role_arn, RoleSessionName="lambda")["Credentials"]
        yield S3World(
            server=server,
            user_key=(user_key["AccessKeyId"], user_key["SecretAccessKey"]),
            role_key=(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]),
            revoked_serial=serial,
            ca=ca,
        )


@dataclass
class Calls:
    env: dict[str, str]
    cache: RevocationCache
    lines: list[dict[str, Any]]

    def __call__(self, event: object, now: datetime) -> dict[str, Any]:
        return authorize(event, env=self.env, cache=self.cache, now=now, log=lambda s: self.lines.append(json.loads(s)))

    def named(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["event"] == event]


def calls(env: dict[str, str]) -> Calls:
    return Calls(env, RevocationCache(), [])


def test_moto_refuses_unsigned_requests(world: S3World) -> None:
    """The control: authentication really is on, so acceptance below means something."""
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{world.server.url}/{BUCKET}/authorizer/other.json", timeout=10)
    assert info.value.code in (401, 403)


@pytest.mark.parametrize("session", [True, False], ids=["role-session", "user-key"])
def test_signed_get_is_accepted_and_the_list_applies(world: S3World, session: bool) -> None:
    authz = calls(world.env(session=session))
    now = datetime.now(UTC)
    revoked = make_leaf(world.ca, serial=int(world.revoked_serial, 16))
    assert allowed(authz(rest_event(make_leaf(world.ca)), now))
    assert not allowed(authz(rest_event(revoked), now))
    assert authz.lines[-1]["reason"] == "revoked"
    fetched = authz.named("revocation_list_fetched")
    assert len(fetched) == 1 and fetched[0]["serials"] == 1 and fetched[0]["source"] == f"s3://{BUCKET}/{KEY}"


def test_s3_etag_revalidation_and_a_new_version(world: S3World) -> None:
    authz = calls(world.env(ISSUER_REVOKED_TTL="60"))
    later = make_leaf(world.ca)
    t0 = datetime.now(UTC)
    assert allowed(authz(rest_event(later), t0))
    assert allowed(authz(rest_event(later), t0 + timedelta(seconds=61)))
    assert len(authz.named("revocation_list_not_modified")) == 1  # S3 answered 304 to If-None-Match

    publisher = world.client("s3", world.user_key)
    both = revoked_doc(world.revoked_serial, format(later.serial_number, "x"))
    publisher.put_object(Bucket=BUCKET, Key=KEY, Body=both, ContentType="application/json")
    try:
        assert not allowed(authz(rest_event(later), t0 + timedelta(seconds=122)))
        assert authz.lines[-1]["reason"] == "revoked"
        assert len(authz.named("revocation_list_fetched")) == 2
    finally:
        publisher.put_object(Bucket=BUCKET, Key=KEY, Body=revoked_doc(world.revoked_serial))


@pytest.mark.parametrize(
    ("change", "s3_code"),
    [
        ({"secret": "not-the-secret"}, "SignatureDoesNotMatch"),
        ({"key": OTHER_KEY}, "AccessDenied"),  # the role may read only the list's object
    ],
    ids=["wrong-secret", "not-granted"],
)
def test_refused_by_s3_means_no_list(world: S3World, change: dict[str, str], s3_code: str) -> None:
    authz = calls(world.env(secret=change.get("secret"), key=change.get("key", KEY)))
    assert not allowed(authz(rest_event(make_leaf(world.ca)), datetime.now(UTC)))
    assert authz.lines[-1]["reason"] == "revocation_list_unavailable"
    error = authz.named("revocation_source_failed")[0]["error"]
    assert "403" in error and s3_code in error


def test_unknown_access_key_is_refused(world: S3World) -> None:
    env = world.env(session=False) | {"AWS_ACCESS_KEY_ID": "AKIAUNKNOWNUNKNOWN00"}
    authz = calls(env)
    assert not allowed(authz(rest_event(make_leaf(world.ca)), datetime.now(UTC)))
    assert "InvalidAccessKeyId" in authz.named("revocation_source_failed")[0]["error"]


def test_wrong_session_token_is_refused(world: S3World) -> None:
    authz = calls(world.env() | {"AWS_SESSION_TOKEN": "not-the-token"})
    assert not allowed(authz(rest_event(make_leaf(world.ca)), datetime.now(UTC)))
    assert "400 InvalidToken" in authz.named("revocation_source_failed")[0]["error"]  # as S3 answers


def test_user_key_without_the_object_grant_is_refused(world: S3World) -> None:
    # The publisher user may read KEY but not OTHER_KEY: moto evaluates the IAM policy.
    authz = calls(world.env(session=False, key=OTHER_KEY))
    assert not allowed(authz(rest_event(make_leaf(world.ca)), datetime.now(UTC)))
    assert "AccessDenied" in authz.named("revocation_source_failed")[0]["error"]


def test_fail_open_when_s3_refuses(world: S3World) -> None:
    authz = calls(world.env(secret="wrong", ISSUER_FAIL_CLOSED="false"))
    assert allowed(authz(rest_event(make_leaf(world.ca)), datetime.now(UTC)))
    assert authz.lines[-1]["revocation"] == "unchecked" and authz.lines[-1]["level"] == "error"
