"""session tokens marked as such

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-08 02:10:00

A session (`Service.open_session`: a console's sign-in, Explorer's login) lives only as long
as the credential that opened it, so it must not count as the admin token the default
project keeps. Sessions made before this revision are found by the descriptions their
makers gave them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_SESSIONS = ("console session", "explorer session")


def upgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("session", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    tokens = sa.table(
        "tokens",
        sa.column("session", sa.Boolean()),
        sa.column("created_by", sa.String()),
        sa.column("description", sa.Text()),
        sa.column("kind", sa.String()),
    )
    op.execute(
        tokens.update()
        .where(
            tokens.c.kind == "token",
            tokens.c.created_by.is_not(None),
            tokens.c.description.in_(_SESSIONS),
        )
        .values(session=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_column("session")
