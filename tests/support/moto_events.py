"""moto's server as EventBridge with signature checking on: a bus, a rule routing it to an SQS queue.

moto lets the first three requests through unauthenticated (an IAM user, its access key, its
policy); every request after that — creating the bus, the queue, the rule, and the service's
``PutEvents`` — must be signed with that key, or moto refuses it as AWS would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3

from tests.support.moto_server import MotoServer, moto_server

REGION = "us-east-1"
_SETUP_REQUESTS = 3


@dataclass(frozen=True, slots=True)
class MotoEvents:
    server: MotoServer
    access_key_id: str
    secret_access_key: str = field(repr=False)
    bus_arn: str = ""
    queue_url: str = ""

    def client(self, service: str, *, endpoint_url: str | None = None, **config: Any) -> Any:
        from botocore.config import Config

        return boto3.session.Session().client(
            service,
            region_name=REGION,
            endpoint_url=endpoint_url or self.server.url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(**config) if config else None,
        )

    def events_client(self, *, endpoint_url: str | None = None) -> Any:
        """What the service publishes with: bounded timeouts, no botocore retries (the publisher retries)."""
        return self.client(
            "events",
            endpoint_url=endpoint_url,
            connect_timeout=1,
            read_timeout=2,
            retries={"total_max_attempts": 1, "mode": "standard"},
        )

    def drain(self, *, until: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Every event the rule delivered to the queue, waiting until at least ``until`` arrived (or ``timeout``)."""
        sqs = self.client("sqs")
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(seen) < until and time.monotonic() < deadline:
            reply = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for message in reply.get("Messages", []):
                seen.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return seen


def with_bus(peer: MotoEvents, name: str) -> MotoEvents:
    """A new bus on ``peer`` with a rule that sends every issuer event to a new SQS queue."""
    events, sqs = peer.client("events"), peer.client("sqs")
    bus_arn = events.create_event_bus(Name=name)["EventBusArn"]
    queue_url = sqs.create_queue(QueueName=f"{name}-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="issuer", EventBusName=name, EventPattern=json.dumps({"source": ["aws-machine-issuer"]}))
    events.put_targets(Rule="issuer", EventBusName=name, Targets=[{"Id": "queue", "Arn": queue_arn}])
    return MotoEvents(peer.server, peer.access_key_id, peer.secret_access_key, bus_arn=bus_arn, queue_url=queue_url)


@contextmanager
def moto_events() -> Iterator[MotoEvents]:
    """moto with signature checking on and an IAM user allowed everything; make buses with :func:`with_bus`."""
    with moto_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_REQUESTS)}) as server:
        iam = boto3.session.Session().client(
            "iam", region_name=REGION, endpoint_url=server.url, aws_access_key_id="setup", aws_secret_access_key="setup"
        )
        iam.create_user(UserName="issuer")
        key = iam.create_access_key(UserName="issuer")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="issuer", PolicyName="all", PolicyDocument=json.dumps(policy))
        yield MotoEvents(server, key["AccessKeyId"], key["SecretAccessKey"])
