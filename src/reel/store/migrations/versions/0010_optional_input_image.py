"""predictions.input_blob nullable: a text-to-video prediction has no input image

Revision ID: 0010
Revises: 0006
Create Date: 2026-12-06 04:45:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.alter_column("input_blob", existing_type=sa.String(length=300), nullable=True)


def downgrade() -> None:
    # Text-to-video rows have no input image; an empty key keeps them readable by older code.
    op.execute("UPDATE predictions SET input_blob = '' WHERE input_blob IS NULL")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.alter_column("input_blob", existing_type=sa.String(length=300), nullable=False)
