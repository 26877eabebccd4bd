"""Operators: every operator action on the record, and the deny list.

- ``attestations.actor``, ``.action``, ``.arguments``: an operator action's row (method ``admin``)
  names who did it (an IAM ARN, or ``local:user@host``), the action (``token.create``, …) and its
  arguments, secrets left out. Null on the rows of machines.
- ``denials``: identities refused at attestation, renewal and bootstrap — a principal pattern, an
  EC2 instance ID or an AWS account ID — until ``until`` or until removed (``removed_at``, kept
  for the record).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("attestations") as batch:
        batch.add_column(sa.Column("actor", sa.String(length=2048), nullable=True))
        batch.add_column(sa.Column("action", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("arguments", _JSON, nullable=True))
    op.create_table(
        "denials",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=2048), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=2048), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_by", sa.String(length=2048), nullable=True),
        sa.CheckConstraint("kind IN ('principal', 'instance', 'account')", name=op.f("ck_denials_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_denials")),
    )
    op.create_index("ix_denials_removed_at", "denials", ["removed_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_denials_removed_at", table_name="denials")
    op.drop_table("denials")
    with op.batch_alter_table("attestations") as batch:
        batch.drop_column("arguments")
        batch.drop_column("action")
        batch.drop_column("actor")
