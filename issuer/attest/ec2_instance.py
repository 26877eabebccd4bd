"""The optional liveness check of an EC2 instance: ``ec2:DescribeInstances``.

A verified identity document proves an instance *was* launched; a role may also ask
AWS whether it is still running, from the same image, in a bound VPC/subnet with a
bound instance profile. :class:`InstanceLookup` is the seam (the service gets one
through its constructor); :class:`Boto3InstanceLookup` is the real one, and
:func:`check_instance` is the pure decision over what it returns.

Errors::

    Unauthorized         401  ec2_instance_not_found    AWS does not know the instance (or it is terminated)
                              ec2_instance_not_running  stopped, stopping, pending, ...
                              ec2_instance_mismatch     AWS reports another image (or instance)
    Forbidden            403  binding_mismatch          VPC / subnet / profile / role not bound by the role
    UpstreamUnavailable  503  ec2_lookup_unavailable    throttled, unreachable, timed out, 5xx, access denied
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from issuer.attest.ec2 import InstanceIdentityDocument
from issuer.errors import ConfigError, Forbidden, Unauthorized, UpstreamUnavailable

__all__ = [
    "Boto3InstanceLookup",
    "InstanceInfo",
    "InstanceLookup",
    "arn_matches",
    "check_instance",
]


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """What ``DescribeInstances`` (and ``iam:GetInstanceProfile``) say about an instance."""

    instance_id: str
    state: str  # pending | running | shutting-down | terminated | stopping | stopped
    image_id: str
    vpc_id: str | None
    subnet_id: str | None
    instance_profile_arn: str | None
    iam_role_arns: tuple[str, ...] = ()


class InstanceLookup(Protocol):
    async def describe(self, *, account_id: str, region: str, instance_id: str) -> InstanceInfo | None:
        """The instance as AWS sees it now, or None if AWS does not know it.

        Raises :class:`~issuer.errors.UpstreamUnavailable` when AWS cannot be asked.
        """
        ...


def arn_matches(pattern: str, arn: str) -> bool:
    """True if ``arn`` equals ``pattern``, or starts with it when it ends in ``*``.

    Only a trailing ``*`` is a wildcard; anywhere else it is a literal character.
    """
    if pattern.endswith("*"):
        return arn.startswith(pattern[:-1])
    return arn == pattern


_BINDING_DETAIL = "The instance is not allowed by the role's policy."


def check_instance(
    info: InstanceInfo | None,
    *,
    doc: InstanceIdentityDocument,
    vpc_ids: Collection[str] = (),
    subnet_ids: Collection[str] = (),
    instance_profile_arns: Collection[str] = (),
    iam_role_arns: Collection[str] = (),
) -> None:
    """Refuse unless the live instance matches ``doc`` and the role's bindings.

    An empty binding allows any value. ARN bindings are :func:`arn_matches` patterns;
    ``iam_role_arns`` needs at least one of the instance's roles to match (so it
    refuses when roles were not resolved). Raises :class:`~issuer.errors.Unauthorized`
    (``ec2_instance_not_found`` / ``_not_running`` / ``_mismatch``) or
    :class:`~issuer.errors.Forbidden` (``binding_mismatch``, which binding only in ``reason``).
    """
    if info is None or info.state == "terminated":
        raise Unauthorized(
            "The instance does not exist.",
            code="ec2_instance_not_found",
            reason=f"DescribeInstances: {doc.instance_id} in {doc.account_id}/{doc.region} "
            + ("is terminated" if info else "not found"),
        )
    if info.state != "running":
        raise Unauthorized(
            "The instance is not running.",
            code="ec2_instance_not_running",
            reason=f"{info.instance_id} is {info.state}",
        )
    if info.instance_id != doc.instance_id or info.image_id != doc.image_id:
        raise Unauthorized(
            "The instance does not match its identity document.",
            code="ec2_instance_mismatch",
            reason=f"AWS reports {info.instance_id} with image {info.image_id}; "
            f"document says {doc.instance_id} with image {doc.image_id}",
        )
    if vpc_ids and info.vpc_id not in vpc_ids:
        raise _binding(f"vpc_id {info.vpc_id} is not in the role's vpc_ids")
    if subnet_ids and info.subnet_id not in subnet_ids:
        raise _binding(f"subnet_id {info.subnet_id} is not in the role's subnet_ids")
    if instance_profile_arns and not (
        info.instance_profile_arn is not None
        and any(arn_matches(p, info.instance_profile_arn) for p in instance_profile_arns)
    ):
        raise _binding(f"instance profile {info.instance_profile_arn} matches none of instance_profile_arns")
    if iam_role_arns and not any(arn_matches(p, a) for p in iam_role_arns for a in info.iam_role_arns):
        raise _binding(f"IAM roles {list(info.iam_role_arns)} match none of iam_role_arns")


def _binding(reason: str) -> Forbidden:
    return Forbidden(_BINDING_DETAIL, code="binding_mismatch", reason=reason)


# Error codes that say "this instance does not exist" rather than "AWS failed".
_NOT_FOUND = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
_THROTTLED = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "TooManyRequestsException",
        "SlowDown",
    }
)
_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "AuthFailure",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "UnrecognizedClientException",
        "OptInRequired",
    }
)
_UNAVAILABLE = "AWS could not be asked about the instance; try again later."
_ACCOUNT = re.compile(r"[0-9]{12}")


@dataclass(slots=True)
class _AccountSession:
    session: Any  # boto3.session.Session
    expires: datetime | None
    clients: dict[tuple[str, str], Any] = field(default_factory=dict)


class Boto3InstanceLookup:
    """:class:`InstanceLookup` with boto3, each call in a worker thread.

    ``endpoint_url`` sends EC2, IAM and STS calls to one endpoint (moto's server in
    tests). ``assume_role`` is an ARN template with ``{account_id}``: the lookup then
    assumes that role in the document's account and reuses the session until shortly
    before it expires. Without it the default credential chain is used.
    ``resolve_roles`` asks ``iam:GetInstanceProfile`` for the profile's role ARNs.
    Every call has bounded timeouts and at most ``max_attempts`` attempts.
    """

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        assume_role: str | None = None,
        resolve_roles: bool = True,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        max_attempts: int = 2,
        session_name: str = "machine-issuer-ec2-check",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if assume_role is not None:
            try:
                assume_role.format(account_id="123456789012")
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(
                    f"assume_role {assume_role!r}: only {{account_id}} may be substituted ({exc!r})"
                ) from exc
        self._endpoint_url = endpoint_url
        self._assume_role = assume_role
        self._resolve_roles = resolve_roles
        self._session_name = session_name
        self._clock = clock
        self._config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
        )
        # boto3 sessions are not thread-safe; creating sessions and clients is serialised.
        self._lock = threading.Lock()
        self._sessions: dict[str, _AccountSession] = {}

    async def describe(self, *, account_id: str, region: str, instance_id: str) -> InstanceInfo | None:
        """See :meth:`InstanceLookup.describe`; the blocking calls run in a thread."""
        if not _ACCOUNT.fullmatch(account_id):
            raise ValueError(f"not an AWS account ID: {account_id!r}")
        return await asyncio.to_thread(self._describe, account_id, region, instance_id)

    def _describe(self, account_id: str, region: str, instance_id: str) -> InstanceInfo | None:
        try:
            ec2 = self._client("ec2", account_id, region)
            reply = ec2.describe_instances(InstanceIds=[instance_id])
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                return None
            raise _unavailable(exc, "ec2:DescribeInstances", account_id, region) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc, "ec2:DescribeInstances", account_id, region) from exc
        found = [
            i
            for r in reply.get("Reservations", ())
            for i in r.get("Instances", ())
            if i.get("InstanceId") == instance_id
        ]
        if not found:
            return None
        instance = found[0]
        profile_arn = (instance.get("IamInstanceProfile") or {}).get("Arn")
        roles: tuple[str, ...] = ()
        if profile_arn and self._resolve_roles:
            roles = self._profile_roles(profile_arn, account_id, region)
        return InstanceInfo(
            instance_id=instance_id,
            state=str((instance.get("State") or {}).get("Name", "unknown")),
            image_id=str(instance.get("ImageId", "")),
            vpc_id=instance.get("VpcId"),
            subnet_id=instance.get("SubnetId"),
            instance_profile_arn=profile_arn,
            iam_role_arns=roles,
        )

    def _profile_roles(self, profile_arn: str, account_id: str, region: str) -> tuple[str, ...]:
        # arn:aws:iam::123456789012:instance-profile/path/name -> name
        name = profile_arn.rsplit("/", 1)[-1]
        try:
            iam = self._client("iam", account_id, region)
            reply = iam.get_instance_profile(InstanceProfileName=name)
        except ClientError as exc:
            if _error_code(exc) == "NoSuchEntity":
                return ()  # deleted since launch: no role can match
            raise _unavailable(exc, "iam:GetInstanceProfile", account_id, region) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc, "iam:GetInstanceProfile", account_id, region) from exc
        return tuple(str(r["Arn"]) for r in reply["InstanceProfile"].get("Roles", ()))

    def _client(self, service: str, account_id: str, region: str) -> Any:
        with self._lock:
            account = self._session(account_id, region)
            client = account.clients.get((service, region))
            if client is None:
                client = account.session.client(
                    service, region_name=region, endpoint_url=self._endpoint_url, config=self._config
                )
                account.clients[(service, region)] = client
            return client

    def _session(self, account_id: str, region: str) -> _AccountSession:
        key = account_id if self._assume_role else ""
        cached = self._sessions.get(key)
        # Renew five minutes early so that a call never starts with credentials about to lapse.
        if cached is not None and (cached.expires is None or cached.expires - timedelta(minutes=5) > self._clock()):
            return cached
        if self._assume_role is None:
            fresh = _AccountSession(session=boto3.session.Session(), expires=None)
        else:
            fresh = self._assumed_session(self._assume_role.format(account_id=account_id), account_id, region)
        self._sessions[key] = fresh
        return fresh

    def _assumed_session(self, role_arn: str, account_id: str, region: str) -> _AccountSession:
        sts = boto3.session.Session().client(
            "sts", region_name=region, endpoint_url=self._endpoint_url, config=self._config
        )
        try:
            creds = sts.assume_role(RoleArn=role_arn, RoleSessionName=self._session_name)["Credentials"]
        except ClientError as exc:
            raise _unavailable(exc, f"sts:AssumeRole {role_arn}", account_id, region) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc, f"sts:AssumeRole {role_arn}", account_id, region) from exc
        session = boto3.session.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )
        expires = creds.get("Expiration")
        return _AccountSession(session=session, expires=expires if isinstance(expires, datetime) else None)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _unavailable(exc: Exception, call: str, account_id: str, region: str) -> UpstreamUnavailable:
    where = f"{call} in {account_id}/{region}"
    if isinstance(exc, ClientError):
        code = _error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _DENIED:
            # The operator's IAM setup is wrong, not the client's proof: 503, and say so.
            return UpstreamUnavailable(
                _UNAVAILABLE,
                code="ec2_lookup_unavailable",
                reason=f"{where}: {code} - the issuer's AWS credentials/role lack permission "
                "(operator misconfiguration)",
                retry_after=30,
            )
        kind = "throttled" if code in _THROTTLED else f"HTTP {status}"
        return UpstreamUnavailable(_UNAVAILABLE, code="ec2_lookup_unavailable", reason=f"{where}: {kind} {code}: {exc}")
    return UpstreamUnavailable(
        _UNAVAILABLE, code="ec2_lookup_unavailable", reason=f"{where}: {type(exc).__name__}: {exc}"
    )
