"""job_labels: a job's labels (name=value), by which the job listing filters

``POST /v1/jobs`` takes ``labels`` (``project=kws``, a pipeline's run id) and
``GET /v1/jobs?label=name=value`` lists the jobs that carry them: one row per label, found
by the (name, value) index.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 06:00:00.000000
"""
import sqlalchemy as sa
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'job_labels',
        sa.Column('job_id', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=63), nullable=False),
        sa.Column('value', sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('job_id', 'name'),
    )
    op.create_index('ix_job_labels_name_value', 'job_labels', ['name', 'value'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_job_labels_name_value', table_name='job_labels')
    op.drop_table('job_labels')
