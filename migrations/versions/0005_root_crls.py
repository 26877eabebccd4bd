"""Root CRLs: a CRL for every root, so chain checkers (``openssl verify -crl_check_all``, nginx's
``ssl_crl``) and the Lambda authorizer can check the whole chain.

- ``ca_roots.crl_number``: the last CRL number of the root (signed here or imported); only ever
  raised, in the transaction that stores the CRL carrying it.
- ``ca_root_crls``: the current CRL of each root (DER), with its number, validity, a digest of the
  entries it lists, and whether it was signed here (an online key) or imported (an offline root);
  unique per (root_id, crl_number).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("ca_roots") as batch:
        batch.add_column(sa.Column("crl_number", sa.BigInteger(), server_default="0", nullable=False))
    op.create_table(
        "ca_root_crls",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("root_id", _ID, nullable=False),
        sa.Column("crl_number", sa.BigInteger(), nullable=False),
        sa.Column("this_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entries_sha256", sa.String(length=64), nullable=False),
        sa.Column("revoked_count", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("source IN ('signed', 'imported')", name=op.f("ck_ca_root_crls_source")),
        sa.ForeignKeyConstraint(["root_id"], ["ca_roots.id"], name=op.f("fk_ca_root_crls_root_id_ca_roots")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ca_root_crls")),
        sa.UniqueConstraint("root_id", "crl_number", name=op.f("uq_ca_root_crls_root_id_crl_number")),
    )


def downgrade() -> None:
    op.drop_table("ca_root_crls")
    with op.batch_alter_table("ca_roots") as batch:
        batch.drop_column("crl_number")
