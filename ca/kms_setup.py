"""Setting up a CA whose keys live in AWS KMS: creating keys and certifying them.

For ``issuer ca init`` / ``issuer ca rotate``. Pure over an injected client (no
client is made here) and blocking, bounded by the client's botocore ``Config``
(``ca.kms_client.kms_botocore_config``). Certificates use the same profiles as
``ca.hierarchy`` (``root_builder``/``issuing_builder``, same validity and backdating);
only the signature comes from KMS, and it is verified before anything is returned.

Every function raises the errors of ``ca.kms_client`` with ``detail`` naming the
key: :class:`~ca.errors.SignerUnavailable`, :class:`~ca.errors.SignerDenied`,
:class:`~ca.errors.KMSKeyError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError
from cryptography import x509

from ca.errors import CAStateError
from ca.hierarchy import (
    CA_BACKDATE,
    DEFAULT_ISSUING_COMMON_NAME,
    DEFAULT_ROOT_COMMON_NAME,
    ISSUING_VALIDITY,
    ROOT_VALIDITY,
    CertifiedKey,
)
from ca.keys import signature_hash_for
from ca.kms_client import KmsClient, KmsKey, kms_failure, kms_public_key, kms_sign_certificate
from ca.kms_x509 import KMS_KEY_SPECS, KmsKeySpec, algorithm_for_public_key
from ca.profile import issuing_builder, root_builder, utc_seconds

__all__ = [
    "DEFAULT_KEY_DESCRIPTION",
    "KmsAdminClient",
    "KmsCertifiedKey",
    "create_issuing_for_kms_key",
    "create_kms_key",
    "create_kms_root",
]

DEFAULT_KEY_DESCRIPTION: Final = "machine-issuer CA signing key"
# KMS alias names: alias/ then letters, digits, / _ -; alias/aws/ is reserved for AWS.
_ALIAS: Final = re.compile(r"alias/(?!aws/)[A-Za-z0-9/_-]{1,250}")


class KmsAdminClient(KmsClient, Protocol):
    """The KMS calls set-up needs besides signing (a boto3 ``kms`` client has them)."""

    def create_key(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def create_alias(self, *, AliasName: str, TargetKeyId: str) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class KmsCertifiedKey:
    """A CA certificate whose private key is the KMS key ``key_id``, reached through ``client``."""

    certificate: x509.Certificate
    client: KmsClient
    key_id: str

    def __repr__(self) -> str:
        return f"KmsCertifiedKey({self.certificate.subject.rfc4514_string()!r}, key_id={self.key_id!r})"


def create_kms_key(
    client: KmsAdminClient,
    *,
    key_spec: KmsKeySpec = "ECC_NIST_P256",
    alias: str | None = None,
    description: str = DEFAULT_KEY_DESCRIPTION,
    policy: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> KmsKey:
    """A new asymmetric SIGN_VERIFY KMS key of ``key_spec`` (``CreateKey``), named ``alias`` if given.

    ``alias`` may be given with or without its ``alias/`` prefix. ``policy`` is the key
    policy JSON (KMS's default, the account's IAM decides, when None). Returns the key
    as ``GetPublicKey`` describes it (``key_id`` is its ARN). Raises ``ValueError`` for
    an unsupported spec or a malformed alias; :class:`CAStateError` ``ca_exists`` when the
    alias is taken (the new key, named in the message, is left without an alias).
    """
    if key_spec not in KMS_KEY_SPECS:
        raise ValueError(f"key_spec must be one of {', '.join(KMS_KEY_SPECS)}, got {key_spec!r}")
    alias_name = None
    if alias is not None:
        alias_name = alias if alias.startswith("alias/") else f"alias/{alias}"
        if not _ALIAS.fullmatch(alias_name):
            raise ValueError(f"{alias!r} is not a KMS alias name (letters, digits, /, _ and -; not alias/aws/...)")
    options: dict[str, Any] = {"KeySpec": key_spec, "KeyUsage": "SIGN_VERIFY", "Description": description}
    if policy is not None:
        options["Policy"] = policy
    if tags:
        options["Tags"] = [{"TagKey": k, "TagValue": v} for k, v in tags.items()]
    try:
        metadata = client.create_key(**options)["KeyMetadata"]
    except ParamValidationError:
        raise
    except (ClientError, BotoCoreError) as exc:
        raise kms_failure(exc, key_id=f"(new {key_spec} key)", operation="CreateKey", public=False) from exc
    key_arn = str(metadata.get("Arn") or metadata["KeyId"])
    if alias_name is not None:
        try:
            client.create_alias(AliasName=alias_name, TargetKeyId=str(metadata["KeyId"]))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "AlreadyExistsException":
                raise CAStateError(
                    f"The KMS alias {alias_name} already names another key; the new key {key_arn} was left "
                    "without an alias (use it by ARN, or schedule its deletion and choose another alias)",
                    code="ca_exists",
                ) from exc
            raise kms_failure(exc, key_id=key_arn, operation="CreateAlias", public=False) from exc
        except BotoCoreError as exc:
            raise kms_failure(exc, key_id=key_arn, operation="CreateAlias", public=False) from exc
    return kms_public_key(client, key_arn)


def create_kms_root(
    client: KmsClient,
    key_id: str,
    *,
    now: datetime,
    validity: timedelta = ROOT_VALIDITY,
    common_name: str = DEFAULT_ROOT_COMMON_NAME,
    organization: str | None = None,
) -> KmsCertifiedKey:
    """A self-signed root CA for the KMS key ``key_id``, valid from ``now`` − 5 min for ``validity``.

    The profile is ``ca.hierarchy.create_root``'s; DESIGN §5 wants an ECC_NIST_P384 key
    for a root. The returned value can certify issuing CAs (:func:`create_issuing_for_kms_key`).
    """
    key = kms_public_key(client, key_id)
    start = utc_seconds(now, "now") - CA_BACKDATE
    builder = root_builder(
        key.public_key,
        common_name=common_name,
        organization=organization,
        not_before=start,
        not_after=start + CA_BACKDATE + validity,
    )
    certificate = kms_sign_certificate(client, key.key_id, builder, algorithm=key.algorithm, issuer=None)
    return KmsCertifiedKey(certificate=certificate, client=client, key_id=key.key_id)


def create_issuing_for_kms_key(
    root: CertifiedKey | KmsCertifiedKey,
    client: KmsClient,
    key_id: str,
    *,
    now: datetime,
    validity: timedelta = ISSUING_VALIDITY,
    common_name: str = DEFAULT_ISSUING_COMMON_NAME,
    organization: str | None = None,
) -> x509.Certificate:
    """An issuing CA certificate (path length 0) for the KMS key ``key_id``, certified by ``root``.

    ``root`` is a local root (``ca.hierarchy.CertifiedKey``, signed here) or a KMS
    root (:class:`KmsCertifiedKey`, signed by its key in KMS). Validity as
    ``ca.hierarchy.create_issuing``: from ``now`` − 5 min for ``validity``, clamped
    into the root's. Raises ``CAStateError`` ``ca_expired`` when the root has expired.
    """
    key = kms_public_key(client, key_id)
    start = utc_seconds(now, "now") - CA_BACKDATE
    builder = issuing_builder(
        key.public_key,
        issuer=root.certificate,
        common_name=common_name,
        organization=organization,
        not_before=start,
        not_after=start + CA_BACKDATE + validity,
    )
    if isinstance(root, CertifiedKey):
        certificate = builder.sign(root.key, signature_hash_for(root.key))
        certificate.verify_directly_issued_by(root.certificate)
        return certificate
    algorithm = algorithm_for_public_key(root.certificate.public_key())
    if algorithm is None:
        raise ValueError("the root certificate's key is not one KMS holds")
    return kms_sign_certificate(root.client, root.key_id, builder, algorithm=algorithm, issuer=root.certificate)
