"""S3 for truststore publishing: parse ``s3://`` locations, read the current object, write a new version.

API Gateway pins a truststore by S3 *object version*, so :class:`S3Objects` tells the
caller whether the bucket is versioned, reads what is there now (to write only when
the content changed), and writes with a condition on what it read (``If-Match`` on the
ETag, or ``If-None-Match: *`` when there was nothing), so two publishers racing cannot
silently overwrite each other. Blocking boto3 calls: run them in a worker thread.

Every failure is a one-line :class:`~issuer.errors.IssuerError` (see
:mod:`issuer.aws.failures`) naming the bucket or object and what to check.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from issuer.aws.failures import Hint, aws_failure
from issuer.aws.sessions import default_client, error_code
from issuer.errors import ClientError as IssuerClientError
from issuer.errors import NotFound

__all__ = ["S3Location", "S3Objects", "StoredObject", "Versioning", "s3_client"]

Versioning = Literal["Enabled", "Suspended", "Disabled"]

# Bucket names per S3's rules (3-63 characters; lower case, digits, dots, hyphens; letters or digits at the ends).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SHA256_KEY = "sha256"  # user metadata: x-amz-meta-sha256, the hex SHA-256 of the body


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        """``s3://bucket/key`` → S3Location; raises ValueError saying what is wrong."""
        if not uri.startswith("s3://"):
            raise ValueError(f"{uri!r} is not an s3://BUCKET/KEY URI")
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ValueError(f"{uri!r}: {bucket!r} is not a valid S3 bucket name")
        if not key or key.endswith("/"):
            raise ValueError(f"{uri!r} names no object (give s3://BUCKET/path/truststore.pem)")
        return cls(bucket=bucket, key=key)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def beside(self, key: str) -> S3Location:
        """Another object in the same bucket: ``key`` as given if it has a ``/``, else in this key's folder."""
        if "/" in key:
            return S3Location(self.bucket, key.lstrip("/"))
        folder = self.key.rpartition("/")[0]
        return S3Location(self.bucket, f"{folder}/{key}" if folder else key)

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True, slots=True)
class StoredObject:
    """The current version of an object as read."""

    version_id: str | None  # None (or "null") when written while the bucket was not versioned
    etag: str
    sha256: str  # of the body actually read
    size: int

    @property
    def has_version(self) -> bool:
        return self.version_id not in (None, "null")


def s3_client(*, region: str | None = None) -> Any:
    """A boto3 S3 client with bounded timeouts; botocore's endpoint settings (``AWS_ENDPOINT_URL*``) apply.

    Raises ConfigError or UpstreamUnavailable (one line) when boto3 cannot make it, e.g. an unknown AWS_PROFILE.
    """
    return default_client("s3", region=region, read_timeout=15.0)


