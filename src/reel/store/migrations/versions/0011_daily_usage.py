"""daily_usage: predictions created per key, UTC day and model, kept when retention deletes the
predictions (per_day and the usage reports read it); filled from the predictions there are

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 04:15:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daily_usage",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"]),
        sa.PrimaryKeyConstraint("key_id", "day", "model"),
    )
    # SQLite keeps UTC datetimes as text, PostgreSQL as timestamptz: the UTC day of each.
    postgres = op.get_bind().dialect.name == "postgresql"
    day = "(created_at AT TIME ZONE 'UTC')::date" if postgres else "date(created_at)"
    op.execute(
        f"INSERT INTO daily_usage (key_id, day, model, created) "
        f"SELECT key_id, {day}, model, count(*) FROM predictions GROUP BY key_id, {day}, model"
    )


def downgrade() -> None:
    op.drop_table("daily_usage")
