"""retries and links between executions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 11:00:49.021258
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("round", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("rerun_of", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("parent_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("parent_task", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_executions_parent", ["parent_id"], unique=False)

    with op.batch_alter_table("task_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("round", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("task_runs", schema=None) as batch_op:
        batch_op.drop_column("round")

    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index("ix_executions_parent")
        batch_op.drop_column("parent_task")
        batch_op.drop_column("parent_id")
        batch_op.drop_column("rerun_of")
        batch_op.drop_column("round")
