"""``aws_failure``: every AWS error code that means "credentials or permissions" is 403, every
"slow down" is 503, and only what is left is 400 ``aws_request_failed``."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from issuer.aws.failures import aws_failure
from issuer.errors import ClientError as RequestRefused
from issuer.errors import Forbidden, UpstreamUnavailable


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "said AWS"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "SomeCall",
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("AuthFailure", 401),  # EC2: credentials not valid
        ("UnrecognizedClientException", 400),  # KMS/STS: unknown access key
        ("OptInRequired", 403),  # region or service not enabled for the account
        ("AccessDenied", 403),
    ],
)
def test_credential_and_permission_codes_are_403(code: str, status: int) -> None:
    error = aws_failure(client_error(code, status), call="s3:PutObject", resource="s3://b/k")
    assert isinstance(error, Forbidden)
    assert (error.status_hint, error.code) == (403, "aws_access_denied")
    assert error.detail.startswith(f"s3:PutObject on s3://b/k: {code} (said AWS);")


@pytest.mark.parametrize(("code", "status"), [("RequestThrottled", 400), ("RequestThrottledException", 400)])
def test_throttling_codes_are_503(code: str, status: int) -> None:
    error = aws_failure(client_error(code, status), call="ec2:DescribeInstances", resource="i-1")
    assert isinstance(error, UpstreamUnavailable)
    assert (error.status_hint, error.code) == (503, "aws_unavailable")


def test_other_refusals_stay_400() -> None:
    error = aws_failure(client_error("ValidationError", 400), call="kms:Sign", resource="key")
    assert type(error) is RequestRefused and (error.status_hint, error.code) == (400, "aws_request_failed")
