"""retention: when a webhook delivery ended; indexes the retention sweep reads by

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 04:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_predictions_finished_at"), ["finished_at"], unique=False)
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_keys_prediction_id"), ["prediction_id"], unique=False
        )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_webhook_deliveries_ended_at"), ["ended_at"], unique=False)
    # Deliveries that ended before this column existed: their last attempt was due at
    # next_attempt_at, the closest record of when they ended.
    op.execute("UPDATE webhook_deliveries SET ended_at = next_attempt_at WHERE status <> 'pending'")


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_ended_at"))
        batch_op.drop_column("ended_at")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_prediction_id"))
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_predictions_finished_at"))
