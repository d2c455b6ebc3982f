"""the actions a project's workflows may use (NULL: every action, as before)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 23:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Projects made before keep every action: narrowing them is an admin's decision.
    kind = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    with op.batch_alter_table("projects") as batch_op:
        batch_op.add_column(sa.Column("actions", kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch_op:
        batch_op.drop_column("actions")
