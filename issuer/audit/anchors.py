"""Anchors: copies of the signed checkpoints in S3, out of the database administrator's reach.

One object per checkpoint, ``<prefix>/<seq, 20 digits>.json``, written only if absent
(``If-None-Match: *``). When the bucket has Object Lock enabled, each object gets a retention
(``--mode``/``--retain-days``, else the bucket's default rule, else GOVERNANCE for 365 days),
so not even the bucket's owner can change or delete it before then (COMPLIANCE: not even with
the bypass permission). ``issuer audit verify --anchors`` reads them back: a checkpoint anchored
but missing or different in the database means the checkpoint table was tampered with.
Blocking boto3 calls: run them in a worker thread.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from botocore.exceptions import BotoCoreError, ClientError

from issuer.audit.canonical import iso_utc
from issuer.audit.chain_store import CheckpointRecord
from issuer.aws.failures import Hint, aws_failure
from issuer.aws.sessions import error_code
from issuer.errors import Conflict

__all__ = ["AnchorLocation", "AnchorResult", "Anchors", "LockMode", "checkpoint_json", "checkpoint_of_json"]

LockMode = Literal["GOVERNANCE", "COMPLIANCE"]
_BUCKET: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_KEY: Final = re.compile(r"(\d{20})\.json")
_MAX_OBJECT: Final = 64 * 1024
_DEFAULT_RETENTION: Final = timedelta(days=365)
_HINTS: Final[dict[str, Hint]] = {
    "NoSuchBucket": ("s3_bucket_not_found", "check the bucket name (and that it is in this account)"),
    "AccessDenied": (
        "aws_access_denied",
        "the anchoring identity needs s3:PutObject, s3:PutObjectRetention, s3:GetObject, s3:ListBucket and "
        "s3:GetBucketObjectLockConfiguration on the bucket",
    ),
}


@dataclass(frozen=True, slots=True)
class AnchorLocation:
    bucket: str
    prefix: str  # no leading or trailing "/"; may be empty

    @classmethod
    def parse(cls, uri: str) -> AnchorLocation:
        """``s3://BUCKET/PREFIX`` → AnchorLocation; ValueError saying what is wrong."""
        if not uri.startswith("s3://"):
            raise ValueError(f"{uri!r} is not an s3://BUCKET/PREFIX URI")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ValueError(f"{uri!r}: {bucket!r} is not a valid S3 bucket name")
        return cls(bucket=bucket, prefix=prefix.strip("/"))

    def key(self, seq: int) -> str:
        name = f"{seq:020d}.json"
        return f"{self.prefix}/{name}" if self.prefix else name

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def checkpoint_json(record: CheckpointRecord) -> bytes:
    """The anchored object's body: the checkpoint's columns as JSON."""
    body = {
        "seq": record.seq,
        "head_hash": record.head_hash,
        "at": iso_utc(record.at),
        "key_ref": record.key_ref,
        "algorithm": record.algorithm,
        "signature": record.signature,
        "format": record.format,
    }
    return json.dumps(body, sort_keys=True, indent=1).encode() + b"\n"


