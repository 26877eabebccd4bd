"""The IAM proof: a SigV4-signed STS ``GetCallerIdentity`` request the issuer replays.

The agent signs, never sends: the issuer forwards the request to STS and learns
who signed it. Two headers are added *before* signing so that they are covered by
the signature: ``X-Issuer-Server-ID`` (the proof is for this issuer only) and
``X-Issuer-CSR-SHA256`` (the proof is for this CSR's key only).

Signing is botocore's (``SigV4Auth``), and so are the credentials (botocore's
default chain: environment, shared credentials/config profile, credential_process
such as IAM Roles Anywhere's signing helper, web identity, SSO, ECS/EKS container
credentials, the EC2 instance profile). Nothing here hand-writes a signature.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import botocore.exceptions
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from clients.errors import CredentialsError, UsageError
from clients.wire import CSR_SHA256_HEADER, SERVER_ID_HEADER

__all__ = [
    "STS_BODY",
    "STS_CONTENT_TYPE",
    "AwsCredentials",
    "SignedStsRequest",
    "StaticCredentials",
    "csr_sha256",
    "default_region",
    "load_credentials",
    "sign_get_caller_identity",
    "signing_region",
    "sts_host",
]

STS_BODY: Final = b"Action=GetCallerIdentity&Version=2011-06-15"
STS_CONTENT_TYPE: Final = "application/x-www-form-urlencoded; charset=utf-8"
_GLOBAL_HOST: Final = "sts.amazonaws.com"
_GLOBAL_REGION: Final = "us-east-1"
# sts.<region>.amazonaws.com, sts-fips.<region>.amazonaws.com, sts.<region>.api.aws (dual-stack),
# sts.<region>.amazonaws.com.cn: the region in the host is the region to sign for.
_REGIONAL_HOST = re.compile(r"^sts(?:-fips)?\.([a-z]{2}(?:-[a-z]+)+-\d+)\.(?:amazonaws\.com(?:\.cn)?|api\.aws)$")
_HEADER_VALUE = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$")


class AwsCredentials(Protocol):
    """What SigV4 needs; botocore's ``ReadOnlyCredentials`` and :class:`StaticCredentials` fit."""

    @property
    def access_key(self) -> str: ...
    @property
    def secret_key(self) -> str: ...
    @property
    def token(self) -> str | None: ...


@dataclass(frozen=True)
class StaticCredentials:
    """A frozen snapshot of credentials (the secret is kept out of ``repr``)."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SignedStsRequest:
    """The signed request, in the shape the issuer's ``sts_request`` field takes."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes

    def to_wire(self) -> dict[str, object]:
        """``{"method", "url", "headers": {name: value}, "body": base64}`` for the issue request."""
        return {
            "method": self.method,
            "url": self.url,
            "headers": dict(self.headers),
            "body": base64.b64encode(self.body).decode("ascii"),
        }


def csr_sha256(csr_der: bytes) -> str:
    """Lower-case hex SHA-256 of the CSR's DER: the value of ``X-Issuer-CSR-SHA256``."""
    return hashlib.sha256(csr_der).hexdigest()


