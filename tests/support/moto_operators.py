"""moto's server as STS with signature checking on, holding the principals operator tests sign in as.

Three IAM users with access keys — ``alice`` (an operator), ``bob`` (an operator with fewer
permissions), ``mallory`` (no operator at all) — and an SSO-style role
``AWSReservedSSO_Admins_0123abcd`` under ``/aws-reserved/sso.amazonaws.com/`` that alice assumes
with the session name ``alice@example.com``, as IAM Identity Center names its sessions. The setup
calls are let through unauthenticated; every request after them is authenticated by moto, so a
wrong signature or an unknown key is refused as AWS would refuse it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import boto3

from tests.support.moto_iam import ACCOUNT_ID, AwsKey
from tests.support.moto_server import MotoServer, moto_server

__all__ = ["SSO_ROLE", "Operators", "moto_operators"]

SSO_ROLE = "AWSReservedSSO_Admins_0123abcd"
_SSO_PATH = "/aws-reserved/sso.amazonaws.com/"
# 3 x (CreateUser, CreateAccessKey), CreateRole, PutUserPolicy; then moto authenticates.
_SETUP_REQUESTS = 8


@dataclass(frozen=True, slots=True)
class Operators:
    server: MotoServer
    alice: AwsKey
    bob: AwsKey
    mallory: AwsKey
    sso: AwsKey  # alice's SSO-style role session
    account_id: str = ACCOUNT_ID

    @property
    def url(self) -> str:
        return self.server.url

    def arn(self, user: str) -> str:
        return f"arn:aws:iam::{self.account_id}:user/{user}"

    @property
    def sso_session_arn(self) -> str:
        return f"arn:aws:sts::{self.account_id}:assumed-role/{SSO_ROLE}/alice@example.com"

    @property
    def sso_role_arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:role/{SSO_ROLE}"

    def env(self, key: AwsKey) -> dict[str, str]:
        """The AWS variables of a process that signs with ``key`` (no profile, no instance metadata)."""
        out = {
            "AWS_ACCESS_KEY_ID": key.access_key_id,
            "AWS_SECRET_ACCESS_KEY": key.secret_access_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        if key.session_token:
            out["AWS_SESSION_TOKEN"] = key.session_token
        return out


@contextmanager
def moto_operators() -> Iterator[Operators]:
    with moto_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_REQUESTS)}) as server:
        iam = boto3.client(
            "iam",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="AKIASETUPSETUPSETUP0",
            aws_secret_access_key="setup",
        )
        keys = {}
        for user in ("alice", "bob", "mallory"):
            iam.create_user(UserName=user)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = AwsKey(key["AccessKeyId"], key["SecretAccessKey"])
        role_arn = f"arn:aws:iam::{ACCOUNT_ID}:role{_SSO_PATH}{SSO_ROLE}"
        allow = {"Effect": "Allow", "Action": "sts:AssumeRole"}
        trust = {
            "Version": "2012-10-17",
            "Statement": [{**allow, "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:user/alice"}}],
        }
        iam.create_role(RoleName=SSO_ROLE, Path=_SSO_PATH, AssumeRolePolicyDocument=json.dumps(trust))
        iam.put_user_policy(
            UserName="alice",
            PolicyName="assume",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{**allow, "Resource": role_arn}]}),
        )
        sts = boto3.client(
            "sts",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id=keys["alice"].access_key_id,
            aws_secret_access_key=keys["alice"].secret_access_key,
        )
        creds = sts.assume_role(RoleArn=role_arn, RoleSessionName="alice@example.com")["Credentials"]
        yield Operators(
            server=server,
            alice=keys["alice"],
            bob=keys["bob"],
            mallory=keys["mallory"],
            sso=AwsKey(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]),
        )
