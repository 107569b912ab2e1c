"""PostgreSQL: NOTIFY hwnas_job_changed with the job's id when a jobs row changes

The API's event-loop reads keep a memo of each polled job and drop it on this notification
(store.db._AsyncDriverReads). SQLite needs nothing: its readers see PRAGMA data_version.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 20:00:00.000000
"""
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute(
        """
        CREATE FUNCTION hwnas_notify_job_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('hwnas_job_changed', OLD.id);
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER jobs_changed_notify AFTER UPDATE OR DELETE ON jobs
        FOR EACH ROW EXECUTE FUNCTION hwnas_notify_job_changed()
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute('DROP TRIGGER jobs_changed_notify ON jobs')
    op.execute('DROP FUNCTION hwnas_notify_job_changed()')
