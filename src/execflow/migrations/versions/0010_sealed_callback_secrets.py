"""callback secrets are kept sealed: room for the ciphertext

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 16:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.alter_column(
            "callback_secret", existing_type=sa.String(length=64), type_=sa.Text()
        )


def downgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.alter_column(
            "callback_secret", existing_type=sa.Text(), type_=sa.String(length=64)
        )
