"""Audit chain: the hash chain over attestations, its signed checkpoints, and the event relay's state.

- ``audit_chain``: one entry per sealed ``attestations`` row (seq, attestation_id unique, format,
  prev_hash, row_hash, sealed_at), appended by the sealer after the row's transaction committed.
- ``audit_checkpoints``: the chain's head hash at a seq, signed by a key the database cannot use.
- ``event_cursor``: the last chain seq the EventBridge relay handled (one row per consumer).
- ``event_outbox``: events no audit row records (a certificate expiring unrenewed), once per dedupe key.
- Postgres only: triggers that refuse UPDATE, DELETE and TRUNCATE on ``attestations``,
  ``audit_chain`` and ``audit_checkpoints``. A superuser can disable them; the chain does not rely
  on them, they only stop accidents and the application's own role.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UNPUBLISHED = sa.text("published_at IS NULL")
_APPEND_ONLY = ("attestations", "audit_chain", "audit_checkpoints")


def upgrade() -> None:
    op.create_table(
        "audit_chain",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("attestation_id", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.SmallInteger(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("row_hash", sa.String(length=64), nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_chain")),
        sa.UniqueConstraint("attestation_id", name=op.f("uq_audit_chain_attestation_id")),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_ref", sa.String(length=1024), nullable=False),
        sa.Column("algorithm", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("format", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_checkpoints")),
    )
    op.create_table(
        "event_cursor",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_event_cursor")),
    )
    op.create_table(
        "event_outbox",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("dedupe_key", sa.String(length=256), nullable=False),
        sa.Column("detail_type", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_outbox")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_event_outbox_dedupe_key")),
    )
    op.create_index(
        "ix_event_outbox_unpublished",
        "event_outbox",
        ["id"],
        unique=False,
        postgresql_where=_UNPUBLISHED,
        sqlite_where=_UNPUBLISHED,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
CREATE FUNCTION issuer_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only (the audit trail): % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""
        )
        for table in _APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION issuer_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION issuer_append_only()"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS issuer_append_only()")
    op.drop_index("ix_event_outbox_unpublished", table_name="event_outbox")
    op.drop_table("event_outbox")
    op.drop_table("event_cursor")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_chain")
