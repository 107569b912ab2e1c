"""calibration jobs: jobs.kind, and the job that fitted each latency predictor

A calibration is a job of kind 'calibration' on its device's queue, run by a worker of that
device; the predictor it fits names it (latency_predictors.job_id; NULL for predictors
fitted before this revision, when calibrations ran inside the API process).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 13:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(
            sa.Column('kind', sa.String(length=16), nullable=False, server_default='search')
        )
        batch.create_index(batch.f('ix_jobs_kind'), ['kind'], unique=False)
    with op.batch_alter_table('latency_predictors') as batch:
        batch.add_column(sa.Column('job_id', sa.String(length=32), nullable=True))
        # unique: a calibration job stores one version (NULLs, the older rows, stay distinct)
        batch.create_index(batch.f('ix_latency_predictors_job_id'), ['job_id'], unique=True)
        batch.create_foreign_key(
            'fk_latency_predictors_job_id', 'jobs', ['job_id'], ['id'], ondelete='SET NULL'
        )


def downgrade() -> None:
    with op.batch_alter_table('latency_predictors') as batch:
        batch.drop_constraint('fk_latency_predictors_job_id', type_='foreignkey')
        batch.drop_index(batch.f('ix_latency_predictors_job_id'))
        batch.drop_column('job_id')
    # The code before this revision would take calibration jobs for searches (and fail
    # them): they go, with their measurements; the predictors they stored stay.
    op.execute(
        "DELETE FROM evaluations WHERE job_id IN (SELECT id FROM jobs WHERE kind = 'calibration')"
    )
    op.execute("DELETE FROM jobs WHERE kind = 'calibration'")
    with op.batch_alter_table('jobs') as batch:
        batch.drop_index(batch.f('ix_jobs_kind'))
        batch.drop_column('kind')
