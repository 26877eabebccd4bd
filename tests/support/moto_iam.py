"""moto's server as an STS that checks signatures, with an IAM user, its key and a role session.

moto lets the first ``INITIAL_NO_AUTH_ACTION_COUNT`` requests through unauthenticated (the
IAM setup below) and from then on recomputes every request's SigV4 signature with the
secret of the access key it issued, refusing a mismatch (``SignatureDoesNotMatch``) or an
unknown key (``InvalidClientTokenId``). Once :func:`moto_iam` yields, moto tells good
signatures from bad ones as AWS does; with authentication off it would answer any key
with a made-up identity, and no test of ours could fail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import boto3

from tests.support.moto_server import MotoServer, moto_server

__all__ = ["ACCOUNT_ID", "AwsKey", "MotoIam", "moto_iam"]

ACCOUNT_ID = "123456789012"  # moto's default account
# CreateUser, CreateAccessKey, PutUserPolicy, CreateRole; everything after is authenticated.
_SETUP_REQUESTS = 4


@dataclass(frozen=True, slots=True)
class AwsKey:
    """Credentials as an SDK holds them (the secrets stay out of ``repr``)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class MotoIam:
    """What :func:`moto_iam` made.

    ``user_arn`` keeps the user's path (``…:user/onprem/builder-1``); ``role_arn`` is the
    role as created, path included, and ``canonical_role_arn`` the ARN the issuer binds a
    session of it to (IAM leaves the path out of assumed-role ARNs). ``role`` holds the
    session's temporary credentials, valid until ``role_expiration``; ``session_user_id`` is
    the session's ``UserId`` (``<role unique id>:<session name>``).
    """

    server: MotoServer
    user: AwsKey
    user_arn: str
    user_id: str
    role: AwsKey
    role_arn: str
    canonical_role_arn: str
    session_arn: str
    session_user_id: str
    session_name: str
    role_expiration: datetime
    account_id: str = ACCOUNT_ID
    operators: Mapping[str, AwsKey] = field(default_factory=dict)  # user name -> key (see moto_iam)

    @property
    def url(self) -> str:
        return self.server.url


@contextmanager
def moto_iam(
    *,
    user_name: str = "builder-1",
    user_path: str = "/onprem/",
    role_name: str = "ecs-task-web",
    role_path: str = "/svc/",
    session_name: str = "task-42",
    operators: Sequence[str] = (),
) -> Iterator[MotoIam]:
    """Start moto with request authentication on; create a user with an access key and a
    role the user may assume; assume it (signed with the user's key) and yield it all.
    ``operators`` names more IAM users (with keys, at the root path) for admin sign-in.
    """
    setup = _SETUP_REQUESTS + 2 * len(operators)
    with moto_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": str(setup)}) as server:
        iam = boto3.client(
            "iam",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="AKIASETUPSETUPSETUP0",
            aws_secret_access_key="setup",
        )
        user = iam.create_user(UserName=user_name, Path=user_path)["User"]
        key = iam.create_access_key(UserName=user_name)["AccessKey"]
        role_arn = f"arn:aws:iam::{ACCOUNT_ID}:role{role_path}{role_name}"
        allow = {"Effect": "Allow", "Action": "sts:AssumeRole"}
        iam.put_user_policy(
            UserName=user_name,
            PolicyName="assume",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{**allow, "Resource": role_arn}]}),
        )
        # moto matches the trust policy against the caller's ARN without the user's path.
        principals = [user["Arn"], f"arn:aws:iam::{ACCOUNT_ID}:user/{user_name}"]
        trust = {"Version": "2012-10-17", "Statement": [{**allow, "Principal": {"AWS": principals}}]}
        iam.create_role(RoleName=role_name, Path=role_path, AssumeRolePolicyDocument=json.dumps(trust))
        operator_keys = {}
        for name in operators:
            iam.create_user(UserName=name)
            made = iam.create_access_key(UserName=name)["AccessKey"]
            operator_keys[name] = AwsKey(made["AccessKeyId"], made["SecretAccessKey"])
        # From here on moto authenticates: the user assumes the role with its own signature.
        sts = boto3.client(
            "sts",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )
        assumed = sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name)
        creds = assumed["Credentials"]
        yield MotoIam(
            server=server,
            user=AwsKey(key["AccessKeyId"], key["SecretAccessKey"]),
            user_arn=user["Arn"],
            user_id=user["UserId"],
            role=AwsKey(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]),
            role_arn=role_arn,
            canonical_role_arn=f"arn:aws:iam::{ACCOUNT_ID}:role/{role_name}",
            session_arn=assumed["AssumedRoleUser"]["Arn"],
            session_user_id=assumed["AssumedRoleUser"]["AssumedRoleId"],
            session_name=session_name,
            role_expiration=creds["Expiration"],
            operators=operator_keys,
        )


# The roles the IAM tests issue for: IAM users under /onprem/, and ECS-style task roles.
BUILDER_AND_TASK_ROLES = f"""
[[roles]]
name = "builders"
methods = ["aws-iam"]
account_ids = ["{ACCOUNT_ID}"]
principal_arns = ["arn:aws:iam::{ACCOUNT_ID}:user/onprem/*"]
uri_san = "spiffe://{{trust_domain}}/aws/{{account_id}}/iam/user/{{user_name}}"

[[roles]]
name = "ecs-tasks"
methods = ["aws-iam"]
account_ids = ["{ACCOUNT_ID}"]
principal_arns = ["arn:aws:iam::{ACCOUNT_ID}:role/ecs-task-*"]
uri_san = "spiffe://{{trust_domain}}/aws/{{account_id}}/iam/{{role_name}}/{{session_name}}"
"""
