"""files.expires_at: Runway's ephemeral uploads last 24 hours

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_files_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_files_expires_at"))
        batch_op.drop_column("expires_at")
