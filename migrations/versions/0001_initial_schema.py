"""Initial schema: every table of DESIGN section 6.

identities, ca_issuers, certificates, attestations, instance_bindings,
replay_guards, join_tokens.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('attestations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('outcome', sa.String(length=8), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('principal', sa.String(length=2048), nullable=True),
    sa.Column('role', sa.String(length=64), nullable=True),
    sa.Column('certificate_serial', sa.String(length=64), nullable=True),
    sa.Column('remote_addr', sa.String(length=64), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("outcome IN ('success', 'failure')", name=op.f('ck_attestations_outcome')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attestations'))
    )
    with op.batch_alter_table('attestations', schema=None) as batch_op:
        batch_op.create_index('ix_attestations_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_attestations_principal', ['principal'], unique=False)

    op.create_table('ca_issuers',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('fingerprint_sha256', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=1024), nullable=False),
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('certificate_pem', sa.Text(), nullable=False),
    sa.Column('key_ref', sa.String(length=1024), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('prepared', 'active', 'retired')", name=op.f('ck_ca_issuers_state')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ca_issuers')),
    sa.UniqueConstraint('fingerprint_sha256', name=op.f('uq_ca_issuers_fingerprint_sha256'))
    )
    op.create_table('identities',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('principal', sa.String(length=2048), nullable=False),
    sa.Column('account_id', sa.String(length=12), nullable=True),
    sa.Column('region', sa.String(length=32), nullable=True),
    sa.Column('attributes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_identities')),
    sa.UniqueConstraint('method', 'principal', name=op.f('uq_identities_method_principal'))
    )
    op.create_table('instance_bindings',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('account_id', sa.String(length=12), nullable=False),
    sa.Column('instance_id', sa.String(length=32), nullable=False),
    sa.Column('region', sa.String(length=32), nullable=False),
    sa.Column('role', sa.String(length=64), nullable=False),
    sa.Column('nonce_hash', sa.String(length=64), nullable=False),
    sa.Column('pending_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_instance_bindings')),
    sa.UniqueConstraint('account_id', 'instance_id', name=op.f('uq_instance_bindings_account_id_instance_id'))
    )
    op.create_table('join_tokens',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('role', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('used_by_request_id', sa.String(length=64), nullable=True),
    sa.Column('certificate_serial', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_join_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_join_tokens_token_hash'))
    )
    op.create_table('replay_guards',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_replay_guards')),
    sa.UniqueConstraint('digest', name=op.f('uq_replay_guards_digest'))
    )
    with op.batch_alter_table('replay_guards', schema=None) as batch_op:
        batch_op.create_index('ix_replay_guards_expires_at', ['expires_at'], unique=False)

    op.create_table('certificates',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('identity_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('issuer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('role', sa.String(length=64), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('fingerprint_sha256', sa.String(length=64), nullable=False),
    sa.Column('public_key_sha256', sa.String(length=64), nullable=False),
    sa.Column('key_type', sa.String(length=16), nullable=False),
    sa.Column('subject', sa.String(length=1024), nullable=False),
    sa.Column('sans', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('renewed_from', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revocation_reason', sa.String(length=64), nullable=True),
    sa.Column('certificate_pem', sa.Text(), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('active', 'revoked', 'superseded')", name=op.f('ck_certificates_status')),
    sa.ForeignKeyConstraint(['identity_id'], ['identities.id'], name=op.f('fk_certificates_identity_id_identities')),
    sa.ForeignKeyConstraint(['issuer_id'], ['ca_issuers.id'], name=op.f('fk_certificates_issuer_id_ca_issuers')),
    sa.ForeignKeyConstraint(['renewed_from'], ['certificates.id'], name=op.f('fk_certificates_renewed_from_certificates')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_certificates')),
    sa.UniqueConstraint('fingerprint_sha256', name=op.f('uq_certificates_fingerprint_sha256')),
    sa.UniqueConstraint('serial', name=op.f('uq_certificates_serial'))
    )
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.create_index('ix_certificates_identity_id', ['identity_id'], unique=False)
        batch_op.create_index('ix_certificates_not_after', ['not_after'], unique=False)
        batch_op.create_index(batch_op.f('ix_certificates_public_key_sha256'), ['public_key_sha256'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_certificates_public_key_sha256'))
        batch_op.drop_index('ix_certificates_not_after')
        batch_op.drop_index('ix_certificates_identity_id')

    op.drop_table('certificates')
    with op.batch_alter_table('replay_guards', schema=None) as batch_op:
        batch_op.drop_index('ix_replay_guards_expires_at')

    op.drop_table('replay_guards')
    op.drop_table('join_tokens')
    op.drop_table('instance_bindings')
    op.drop_table('identities')
    op.drop_table('ca_issuers')
    with op.batch_alter_table('attestations', schema=None) as batch_op:
        batch_op.drop_index('ix_attestations_principal')
        batch_op.drop_index('ix_attestations_created_at')

    op.drop_table('attestations')

