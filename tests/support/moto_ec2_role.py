"""moto's server (signatures checked) as EC2 and STS for the instance identity role.

Real IAM forbids ``:`` in role names; moto does not, so a role named ``aws:ec2-instance``
assumed with the instance ID as the session name gives credentials whose
``GetCallerIdentity`` answer has the form EC2's instance identity role has:
``arn:aws:sts::ACCOUNT:assumed-role/aws:ec2-instance/i-…``. A decoy role
``aws-ec2-instance`` (a name IAM allows) can be assumed the same way, as anyone could.

The first three requests (a user, its key, its allow-all policy) go through unauthenticated;
everything after is signed with the user's key and checked by moto. The issuer's own
boto3 calls (DescribeInstances) use that key too: :meth:`MotoEc2Role.env` gives the
``AWS_*`` variables.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3

from tests.support.moto_iam import ACCOUNT_ID, AwsKey
from tests.support.moto_server import MotoServer, moto_server

__all__ = ["ACCOUNT_ID", "DECOY_ROLE", "INSTANCE_ROLE", "REGION", "MotoEc2Role", "moto_ec2_role"]

REGION = "eu-west-1"
INSTANCE_ROLE = "aws:ec2-instance"
DECOY_ROLE = "aws-ec2-instance"
_SETUP_REQUESTS = 3  # CreateUser, CreateAccessKey, PutUserPolicy


@dataclass(frozen=True, slots=True)
class MotoEc2Role:
    server: MotoServer
    user: AwsKey
    image_id: str
    vpc_id: str
    subnet_id: str

    @property
    def url(self) -> str:
        return self.server.url

    def env(self) -> dict[str, str]:
        """``AWS_*`` variables for boto3 in the issuer: the user's key, the region, no IMDS."""
        return {
            "AWS_ACCESS_KEY_ID": self.user.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.user.secret_access_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, service: str, region: str = REGION) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id=self.user.access_key_id,
            aws_secret_access_key=self.user.secret_access_key,
        )

    def launch(self, *, region: str = REGION, subnet: bool = True) -> str:
        """Run an instance (in the fleet's subnet when ``subnet`` and in ``REGION``); its ID."""
        ec2 = self.client("ec2", region)
        image = self.image_id if region == REGION else _image(ec2)
        options: dict[str, Any] = {"SubnetId": self.subnet_id} if subnet and region == REGION else {}
        reply = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, **options)
        return str(reply["Instances"][0]["InstanceId"])

    def credentials(self, session_name: str, *, role: str = INSTANCE_ROLE) -> AwsKey:
        """What IMDS would serve ``session_name``'s instance: ``role`` assumed with that session name."""
        assumed = self.client("sts").assume_role(
            RoleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/{role}", RoleSessionName=session_name
        )
        creds = assumed["Credentials"]
        return AwsKey(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])

    def imds_credentials(self, instance_id: str) -> dict[str, str]:
        """The JSON IMDS serves at identity-credentials/ec2/security-credentials/ec2-instance."""
        assumed = self.client("sts").assume_role(
            RoleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/{INSTANCE_ROLE}", RoleSessionName=instance_id
        )
        creds = assumed["Credentials"]
        return {
            "Code": "Success",
            "LastUpdated": "2026-01-01T00:00:00Z",
            "Type": "AWS-HMAC",
            "AccessKeyId": creds["AccessKeyId"],
            "SecretAccessKey": creds["SecretAccessKey"],
            "Token": creds["SessionToken"],
            "Expiration": creds["Expiration"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


def _image(ec2: Any) -> str:
    images = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}])
    return str(images["Images"][0]["ImageId"])


@contextmanager
def moto_ec2_role() -> Iterator[MotoEc2Role]:
    """Start moto with authentication on; make the two roles, a VPC and a subnet."""
    with moto_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_REQUESTS)}) as server:
        iam = boto3.client(
            "iam",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="AKIASETUPSETUPSETUP0",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="fleet-admin")
        made = iam.create_access_key(UserName="fleet-admin")["AccessKey"]
        everything = {"Effect": "Allow", "Action": "*", "Resource": "*"}
        iam.put_user_policy(
            UserName="fleet-admin",
            PolicyName="all",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [everything]}),
        )
        user = AwsKey(made["AccessKeyId"], made["SecretAccessKey"])
        signed = MotoEc2Role(server, user, "", "", "")
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "sts:AssumeRole",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:user/fleet-admin"},
                }
            ],
        }
        for name in (INSTANCE_ROLE, DECOY_ROLE):
            signed.client("iam").create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
        ec2 = signed.client("ec2")
        vpc_id = ec2.create_vpc(CidrBlock="10.2.0.0/16")["Vpc"]["VpcId"]
        subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.2.1.0/24")["Subnet"]["SubnetId"]
        yield MotoEc2Role(server, user, _image(ec2), vpc_id, subnet_id)
