"""api_keys: per-key limits (max_concurrent, per_minute, per_day; NULL: the server default) and
last_started_at (whose turn it is in the fair claim order)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 05:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_concurrent", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("per_minute", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("per_day", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("last_started_at", sa.DateTime(timezone=True), nullable=True))
    # The fair claim order ranks a model's waiting predictions within their key.
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index("ix_predictions_model_status_created", ["model", "status", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_predictions_model_status_created")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("last_started_at")
        batch_op.drop_column("per_day")
        batch_op.drop_column("per_minute")
        batch_op.drop_column("max_concurrent")
