"""warm start: evaluations.reused marks the copies a job took from earlier jobs

A warm start reads the originals of a (supernet, device) pair, never the copies; they were
told apart by the JSON text of ``details`` (its key ``reused_from``), so every job's start
read every copy made before it. The flag and an index on (job_id, reused) let the database
skip them. Existing copies are found by the same text match (not by JSON operators, which
PostgreSQL refuses for a whole document holding a lone surrogate escape).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 06:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('evaluations') as batch:
        batch.add_column(
            sa.Column('reused', sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_index('ix_evaluations_job_reused', ['job_id', 'reused'], unique=False)
    evaluations = sa.table(
        'evaluations', sa.column('details', sa.JSON()), sa.column('reused', sa.Boolean())
    )
    copy = sa.cast(evaluations.c.details, sa.Text()).like('%"reused\\_from":%', escape='\\')
    op.execute(evaluations.update().where(copy).values(reused=True))


def downgrade() -> None:
    with op.batch_alter_table('evaluations') as batch:
        batch.drop_index('ix_evaluations_job_reused')
        batch.drop_column('reused')
