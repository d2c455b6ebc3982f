"""callbacks

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 11:18:17.708646
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("callback_url", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("callback_state", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("callback_attempts", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("callback_next_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("callback_last_status", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("callback_last_error", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("callback_lease_until", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_executions_callback", ["callback_state", "callback_next_at"], unique=False
        )

    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("callback_secret", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("callback_secret")

    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index("ix_executions_callback")
        batch_op.drop_column("callback_lease_until")
        batch_op.drop_column("callback_last_error")
        batch_op.drop_column("callback_last_status")
        batch_op.drop_column("callback_next_at")
        batch_op.drop_column("callback_attempts")
        batch_op.drop_column("callback_state")
        batch_op.drop_column("callback_url")
