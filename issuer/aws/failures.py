"""One-line errors for failed AWS calls made on an operator's behalf (publishing), naming what to check.

A failed call becomes an :class:`~issuer.errors.IssuerError` whose ``detail`` is one
line: the call, the resource, AWS's error code and what the operator should check::

    NotFound             404  aws_not_found          NoSuchBucket, NoSuchKey, NotFoundException, ...
    Forbidden            403  aws_access_denied      AccessDenied, AuthFailure, OptInRequired, ... (IAM policy)
    ConfigError          (2)  aws_credentials_missing / aws_region_missing   nothing to sign with / no region
    UpstreamUnavailable  503  aws_unavailable        throttled (RequestThrottled, ...), 5xx, unreachable, timed out
    Conflict             409  aws_conflict           PreconditionFailed, ConflictException
    ClientError          400  aws_request_failed     anything else AWS refused (its message is kept)

Callers pass ``hints``: per AWS error code, the sentence saying what to check, and
optionally their own stable ``code`` for it.
"""

from __future__ import annotations

from collections.abc import Mapping

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from issuer.errors import ClientError as RequestRefused
from issuer.errors import ConfigError, Conflict, Forbidden, IssuerError, NotFound, UpstreamUnavailable

__all__ = ["DENIED", "THROTTLED", "Hint", "aws_failure"]

Hint = tuple[str, str]  # (issuer error code, what to check)

_NOT_FOUND = frozenset({"NoSuchBucket", "NoSuchKey", "NotFoundException", "NotFound", "404"})
# AWS error codes that mean the caller's credentials or IAM permissions are wrong (any service).
DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedException",
        "UnauthorizedOperation",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidToken",
        "AuthFailure",  # EC2's name for bad or expired credentials
        "UnrecognizedClientException",  # KMS, STS, DynamoDB: the access key is unknown
        "OptInRequired",  # the account has not enabled this region or service
        "403",
    }
)
# AWS error codes that mean "slow down" (any service).
THROTTLED = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "SlowDown",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
    }
)
_CONFLICT = frozenset(
    {"PreconditionFailed", "ConditionalRequestConflict", "ConflictException", "OperationAborted", "412"}
)


def aws_failure(
    exc: BaseException, *, call: str, resource: str, hints: Mapping[str, Hint] | None = None
) -> IssuerError:
    """The one-line error for ``exc`` raised by ``call`` (e.g. ``s3:PutObject``) on ``resource``."""
    where = f"{call} on {resource}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "")) or "Unknown"
        message = _one_line(str(error.get("Message", "")))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        said = f"{code}" + (f" ({message})" if message else "")
        kind: type[IssuerError]
        if code in DENIED:
            kind, default = Forbidden, ("aws_access_denied", f"check that the publisher's IAM policy allows {call}")
        elif code in _NOT_FOUND:
            kind, default = NotFound, ("aws_not_found", "check the name and the region")
        elif code in THROTTLED or (isinstance(status, int) and status >= 500):
            kind, default = UpstreamUnavailable, ("aws_unavailable", f"HTTP {status}; try again shortly")
        elif code in _CONFLICT:
            kind, default = Conflict, ("aws_conflict", "it changed meanwhile; try again")
        else:
            kind, default = RequestRefused, ("aws_request_failed", f"HTTP {status}")
        issuer_code, check = (hints or {}).get(code) or default
        return kind(f"{where}: {said}; {check}", code=issuer_code)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ConfigError(
            f"{where}: no usable AWS credentials; set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "or run with an instance or task role",
            code="aws_credentials_missing",
        )
    if isinstance(exc, NoRegionError):
        return ConfigError(
            f"{where}: no AWS region; set AWS_REGION (or AWS_DEFAULT_REGION) or pass --region",
            code="aws_region_missing",
        )
    if isinstance(exc, ConnectionError):
        return UpstreamUnavailable(
            f"{where}: cannot reach AWS ({_one_line(str(exc))}); check the network, proxy and AWS_ENDPOINT_URL*",
            code="aws_unavailable",
        )
    if isinstance(exc, BotoCoreError):
        return UpstreamUnavailable(f"{where}: {type(exc).__name__}: {_one_line(str(exc))}", code="aws_unavailable")
    raise TypeError(f"not an AWS failure: {exc!r}")


def _one_line(text: str) -> str:
    return " ".join(text.split())