def sts_host(region: str) -> str:
    """The regional STS endpoint host for ``region`` (China regions use ``amazonaws.com.cn``)."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"sts.{region}.{suffix}"


def signing_region(host: str, *, region: str) -> str:
    """The SigV4 region for ``host``: the one the host names, us-east-1 for the global
    endpoint, else ``region``."""
    if host == _GLOBAL_HOST:
        return _GLOBAL_REGION
    match = _REGIONAL_HOST.match(host)
    return match.group(1) if match else region


def sign_get_caller_identity(
    *,
    credentials: AwsCredentials,
    region: str,
    server_id: str,
    csr_der: bytes,
    host: str | None = None,
) -> SignedStsRequest:
    """Sign ``POST https://<host>/`` ``Action=GetCallerIdentity&Version=2011-06-15`` with SigV4.

    ``host`` defaults to the regional endpoint of ``region``; the signing region is
    derived from the host (see :func:`signing_region`). The signature covers Host,
    X-Amz-Date, Content-Type, the two X-Issuer headers and, for temporary
    credentials, X-Amz-Security-Token. The time is botocore's clock (the issuer
    accepts 15 minutes of skew). Raises :class:`UsageError` for an unusable
    server id or host.
    """
    if not _HEADER_VALUE.match(server_id):
        raise UsageError(
            "the server id must be non-empty printable ASCII without leading or trailing spaces",
            code="server_id_invalid",
        )
    host = (host or sts_host(region)).strip().lower()
    if not re.fullmatch(r"[a-z0-9.-]+", host):
        raise UsageError(f"not an STS endpoint host name: {host!r}", code="sts_host_invalid")
    url = f"https://{host}/"
    request = AWSRequest(
        method="POST",
        url=url,
        data=STS_BODY,
        headers={
            # Explicit so that it is signed as sent and the issuer replays it unchanged.
            "Host": host,
            "Content-Type": STS_CONTENT_TYPE,
            SERVER_ID_HEADER: server_id,
            CSR_SHA256_HEADER: csr_sha256(csr_der),
        },
    )
    SigV4Auth(credentials, "sts", signing_region(host, region=region)).add_auth(request)
    headers = {str(name): str(value) for name, value in request.headers.items()}
    return SignedStsRequest(method="POST", url=url, headers=headers, body=STS_BODY)


def _session(profile: str | None) -> Any:
    # botocore checks the profile lazily: ProfileNotFound comes from the first lookup.
    return botocore.session.Session(profile=profile)


def _profile_not_found(profile: str | None, exc: Exception) -> CredentialsError:
    return CredentialsError(f"AWS profile {profile!r} not found ({exc})", code="aws_profile_not_found")


def default_region(*, profile: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The region botocore would use (``AWS_DEFAULT_REGION`` or the profile's ``region``),
    else ``AWS_REGION`` (set by ECS and Lambda), else us-east-1."""
    env = os.environ if env is None else env
    try:
        region = _session(profile).get_config_variable("region")
    except botocore.exceptions.ProfileNotFound as exc:
        raise _profile_not_found(profile, exc) from None
    return str(region or env.get("AWS_REGION") or _GLOBAL_REGION)


def load_credentials(*, profile: str | None = None) -> StaticCredentials:
    """Resolve credentials through botocore's default chain and freeze them.

    Raises :class:`CredentialsError`: ``aws_profile_not_found``, ``aws_credentials_failed``
    (a provider was found but failed, e.g. credential_process exited non-zero), or
    ``aws_credentials_missing`` with the places botocore looked.
    """
    session = _session(profile)
    try:
        credentials = session.get_credentials()
    except botocore.exceptions.ProfileNotFound as exc:
        raise _profile_not_found(profile, exc) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise CredentialsError(f"could not load AWS credentials: {exc}", code="aws_credentials_failed") from None
    if credentials is None:
        raise CredentialsError(
            "no AWS credentials found; botocore looked in: " + "; ".join(_where_botocore_looked(session)),
            code="aws_credentials_missing",
        )
    try:
        frozen = credentials.get_frozen_credentials()
    except botocore.exceptions.BotoCoreError as exc:
        raise CredentialsError(f"could not refresh AWS credentials: {exc}", code="aws_credentials_failed") from None
    return StaticCredentials(access_key=frozen.access_key, secret_key=frozen.secret_key, token=frozen.token)


def _where_botocore_looked(session: Any) -> list[str]:
    """Describe botocore's provider chain, in its order, for a person."""
    profile = session.get_config_variable("profile") or "default"
    config_file = os.path.expanduser(session.get_config_variable("config_file"))
    credentials_file = os.path.expanduser(session.get_config_variable("credentials_file"))
    described = {
        "env": "environment variables AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (+AWS_SESSION_TOKEN)",
        "assume-role": f"role_arn of profile {profile!r} in {config_file}",
        "assume-role-with-web-identity": "web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN)",
        "sso": f"IAM Identity Center (SSO) settings of profile {profile!r}",
        "shared-credentials-file": f"profile {profile!r} in {credentials_file}",
        "custom-process": f"credential_process of profile {profile!r} in {config_file} (IAM Roles Anywhere)",
        "config-file": f"keys of profile {profile!r} in {config_file}",
        "container-role": "ECS/EKS container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/_FULL_URI)",
        "iam-role": "the EC2 instance profile (instance metadata service)",
    }
    resolver = session.get_component("credential_provider")
    seen: list[str] = []
    for provider in getattr(resolver, "providers", []):
        method = str(getattr(provider, "METHOD", type(provider).__name__))
        if method in ("ec2-credentials-file", "boto-config"):
            continue  # legacy boto2 files; listing them would only confuse
        text = described.get(method, method)
        if text not in seen:
            seen.append(text)
    return seen
