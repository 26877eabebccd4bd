"""``issuer audit verify`` after each kind of tampering, done with SQL as a database superuser would.

Each test seals a real trail (token issuances and refusals through the HTTP app, checkpoints
signed with the issuing CA's key), changes it outside the application — on Postgres after
switching the append-only triggers off, as a superuser can — and checks that verification
fails naming the row. The untouched trail verifies (so none of these can pass by accident).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from issuer.audit import chain_store as store
from issuer.audit.chain import make_entry
from tests.support.audit_trail import (
    HOUR,
    Trail,
    as_superuser,
    seal_now,
    sealed_trail,
    sessions_of,
    sql_time,
    untriggered,
    verify,
)


@pytest.fixture
async def trail(tmp_path: Path, db_url: str) -> Trail:
    return await sealed_trail(tmp_path, db_url)


def first(report):  # type: ignore[no-untyped-def]
    assert not report.ok, "tampering went unnoticed"
    finding = report.findings[0]
    return finding.kind, finding.attestation_id


async def test_an_untouched_trail_verifies(trail: Trail) -> None:
    report = await verify(trail)
    assert report.ok, report.findings
    assert (report.walked, report.chain_end, report.checkpoints, report.last_checkpoint) == (8, 8, 2, 8)
    assert report.notes == ()  # keys checked against the CA directory's root, not the database's


async def test_edited_row(trail: Trail) -> None:
    target = trail.ids[4]
    await as_superuser(
        trail.url,
        *untriggered(trail.url, "attestations"),
        f"UPDATE attestations SET outcome = 'success', code = NULL, reason = 'all good' WHERE id = {target}",
    )
    assert first(await verify(trail)) == ("edited", target)


async def test_deleted_row(trail: Trail) -> None:
    target = trail.ids[3]
    await as_superuser(
        trail.url, *untriggered(trail.url, "attestations"), f"DELETE FROM attestations WHERE id = {target}"
    )
    assert first(await verify(trail)) == ("deleted", target)


async def test_inserted_row_with_an_old_time(trail: Trail) -> None:
    """A row "from an hour ago" added now: the sealer refuses it, so it stays out of the chain."""
    await as_superuser(
        trail.url,
        "INSERT INTO attestations (method, outcome, principal, role, request_id, created_at) VALUES "
        f"('token', 'success', 'ghost', 'onprem', 'req-ghost', {sql_time(trail.url, datetime.now(UTC) - HOUR)})",
    )
    assert await seal_now(trail) == 0
    kind, row = first(await verify(trail))
    assert kind == "inserted" and row is not None and row > max(trail.ids)


async def test_inserted_row_between_sealed_ids(trail: Trail) -> None:
    """A row given an id below sealed ones (a gap, or one freed by a delete) and a time that fits there."""
    between = sql_time(trail.url, datetime.now(UTC) - timedelta(seconds=30))
    await as_superuser(
        trail.url,
        *untriggered(trail.url, "attestations"),
        f"DELETE FROM attestations WHERE id = {trail.ids[2]}",
        "INSERT INTO attestations (id, method, outcome, principal, role, request_id, created_at) VALUES "
        f"(-5, 'token', 'success', 'ghost', 'onprem', 'req-ghost', {between})",
    )
    report = await verify(trail, now=datetime.now(UTC) + timedelta(minutes=15))
    kinds = {(f.kind, f.attestation_id) for f in report.findings}
    assert ("deleted", trail.ids[2]) in kinds and ("inserted", -5) in kinds
    assert await seal_now(trail) == 0 or not (await verify(trail)).ok


async def test_reordered_rows(trail: Trail) -> None:
    a, b = trail.ids[3], trail.ids[4]
    await as_superuser(
        trail.url,
        *untriggered(trail.url, "attestations"),
        f"UPDATE attestations SET id = -1 WHERE id = {a}",
        f"UPDATE attestations SET id = {a} WHERE id = {b}",
        f"UPDATE attestations SET id = {b} WHERE id = -1",
    )
    report = await verify(trail)
    assert first(report) == ("reordered", a)
    assert f"sealed for row {b}" in report.findings[0].detail


async def test_reordered_chain_entries(trail: Trail) -> None:
    await as_superuser(
        trail.url,
        *untriggered(trail.url, "audit_chain"),
        "UPDATE audit_chain SET seq = -1 WHERE seq = 5",
        "UPDATE audit_chain SET seq = 5 WHERE seq = 6",
        "UPDATE audit_chain SET seq = 6 WHERE seq = -1",
    )
    assert first(await verify(trail)) == ("chain_broken", trail.ids[5])


async def test_removed_chain_entry(trail: Trail) -> None:
    await as_superuser(trail.url, *untriggered(trail.url, "audit_chain"), "DELETE FROM audit_chain WHERE seq = 4")
    report = await verify(trail)
    assert first(report) == ("chain_broken", trail.ids[4])
    # Its row is out of the chain now; once it is older than the late window no sealer takes it back.
    later = await verify(trail, now=datetime.now(UTC) + timedelta(minutes=15))
    assert ("inserted", trail.ids[3]) in {(f.kind, f.attestation_id) for f in later.findings}


async def rewrite_chain(trail: Trail, *, from_seq: int) -> None:
    """Recompute every entry from ``from_seq`` on, as someone who read issuer/audit would."""
    async with sessions_of(trail.url) as sessions, sessions() as session:
        tail = await store.tail_before(session, from_seq)
        entries = await store.entries_after(session, after_seq=from_seq - 1, limit=1000)
        updates = []
        for entry, row in entries:
            assert row is not None
            new = make_entry(row, tail, sealed_at=entry.sealed_at)
            updates.append(
                f"UPDATE audit_chain SET prev_hash = '{new.prev_hash}', row_hash = '{new.row_hash}' "
                f"WHERE seq = {new.seq}"
            )
            tail = tail.after(new, row["created_at"])
    await as_superuser(trail.url, *untriggered(trail.url, "audit_chain"), *updates)


async def test_edit_with_the_chain_recomputed_is_caught_by_the_signed_checkpoint(trail: Trail) -> None:
    target = trail.ids[2]  # seq 3: the first entry after checkpoint 2
    await as_superuser(
        trail.url,
        *untriggered(trail.url, "attestations"),
        f"UPDATE attestations SET principal = 'someone-else' WHERE id = {target}",
    )
    await rewrite_chain(trail, from_seq=3)
    report = await verify(trail)
    assert first(report) == ("checkpoint", target)
    assert "checkpoint 2" in report.findings[0].detail


async def test_recomputed_chain_with_its_checkpoints_deleted(trail: Trail) -> None:
    """Deleting the checkpoint that would catch the rewrite leaves rows no checkpoint covers."""
    target = trail.ids[5]
    await as_superuser(
        trail.url,
        *untriggered(trail.url, "attestations", "audit_checkpoints"),
        f"UPDATE attestations SET reason = 'nothing happened' WHERE id = {target}",
        "DELETE FROM audit_checkpoints WHERE seq > 2",
    )
    await rewrite_chain(trail, from_seq=3)
    assert (await verify(trail)).ok  # within the grace a recent tail needs no checkpoint yet …
    report = await verify(trail, now=datetime.now(UTC) + timedelta(minutes=11))
    assert first(report) == ("uncheckpointed", trail.ids[2])  # … but then it must have one


async def test_edited_checkpoint(trail: Trail) -> None:
    await as_superuser(
        trail.url,
        *untriggered(trail.url, "audit_checkpoints"),
        "UPDATE audit_checkpoints SET head_hash = '" + "ab" * 32 + "' WHERE seq = 2",
    )
    report = await verify(trail)
    kinds = [(f.kind, f.seq) for f in report.findings]
    assert ("checkpoint", 2) in kinds and "signature does not verify" in report.findings[-1].detail


async def test_checkpoint_signed_by_a_key_of_the_database_is_refused(trail: Trail, tmp_path: Path) -> None:
    """A forged CA registered in the database (its own root too) cannot vouch for a checkpoint."""
    from cryptography.hazmat.primitives import hashes, serialization

    from ca.hierarchy import create_hierarchy
    from issuer.audit.checkpoints import LocalKeySigner, sign_checkpoint

    forged = create_hierarchy(now=datetime.now(UTC), organization="Forged")
    fingerprint = forged.issuing.certificate.fingerprint(hashes.SHA256()).hex()
    pem = forged.issuing.certificate.public_bytes(serialization.Encoding.PEM).decode()
    root_pem = forged.root.certificate.public_bytes(serialization.Encoding.PEM).decode()
    async with sessions_of(trail.url) as sessions, sessions() as session:
        end = await store.chain_end(session)
        head = (await store.entries_after(session, after_seq=end - 1, limit=1))[0][0].row_hash
    record = await sign_checkpoint(
        LocalKeySigner(forged.issuing.key, key_ref=f"x509:{fingerprint}"), seq=end, head_hash=head, at=datetime.now(UTC)
    )
    now = sql_time(trail.url, datetime.now(UTC))
    later = sql_time(trail.url, datetime.now(UTC) + timedelta(days=300))
    await as_superuser(
        trail.url,
        *untriggered(trail.url, "audit_checkpoints"),
        f"DELETE FROM audit_checkpoints WHERE seq = {end}",
        "INSERT INTO ca_roots (fingerprint_sha256, subject, certificate_pem, state, not_before, not_after, created_at, "
        f"updated_at) VALUES ('{'f' * 64}', 'forged', '{root_pem}', 'retired', {now}, {later}, {now}, {now})",
        "INSERT INTO ca_issuers (fingerprint_sha256, subject, serial, certificate_pem, chain_pem, key_ref, state, "
        f"not_before, not_after, created_at, updated_at) VALUES ('{fingerprint}', 'forged', '1', '{pem}', '', "
        f"'file:forged', 'retired', {now}, {later}, {now}, {now})",
        "INSERT INTO audit_checkpoints (seq, head_hash, at, key_ref, algorithm, signature, format) VALUES "
        f"({end}, '{head}', {sql_time(trail.url, record.at)}, '{record.key_ref}', '{record.algorithm}', "
        f"'{record.signature}', 1)",
    )
    report = await verify(trail)
    assert [(f.kind, f.seq) for f in report.findings] == [("checkpoint", end)]
    assert "does not chain to a trusted root" in report.findings[0].detail
    # Trusting the database's own roots (no --roots, no root.pem) is what lets a forgery through: said so.
    lax = await verify(trail, trusted_roots=False)
    assert lax.ok and "database's own roots" in lax.notes[0]


async def test_truncated_tail_is_caught_by_the_checkpoint_beyond_it(trail: Trail) -> None:
    await as_superuser(
        trail.url,
        *untriggered(trail.url, "attestations", "audit_chain"),
        f"DELETE FROM attestations WHERE id >= {trail.ids[6]}",
        "DELETE FROM audit_chain WHERE seq >= 7",
    )
    report = await verify(trail)
    assert ("checkpoint", 8) in {(f.kind, f.seq) for f in report.findings}


async def test_postgres_refuses_changes_while_the_triggers_are_on(tmp_path: Path, pg_url: str) -> None:
    import asyncpg

    trail = await sealed_trail(tmp_path, pg_url, rows=3)
    for statement in (
        f"UPDATE attestations SET reason = 'x' WHERE id = {trail.ids[0]}",
        f"DELETE FROM attestations WHERE id = {trail.ids[0]}",
        "TRUNCATE attestations",
        "DELETE FROM audit_chain",
        "UPDATE audit_checkpoints SET head_hash = 'x'",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await as_superuser(pg_url, statement)
    assert (await verify(trail)).ok
