"""The EC2 instance identity role's credentials, read from IMDSv2.

Every instance has them, with or without an instance profile, at
``/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance``; they sign an
STS ``GetCallerIdentity`` that names the instance
(``arn:aws:sts::ACCOUNT:assumed-role/aws:ec2-instance/INSTANCE_ID``), which is the
``aws-ec2-role`` proof. The read is :class:`~clients.imds.ImdsClient`'s (token first, a 401
gets a new token, 5xx/timeouts are retried for ``--imds-max-wait``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Final

from clients.errors import ImdsError
from clients.imds import ImdsClient

__all__ = ["INSTANCE_ROLE_PATH", "InstanceRoleCredentials", "instance_role_credentials"]

INSTANCE_ROLE_PATH: Final = "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance"


@dataclass(frozen=True)
class InstanceRoleCredentials:
    """Temporary credentials (the secret and token stay out of ``repr``); fits ``AwsCredentials``."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    expiration: str | None = None


def instance_role_credentials(imds: ImdsClient) -> InstanceRoleCredentials:
    """Read the instance identity role's credentials; :class:`ImdsError` (``imds_bad_credentials``,
    ``imds_not_found``, ...) or :class:`~clients.errors.ImdsUnavailable` as ``ImdsClient`` raises."""
    return imds.patiently(lambda: _parse(imds.fetch(INSTANCE_ROLE_PATH), where=imds.endpoint))


def _parse(body: bytes, *, where: str) -> InstanceRoleCredentials:
    try:
        fields = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ImdsError(
            f"the instance identity role credentials from {where} are not JSON: {exc}", code="imds_bad_credentials"
        ) from None
    if not isinstance(fields, dict):
        raise ImdsError(
            f"the instance identity role credentials from {where} are not a JSON object", code="imds_bad_credentials"
        )
    if fields.get("Code", "Success") != "Success":
        raise ImdsError(
            f"the instance metadata service at {where} has no instance identity role credentials "
            f"(Code {str(fields.get('Code'))[:60]!r})",
            code="imds_bad_credentials",
        )
    values = {name: fields.get(name) for name in ("AccessKeyId", "SecretAccessKey", "Token")}
    missing = [name for name, value in values.items() if not isinstance(value, str) or not value]
    if missing:
        raise ImdsError(
            f"the instance identity role credentials from {where} lack {', '.join(missing)}",
            code="imds_bad_credentials",
        )
    expiration = fields.get("Expiration")
    return InstanceRoleCredentials(
        access_key=str(values["AccessKeyId"]),
        secret_key=str(values["SecretAccessKey"]),
        token=str(values["Token"]),
        expiration=expiration if isinstance(expiration, str) else None,
    )