def checkpoint_of_json(data: bytes) -> CheckpointRecord:
    """Parse an anchored object; ValueError when it is not one."""
    body = json.loads(data)
    try:
        record = CheckpointRecord(
            seq=int(body["seq"]),
            head_hash=str(body["head_hash"]),
            at=datetime.fromisoformat(str(body["at"]).replace("Z", "+00:00")),
            key_ref=str(body["key_ref"]),
            algorithm=str(body["algorithm"]),
            signature=str(body["signature"]),
            format=int(body["format"]),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not an anchored checkpoint: {exc}") from None
    base64.b64decode(record.signature, validate=True)
    return record


@dataclass(frozen=True, slots=True)
class AnchorResult:
    written: tuple[int, ...]
    already: int
    lock: str | None  # "COMPLIANCE until 2027-…" when Object Lock retention was applied


class Anchors:
    """Anchored checkpoints in one S3 location, through an injected boto3 ``s3`` client."""

    def __init__(self, client: Any, location: AnchorLocation) -> None:
        self._client = client
        self._where = location

    def _fail(self, exc: BaseException, call: str, resource: str | None = None) -> Exception:
        return aws_failure(exc, call=call, resource=resource or self._where.uri, hints=_HINTS)

    def retention(self, *, now: datetime, mode: LockMode | None, days: int | None) -> tuple[LockMode, datetime] | None:
        """The retention to give new objects, or None when the bucket has no Object Lock."""
        try:
            reply = self._client.get_object_lock_configuration(Bucket=self._where.bucket)
        except ClientError as exc:
            if error_code(exc) == "ObjectLockConfigurationNotFoundError":
                return None
            raise self._fail(exc, "s3:GetObjectLockConfiguration", f"bucket {self._where.bucket}") from exc
        except BotoCoreError as exc:
            raise self._fail(exc, "s3:GetObjectLockConfiguration", f"bucket {self._where.bucket}") from exc
        config = reply.get("ObjectLockConfiguration", {})
        if config.get("ObjectLockEnabled") != "Enabled":
            return None
        rule = config.get("Rule", {}).get("DefaultRetention", {})
        chosen_mode: LockMode = mode or rule.get("Mode") or "GOVERNANCE"
        if days is not None:
            period = timedelta(days=days)
        elif rule.get("Days"):
            period = timedelta(days=int(rule["Days"]))
        elif rule.get("Years"):
            period = timedelta(days=365 * int(rule["Years"]))
        else:
            period = _DEFAULT_RETENTION
        return chosen_mode, now + period

    def anchored_seqs(self) -> list[int]:
        """The seqs of every anchored checkpoint, ascending."""
        prefix = f"{self._where.prefix}/" if self._where.prefix else ""
        seqs: list[int] = []
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._where.bucket, Prefix=prefix
            ):
                for item in page.get("Contents", []):
                    match = _KEY.fullmatch(str(item["Key"])[len(prefix) :])
                    if match:
                        seqs.append(int(match.group(1)))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "s3:ListObjectsV2") from exc
        return sorted(seqs)

    def read(self, seq: int) -> CheckpointRecord:
        key = self._where.key(seq)
        try:
            reply = self._client.get_object(Bucket=self._where.bucket, Key=key)
            data = reply["Body"].read(_MAX_OBJECT + 1)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "s3:GetObject", f"s3://{self._where.bucket}/{key}") from exc
        try:
            record = checkpoint_of_json(data[:_MAX_OBJECT])
        except ValueError as exc:
            raise Conflict(f"s3://{self._where.bucket}/{key}: {exc}", code="audit_anchor_invalid") from None
        if record.seq != seq:
            raise Conflict(
                f"s3://{self._where.bucket}/{key} holds checkpoint {record.seq}", code="audit_anchor_invalid"
            )
        return record

    def read_all(self, *, from_seq: int = 0) -> dict[int, CheckpointRecord]:
        return {seq: self.read(seq) for seq in self.anchored_seqs() if seq >= from_seq}

    def put(self, record: CheckpointRecord, *, retention: tuple[LockMode, datetime] | None) -> bool:
        """Anchor ``record``; False if the very same checkpoint was anchored already.

        Raises Conflict ``audit_anchor_differs`` when a different checkpoint is anchored for that seq.
        """
        key = self._where.key(record.seq)
        extra: dict[str, Any] = {}
        if retention is not None:
            extra = {"ObjectLockMode": retention[0], "ObjectLockRetainUntilDate": retention[1]}
        try:
            self._client.put_object(
                Bucket=self._where.bucket,
                Key=key,
                Body=checkpoint_json(record),
                ContentType="application/json",
                IfNoneMatch="*",
                **extra,
            )
            return True
        except ClientError as exc:
            if error_code(exc) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise self._fail(exc, "s3:PutObject", f"s3://{self._where.bucket}/{key}") from exc
        except BotoCoreError as exc:
            raise self._fail(exc, "s3:PutObject", f"s3://{self._where.bucket}/{key}") from exc
        if self.read(record.seq) != record:
            raise Conflict(
                f"s3://{self._where.bucket}/{key} holds a different checkpoint {record.seq} than the database: "
                "the database's checkpoints were changed since it was anchored (run `issuer audit verify --anchors`)",
                code="audit_anchor_differs",
            )
        return False

    def anchor(
        self,
        records: Mapping[int, CheckpointRecord],
        *,
        retention: tuple[LockMode, datetime] | None,
        progress: Callable[[str], None] | None = None,
    ) -> AnchorResult:
        """Anchor every checkpoint of ``records`` not anchored yet, after checking that the newest one
        anchored already is still the database's (Conflict ``audit_anchor_differs`` if not; the full
        comparison is ``issuer audit verify --anchors``)."""
        present = set(self.anchored_seqs())
        both = present & set(records)
        if both and self.read(max(both)) != records[max(both)]:
            newest = max(both)
            raise Conflict(
                f"s3://{self._where.bucket}/{self._where.key(newest)} holds a different checkpoint {newest} than the "
                "database: the database's checkpoints were changed since it was anchored "
                "(run `issuer audit verify --anchors`)",
                code="audit_anchor_differs",
            )
        written: list[int] = []
        for seq in sorted(records):
            if seq in present:
                continue
            if self.put(records[seq], retention=retention):
                written.append(seq)
                if progress is not None and len(written) % 100 == 0:
                    progress(f"anchored {len(written)} checkpoints (seq {seq})")
        lock = f"{retention[0]} until {iso_utc(retention[1])}" if retention is not None else None
        return AnchorResult(written=tuple(written), already=len(present & set(records)), lock=lock)
