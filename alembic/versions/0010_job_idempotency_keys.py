"""jobs: idempotency_key, one job per key

``POST /v1/jobs`` (and a calibration's POST) takes an ``Idempotency-Key`` header: a retry
of a submission whose answer was lost finds the job the first one created. The key is a
column of its own, unique, not the job's id: a deleted job frees its key, and the next job
with it gets a new id, so nothing kept by job id (a front, an export folder, a warm start's
``reused_from``) names two jobs.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 09:00:00.000000
"""
import sqlalchemy as sa
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('idempotency_key', sa.String(length=255), nullable=True))
    op.create_index('ix_jobs_idempotency_key', 'jobs', ['idempotency_key'], unique=True)


def downgrade() -> None:
    op.drop_index('ix_jobs_idempotency_key', table_name='jobs')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('idempotency_key')
