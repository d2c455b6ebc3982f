"""nonces of signed requests, shared by every node

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 07:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signature_nonces",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("nonce_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "nonce_hash", name=op.f("pk_signature_nonces")),
    )
    op.create_index(
        op.f("ix_signature_nonces_expires"), "signature_nonces", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_signature_nonces_expires"), table_name="signature_nonces")
    op.drop_table("signature_nonces")
