"""latency predictors

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 12:55:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('latency_predictors',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('supernet', sa.String(length=200), nullable=False),
    sa.Column('device', sa.String(length=200), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('n_measurements', sa.Integer(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('measurements', sa.JSON(), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('supernet', 'device', 'version', name='uq_latency_predictors_version')
    )
    with op.batch_alter_table('latency_predictors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_latency_predictors_device'), ['device'], unique=False)
        batch_op.create_index(batch_op.f('ix_latency_predictors_supernet'), ['supernet'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('latency_predictors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_latency_predictors_supernet'))
        batch_op.drop_index(batch_op.f('ix_latency_predictors_device'))

    op.drop_table('latency_predictors')