class S3Objects:
    """The three S3 operations publishing needs, on one injected boto3 client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def versioning(self, bucket: str) -> Versioning:
        """The bucket's versioning state; ``Disabled`` when it was never enabled."""
        try:
            reply = self._client.get_bucket_versioning(Bucket=bucket)
        except (ClientError, BotoCoreError) as exc:
            raise aws_failure(
                exc, call="s3:GetBucketVersioning", resource=f"bucket {bucket}", hints=_BUCKET_HINTS
            ) from exc
        status = reply.get("Status")
        return status if status in ("Enabled", "Suspended") else "Disabled"

    def current(self, location: S3Location, *, max_bytes: int) -> StoredObject | None:
        """The object's current version, or None when there is none (never written, or deleted).

        Bodies over ``max_bytes`` are not read; their ``sha256`` is then empty (never equal to a real one).
        """
        try:
            reply = self._client.get_object(Bucket=location.bucket, Key=location.key)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise aws_failure(exc, call="s3:GetObject", resource=location.uri, hints=_GET_HINTS) from exc
        except BotoCoreError as exc:
            raise aws_failure(exc, call="s3:GetObject", resource=location.uri) from exc
        body = reply["Body"]
        try:
            size = int(reply.get("ContentLength", 0))
            digest = hashlib.sha256(body.read()).hexdigest() if size <= max_bytes else ""
        except (ClientError, BotoCoreError) as exc:
            raise aws_failure(exc, call="s3:GetObject", resource=location.uri) from exc
        finally:
            body.close()
        return StoredObject(
            version_id=reply.get("VersionId"), etag=str(reply.get("ETag", "")), sha256=digest, size=size
        )

    def read(self, location: S3Location, *, version_id: str | None, max_bytes: int) -> bytes:
        """The bytes of one version of the object (``version_id`` None: the current one).

        Raises NotFound ``s3_object_not_found`` when that version (or the object) does not exist,
        ClientError ``s3_object_too_large`` when it is larger than ``max_bytes``.
        """
        extra = {"VersionId": version_id} if version_id not in (None, "null") else {}
        try:
            reply = self._client.get_object(Bucket=location.bucket, Key=location.key, **extra)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "NoSuchVersion", "404"):
                version = f" version {version_id}" if extra else ""
                raise NotFound(f"{location.uri}{version} does not exist", code="s3_object_not_found") from exc
            raise aws_failure(exc, call="s3:GetObject", resource=location.uri, hints=_GET_HINTS) from exc
        except BotoCoreError as exc:
            raise aws_failure(exc, call="s3:GetObject", resource=location.uri) from exc
        body = reply["Body"]
        try:
            if int(reply.get("ContentLength", 0)) > max_bytes:
                raise IssuerClientError(
                    f"{location.uri} is larger than {max_bytes} bytes: not a truststore", code="s3_object_too_large"
                )
            return bytes(body.read(max_bytes + 1)[:max_bytes])
        except (ClientError, BotoCoreError) as exc:
            raise aws_failure(exc, call="s3:GetObject", resource=location.uri) from exc
        finally:
            body.close()

    def put(
        self, location: S3Location, body: bytes, *, content_type: str, replacing: StoredObject | None
    ) -> str | None:
        """Write ``body`` as the new current version; returns its version id (None if the bucket is unversioned).

        ``replacing`` is what :meth:`current` read: the write only succeeds if that is
        still the current version (None: only if there is still no object). Raises
        Conflict ``s3_changed_concurrently`` when another writer came first.
        """
        condition = {"IfMatch": replacing.etag} if replacing is not None else {"IfNoneMatch": "*"}
        try:
            reply = self._client.put_object(
                Bucket=location.bucket,
                Key=location.key,
                Body=body,
                ContentType=content_type,
                Metadata={_SHA256_KEY: hashlib.sha256(body).hexdigest()},
                **condition,
            )
        except (ClientError, BotoCoreError) as exc:
            raise aws_failure(exc, call="s3:PutObject", resource=location.uri, hints=_PUT_HINTS) from exc
        version = reply.get("VersionId")
        return str(version) if version else None


_BUCKET_HINTS: dict[str, Hint] = {
    "NoSuchBucket": ("s3_bucket_not_found", "check the bucket name (and that it is in this account)"),
}
_GET_HINTS: dict[str, Hint] = {
    **_BUCKET_HINTS,
    "AccessDenied": (
        "aws_access_denied",
        "check that the publisher's IAM policy allows s3:GetObject on the object and s3:ListBucket on the bucket "
        "(without ListBucket S3 answers AccessDenied for an object that does not exist yet)",
    ),
}
_PUT_HINTS: dict[str, Hint] = {
    **_BUCKET_HINTS,
    "PreconditionFailed": (
        "s3_changed_concurrently",
        "the object changed while publishing (another publisher?); run the command again",
    ),
    "ConditionalRequestConflict": (
        "s3_changed_concurrently",
        "the object changed while publishing (another publisher?); run the command again",
    ),
}
