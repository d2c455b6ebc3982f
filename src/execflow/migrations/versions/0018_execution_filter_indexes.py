"""indexes for listing and counting executions by state, workflow and name

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-08 02:20:00

With a million executions in a project, a filter on a rare state or workflow walked the
creation-time index until it found a page, and a count per state read every row of that
state (`bench/console.py` measures it). Each filter now has its own index, in the order
the lists page in.
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_INDEXES = {
    "ix_executions_project_state_created": ["project_id", "state", "created_at", "id"],
    "ix_executions_project_workflow_created": ["project_id", "workflow_name", "created_at", "id"],
    "ix_executions_project_name": ["project_id", "name"],
}


def upgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        for name, columns in _INDEXES.items():
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        for name in _INDEXES:
            batch_op.drop_index(name)
