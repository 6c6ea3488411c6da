"""procrastinate job queue (PostgreSQL only); predictions.job_id

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 12:00:00.000000

On PostgreSQL this applies procrastinate's own schema (tables ``procrastinate_*``, their
functions and the NOTIFY triggers), the version pinned in pyproject.toml, through Alembic so
that ``reel migrate`` and start-up apply it under the same advisory lock as our tables. A
later procrastinate release ships its schema changes as SQL files in
``procrastinate/sql/migrations``; upgrading procrastinate means adding those files as the
next Alembic revision. SQLite gets only the new column.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("job_id", sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f("ix_predictions_job_id"), ["job_id"], unique=False)

    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    if bind.execute(sa.text("SELECT to_regclass('procrastinate_jobs')")).scalar() is not None:
        return  # an operator applied it already (e.g. `procrastinate schema --apply`)
    from procrastinate.schema import SchemaManager

    # The schema is plain SQL with dollar-quoted function bodies: run it as one script on
    # the driver connection, without parameter parsing.
    bind.connection.driver_connection.execute(SchemaManager.get_schema())  # type: ignore[union-attr]


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bind.connection.driver_connection.execute(  # type: ignore[union-attr]
            """
            DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers,
                procrastinate_jobs, procrastinate_workers CASCADE;
            DO $$
            DECLARE f record;
            BEGIN
                FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
                         JOIN pg_namespace n ON n.oid = p.pronamespace
                         WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate\\_%'
                LOOP
                    EXECUTE 'DROP FUNCTION ' || f.sig || ' CASCADE';
                END LOOP;
            END $$;
            DROP TYPE IF EXISTS procrastinate_job_to_defer_v1, procrastinate_job_status,
                procrastinate_job_event_type CASCADE;
            """
        )
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_predictions_job_id"))
        batch_op.drop_column("job_id")
