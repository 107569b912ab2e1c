"""evaluations: partial indexes for a warm start's failures and a finished job's front

Two reads scanned far more than they needed at scale (scale audit 33, 3.7 M evaluations
on PostgreSQL): where a sub-network was measured, copies aside (``prior_failures``: a
scan of the whole table, 1.1-3.3 s; 0.4 s with ``ix_evaluations_subnet_original``), and
a succeeded job's front (``/pareto``: every row of the job, 107 ms at 50,000; 0.08 ms
with ``ix_evaluations_job_front``). Their predicates are the text SQLAlchemy gives the
queries' ``is_(False)`` and ``is_(True)`` on each database, which the planners need to
match. Building them reads the table once (4 s at 3.1 M rows).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 23:00:00.000000
"""
import sqlalchemy as sa
from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        'ix_evaluations_subnet_original',
        'evaluations',
        ['subnet_id'],
        postgresql_where=sa.text('reused IS false'),
        sqlite_where=sa.text('reused IS 0'),
    )
    op.create_index(
        'ix_evaluations_job_front',
        'evaluations',
        ['job_id', 'seq'],
        postgresql_where=sa.text('on_front IS true'),
        sqlite_where=sa.text('on_front IS 1'),
    )


def downgrade() -> None:
    op.drop_index('ix_evaluations_job_front', table_name='evaluations')
    op.drop_index('ix_evaluations_subnet_original', table_name='evaluations')
