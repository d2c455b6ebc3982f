"""access keys: credentials of the tokens table whose secret is kept sealed, for signatures

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 16:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="token")
        )
        batch_op.add_column(sa.Column("sealed_secret", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_column("sealed_secret")
        batch_op.drop_column("kind")
