"""Revocation: CRL numbers per issuing CA, the CRL every replica serves, and an index for revoked leaves.

- ``ca_issuers.crl_number``: the last CRL number the issuer used; only ever incremented, in the
  transaction that stores the CRL carrying it, so ``crlNumber`` never goes backwards across replicas.
- ``ca_crls``: the current CRL of each issuer (DER), with its number, validity and a digest of the
  entries it lists; unique per (issuer_id, crl_number), so two replicas cannot store the same number.
- ``ix_certificates_revoked_not_after``: a partial index on ``not_after`` of revoked certificates, so
  ``GET /v1/revoked`` and ``GET /v1/crl`` do not scan every live certificate.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_REVOKED = sa.text("status = 'revoked'")


def upgrade() -> None:
    with op.batch_alter_table("ca_issuers") as batch:
        batch.add_column(sa.Column("crl_number", sa.BigInteger(), server_default="0", nullable=False))
    op.create_table(
        "ca_crls",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("issuer_id", _ID, nullable=False),
        sa.Column("crl_number", sa.BigInteger(), nullable=False),
        sa.Column("this_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entries_sha256", sa.String(length=64), nullable=False),
        sa.Column("revoked_count", sa.Integer(), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["issuer_id"], ["ca_issuers.id"], name=op.f("fk_ca_crls_issuer_id_ca_issuers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ca_crls")),
        sa.UniqueConstraint("issuer_id", "crl_number", name=op.f("uq_ca_crls_issuer_id_crl_number")),
    )
    with op.batch_alter_table("certificates") as batch:
        batch.create_index(
            "ix_certificates_revoked_not_after",
            ["not_after"],
            unique=False,
            postgresql_where=_REVOKED,
            sqlite_where=_REVOKED,
        )


def downgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.drop_index("ix_certificates_revoked_not_after")
    op.drop_table("ca_crls")
    with op.batch_alter_table("ca_issuers") as batch:
        batch.drop_column("crl_number")
