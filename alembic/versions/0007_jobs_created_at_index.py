"""jobs: an index on created_at, the listing's order

``GET /v1/jobs`` orders by ``created_at`` (newest first): without an index every page sorted
the whole table (a soak probe of session 20 measured 75 ms for the first page and 619 ms for
the last at 200,000 jobs; ``benchmarks/job_listing.py`` has this version's numbers).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 12:30:00.000000
"""
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_jobs_created_at', 'jobs', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_jobs_created_at', table_name='jobs')
