"""jobs: submitted_by, the API key that submitted each; Idempotency-Keys per API key

A job records the label of the API key that submitted it (``api.auth.key_label``; "" on a
server without keys, and for the jobs stored before): ``HWNAS_MAX_ACTIVE_JOBS_PER_KEY``
counts a key's queued and running jobs by it, and an ``Idempotency-Key`` is one team's,
not shared by every key (tenancy audit 33: a team sending another's key got that team's
job back). The unique index moves from the Idempotency-Key alone to (submitted_by,
Idempotency-Key). A downgrade is refused while two jobs hold the same Idempotency-Key
(two API keys sent it, or a retry with a key of a submission stored before this revision
made a new job): the error lists them, and how to free one's key.

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


#: What a refused downgrade lists at most.
SHOWN = 20


def downgrade() -> None:
    held_twice = op.get_bind().execute(sa.text(
        "SELECT idempotency_key, id, submitted_by FROM jobs WHERE idempotency_key IN "
        "(SELECT idempotency_key FROM jobs WHERE idempotency_key IS NOT NULL "
        "GROUP BY idempotency_key HAVING count(*) > 1) ORDER BY idempotency_key, created_at"
    )).all()
    if held_twice:  # the unique index of the key alone could not be made (upgrade audit 34:
        # a traceback naming the first key, no job; "delete one" needed a server running)
        lines = [f"  {key!r}: job {job} (API key {by or 'none'})"
                 for key, job, by in held_twice[:SHOWN]]
        more = f"\n  ... and {len(held_twice) - SHOWN} more" if len(held_twice) > SHOWN else ""
        raise RuntimeError(
            "cannot go back below revision 0011: these jobs hold the same Idempotency-Key, "
            "which an earlier revision allows once:\n" + "\n".join(lines) + more + "\n"
            "Free one job's key (the job stays; a retry with that key no longer finds it): "
            "UPDATE jobs SET idempotency_key = NULL WHERE id = '<job id>'; then downgrade again. "
            "(On SQLite the later revisions' downgrades stay done: alembic current says "
            "where it stands.)"
        )
    op.drop_index('ix_jobs_submitted_by_idempotency_key', table_name='jobs')
    op.create_index('ix_jobs_idempotency_key', 'jobs', ['idempotency_key'], unique=True)
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('submitted_by')
