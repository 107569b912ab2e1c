"""the database's identity: a random id, for workers and APIs to tell databases apart

Workers announce the devices they serve in the broker's Redis; an API counted every
announcement, so a worker on another database (a wrong HWNAS_DATABASE_URL, or a staging and a
production deployment sharing one Redis) looked like a live worker of the device while it
dropped the API's jobs as unknown (operator probe of session 22). Workers now announce this
id, and an API counts only workers of its own database.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 16:30:00.000000
"""
import uuid

import sqlalchemy as sa
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        'database_identity',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.bulk_insert(table, [{'id': uuid.uuid4().hex}])


def downgrade() -> None:
    op.drop_table('database_identity')
