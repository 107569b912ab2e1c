"""jobs: submitted_by, the API key that submitted each; Idempotency-Keys per API key

A job records the label of the API key that submitted it (``api.auth.key_label``; "" on a
server without keys, and for the jobs stored before): ``HWNAS_MAX_ACTIVE_JOBS_PER_KEY``
counts a key's queued and running jobs by it, and an ``Idempotency-Key`` is one team's,
not shared by every key (tenancy audit 33: a team sending another's key got that team's
job back). The unique index moves from the Idempotency-Key alone to (submitted_by,
Idempotency-Key). A downgrade fails while two API keys hold the same Idempotency-Key:
delete one of the two jobs first.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 22:00:00.000000
"""
import sqlalchemy as sa
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(
            sa.Column('submitted_by', sa.String(length=16), nullable=False, server_default='')
        )
    op.drop_index('ix_jobs_idempotency_key', table_name='jobs')
    op.create_index(
        'ix_jobs_submitted_by_idempotency_key',
        'jobs',
        ['submitted_by', 'idempotency_key'],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index('ix_jobs_submitted_by_idempotency_key', table_name='jobs')
    op.create_index('ix_jobs_idempotency_key', 'jobs', ['idempotency_key'], unique=True)
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('submitted_by')
