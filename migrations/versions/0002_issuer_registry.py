"""The CA issuer registry: roots in the database, issuer life cycle columns, renewal chains.

- ``ca_roots``: the trust anchors, so every replica reads the truststore from the database.
- ``ca_issuers``: ``chain_pem``, ``updated_at``, ``activated_at``, ``retired_at``, and a partial
  unique index that lets at most one issuer be ``active``.
- ``certificates``: ``chain_started_at`` (when the machine last attested; renewals copy it) and an
  index on ``issuer_id`` (leaf counts per issuer).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ONE_ACTIVE = sa.text("state = 'active'")


def upgrade() -> None:
    op.create_table(
        "ca_roots",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("fingerprint_sha256", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=1024), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("key_ref", sa.String(length=1024), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('active', 'retired')", name=op.f("ck_ca_roots_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ca_roots")),
        sa.UniqueConstraint("fingerprint_sha256", name=op.f("uq_ca_roots_fingerprint_sha256")),
    )
    with op.batch_alter_table("ca_issuers") as batch:
        batch.add_column(sa.Column("chain_pem", sa.Text(), nullable=True))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE ca_issuers SET chain_pem = '', updated_at = created_at")
    op.execute("UPDATE ca_issuers SET activated_at = created_at WHERE state = 'active'")
    with op.batch_alter_table("ca_issuers") as batch:
        batch.alter_column("chain_pem", existing_type=sa.Text(), nullable=False)
        batch.alter_column("updated_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.create_index(
            "uq_ca_issuers_one_active",
            ["state"],
            unique=True,
            postgresql_where=_ONE_ACTIVE,
            sqlite_where=_ONE_ACTIVE,
        )
    with op.batch_alter_table("certificates") as batch:
        batch.add_column(sa.Column("chain_started_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE certificates SET chain_started_at = created_at")
    with op.batch_alter_table("certificates") as batch:
        batch.alter_column("chain_started_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.create_index("ix_certificates_issuer_id", ["issuer_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.drop_index("ix_certificates_issuer_id")
        batch.drop_column("chain_started_at")
    with op.batch_alter_table("ca_issuers") as batch:
        batch.drop_index("uq_ca_issuers_one_active")
        batch.drop_column("retired_at")
        batch.drop_column("activated_at")
        batch.drop_column("updated_at")
        batch.drop_column("chain_pem")
    op.drop_table("ca_roots")
