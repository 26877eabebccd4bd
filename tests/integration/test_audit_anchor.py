"""Anchoring checkpoints in S3 (moto's server, signatures checked): Object Lock retention when the bucket
has it, never overwritten, and ``verify --anchors`` catching a checkpoint deleted or changed in the database."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from issuer.audit import chain_store as store
from issuer.audit.anchors import AnchorLocation, Anchors
from issuer.errors import Conflict
from tests.support.audit_trail import Trail, as_superuser, sealed_trail, sessions_of, untriggered, verify
from tests.support.moto_events import MotoEvents, moto_events


@pytest.fixture(scope="module")
def aws() -> Iterator[MotoEvents]:
    with moto_events() as peer:
        yield peer


def bucket(aws: MotoEvents, *, locked: bool, rule: dict[str, Any] | None = None) -> str:
    name = f"anchors-{secrets.token_hex(4)}"
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=locked)
    if rule is not None:
        s3.put_object_lock_configuration(
            Bucket=name, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": rule}}
        )
    return name


async def db_checkpoints(trail: Trail) -> dict[int, Any]:
    async with sessions_of(trail.url) as sessions, sessions() as session:
        return {c.seq: c for c in await store.checkpoints(session)}


async def test_anchor_with_object_lock_and_verify_against_it(tmp_path: Path, pg_url: str, aws: MotoEvents) -> None:
    trail = await sealed_trail(tmp_path, pg_url)
    name = bucket(aws, locked=True, rule={"Mode": "COMPLIANCE", "Days": 30})
    s3 = aws.client("s3")
    anchors = Anchors(s3, AnchorLocation.parse(f"s3://{name}/prod/audit"))
    now = datetime.now(UTC)
    retention = anchors.retention(now=now, mode=None, days=None)
    assert retention == ("COMPLIANCE", now + timedelta(days=30))
    result = anchors.anchor(await db_checkpoints(trail), retention=retention)
    assert result.written == (2, 8) and result.already == 0 and result.lock and result.lock.startswith("COMPLIANCE")
    head = s3.head_object(Bucket=name, Key="prod/audit/00000000000000000008.json")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=name, Key="prod/audit/00000000000000000008.json", VersionId=head["VersionId"])
    again = anchors.anchor(await db_checkpoints(trail), retention=retention)
    assert again.written == () and again.already == 2
    anchored = anchors.read_all()
    assert anchored == await db_checkpoints(trail)
    report = await verify(trail, anchors=anchored)
    assert report.ok, report.findings


async def test_verify_names_a_checkpoint_deleted_or_changed_in_the_database(
    tmp_path: Path, db_url: str, aws: MotoEvents
) -> None:
    trail = await sealed_trail(tmp_path, db_url)
    anchors = Anchors(aws.client("s3"), AnchorLocation.parse(f"s3://{bucket(aws, locked=False)}/a"))
    assert anchors.retention(now=datetime.now(UTC), mode=None, days=None) is None  # no Object Lock: none asked
    anchors.anchor(await db_checkpoints(trail), retention=None)
    await as_superuser(
        trail.url, *untriggered(trail.url, "audit_checkpoints"), "DELETE FROM audit_checkpoints WHERE seq = 2"
    )
    report = await verify(trail, anchors=anchors.read_all())
    assert [(f.kind, f.seq) for f in report.findings] == [("anchor", 2)]
    assert "missing from the database" in report.findings[0].detail
    # Re-signed by a key the attacker holds? The anchored copy still differs.
    forged = "A" * 88
    await as_superuser(
        trail.url,
        *untriggered(trail.url, "audit_checkpoints"),
        f"UPDATE audit_checkpoints SET signature = '{forged}' WHERE seq = 8",
    )
    report = await verify(trail, anchors=anchors.read_all())
    assert ("anchor", 8) in [(f.kind, f.seq) for f in report.findings]
    with pytest.raises(Conflict, match="different checkpoint 8") as refused:
        anchors.anchor(await db_checkpoints(trail), retention=None)
    assert refused.value.code == "audit_anchor_differs"


def test_locations() -> None:
    assert AnchorLocation.parse("s3://b-1/x/y/").key(5) == "x/y/00000000000000000005.json"
    assert AnchorLocation.parse("s3://bucket").key(5) == "00000000000000000005.json"
    for bad in ("b/x", "s3://B/x", "s3://a/x"):
        with pytest.raises(ValueError):
            AnchorLocation.parse(bad)
