"""the depth and the root of each execution, recorded by the engine instead of a label

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-08 10:00:00

Children created before this revision get theirs from the chain of `parent_id`s (the label
`execflow.depth` they carry was all there was, and a caller could set it on a start).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("depth", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("root_id", sa.String(length=32), nullable=True))
        batch_op.create_index("ix_executions_root", ["root_id"], unique=False)
    executions = sa.table(
        "executions",
        sa.column("id", sa.String()),
        sa.column("parent_id", sa.String()),
        sa.column("depth", sa.Integer()),
        sa.column("root_id", sa.String()),
    )
    conn = op.get_bind()
    found = conn.execute(
        sa.select(executions.c.id, executions.c.parent_id).where(
            executions.c.parent_id.is_not(None)
        )
    )
    parents: dict[str, str] = {child: parent for child, parent in found}
    rows = []
    for child in parents:
        depth, top, seen = 0, child, set()
        while top in parents and top not in seen:  # a parent with no parent is the root
            seen.add(top)
            depth, top = depth + 1, parents[top]
        rows.append({"child": child, "depth": depth, "root": top})
    if rows:
        conn.execute(
            executions.update()
            .where(executions.c.id == sa.bindparam("child"))
            .values(depth=sa.bindparam("depth"), root_id=sa.bindparam("root")),
            rows,
        )


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index("ix_executions_root")
        batch_op.drop_column("root_id")
        batch_op.drop_column("depth")
