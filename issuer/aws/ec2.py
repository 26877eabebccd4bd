"""``ec2:DescribeInstances`` with boto3: the real :class:`~issuer.attest.ec2_instance.InstanceLookup`.

Errors::

    UpstreamUnavailable  503  ec2_lookup_unavailable   throttled, unreachable, timed out, 5xx, access denied
"""

from __future__ import annotations

import asyncio
import re
import time

from botocore.exceptions import BotoCoreError, ClientError

from issuer.attest.ec2_instance import InstanceInfo, InstanceLookup
from issuer.aws.failures import DENIED, THROTTLED
from issuer.aws.sessions import AccountSessions, error_code
from issuer.errors import UpstreamUnavailable
from issuer.observability.seams import NullObserver, UpstreamObserver

__all__ = ["Boto3InstanceLookup", "Boto3Lookups"]

# Error codes that say "this instance does not exist" rather than "AWS failed".
_NOT_FOUND = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
_UNAVAILABLE = "AWS could not be asked about the instance; try again later."
_ACCOUNT = re.compile(r"[0-9]{12}")


class Boto3InstanceLookup:
    """:class:`InstanceLookup` with boto3, each call in a worker thread.

    ``sessions`` gives the clients: the default credential chain, or a role
    assumed in the document's account. ``resolve_roles`` also asks
    ``iam:GetInstanceProfile`` for the profile's role ARNs. Each lookup is reported to
    ``observer`` (time, outcome).
    """

    def __init__(
        self, sessions: AccountSessions, *, resolve_roles: bool = True, observer: UpstreamObserver | None = None
    ) -> None:
        self._sessions = sessions
        self._resolve_roles = resolve_roles
        self._observer = observer or NullObserver()

    async def describe(self, *, account_id: str, region: str, instance_id: str) -> InstanceInfo | None:
        """See :meth:`InstanceLookup.describe`; the blocking calls run in a thread."""
        if not _ACCOUNT.fullmatch(account_id):
            raise ValueError(f"not an AWS account ID: {account_id!r}")
        started = time.perf_counter()
        try:
            info = await asyncio.to_thread(self._describe, account_id, region, instance_id)
        except UpstreamUnavailable as exc:
            self._observer.upstream("ec2", "DescribeInstances", "error", time.perf_counter() - started, exc.code)
            raise
        self._observer.upstream("ec2", "DescribeInstances", "ok", time.perf_counter() - started, None)
        return info

    def _describe(self, account_id: str, region: str, instance_id: str) -> InstanceInfo | None:
        try:
            ec2 = self._sessions.client("ec2", account_id=account_id, region=region)
            reply = ec2.describe_instances(InstanceIds=[instance_id])
        except ClientError as exc:
            if error_code(exc) in _NOT_FOUND:
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
            instance_type=instance.get("InstanceType"),
        )

    def _profile_roles(self, profile_arn: str, account_id: str, region: str) -> tuple[str, ...]:
        # arn:aws:iam::123456789012:instance-profile/path/name -> name
        name = profile_arn.rsplit("/", 1)[-1]
        try:
            iam = self._sessions.client("iam", account_id=account_id, region=region)
            reply = iam.get_instance_profile(InstanceProfileName=name)
        except ClientError as exc:
            if error_code(exc) == "NoSuchEntity":
                return ()  # deleted since launch: no role can match
            raise _unavailable(exc, "iam:GetInstanceProfile", account_id, region) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc, "iam:GetInstanceProfile", account_id, region) from exc
        return tuple(str(r["Arn"]) for r in reply["InstanceProfile"].get("Roles", ()))


class Boto3Lookups:
    """One :class:`Boto3InstanceLookup` per (assume-role template, endpoint), made on first use.

    ``endpoint_overrides`` maps a region (or ``"*"``) to an endpoint URL (moto in tests).
    """

    def __init__(self, endpoint_overrides: dict[str, str], *, observer: UpstreamObserver | None = None) -> None:
        self._overrides = endpoint_overrides
        self._observer = observer
        self._made: dict[tuple[str | None, str | None], InstanceLookup] = {}

    def __call__(self, assume_role: str | None, region: str) -> InstanceLookup:
        endpoint = self._overrides.get(region) or self._overrides.get("*")
        key = (assume_role, endpoint)
        if key not in self._made:
            sessions = AccountSessions(
                endpoint_url=endpoint, assume_role=assume_role, session_name="machine-issuer-ec2-check"
            )
            self._made[key] = Boto3InstanceLookup(sessions, observer=self._observer)
        return self._made[key]


def _unavailable(exc: Exception, call: str, account_id: str, region: str) -> UpstreamUnavailable:
    where = f"{call} in {account_id}/{region}"
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in DENIED:
            # The operator's IAM setup is wrong, not the client's proof: 503, and say so.
            return UpstreamUnavailable(
                _UNAVAILABLE,
                code="ec2_lookup_unavailable",
                reason=f"{where}: {code} - the issuer's AWS credentials/role lack permission "
                "(operator misconfiguration)",
                retry_after=30,
            )
        kind = "throttled" if code in THROTTLED else f"HTTP {status}"
        return UpstreamUnavailable(_UNAVAILABLE, code="ec2_lookup_unavailable", reason=f"{where}: {kind} {code}: {exc}")
    return UpstreamUnavailable(
        _UNAVAILABLE, code="ec2_lookup_unavailable", reason=f"{where}: {type(exc).__name__}: {exc}"
    )
