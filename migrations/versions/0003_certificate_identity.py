"""Each certificate keeps the verified identity facts it was issued for.

``identities.attributes`` holds the facts last seen for a principal, and many machines
share one principal (every task of an ECS service is the same role ARN, each with its
own session name). A renewal must keep *its* certificate's identity, so the facts move
onto the certificate: ``certificates.identity_attributes`` (backfilled from the identity).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.add_column(sa.Column("identity_attributes", _JSON, nullable=True))
    op.execute(
        "UPDATE certificates SET identity_attributes = "
        "(SELECT attributes FROM identities WHERE identities.id = certificates.identity_id)"
    )
    with op.batch_alter_table("certificates") as batch:
        batch.alter_column("identity_attributes", existing_type=_JSON, nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.drop_column("identity_attributes")
