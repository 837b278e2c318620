"""Abuse limits: failed attempts per client address, counted across every process.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 20:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "failure_counters",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "address", name=op.f("pk_failure_counters")),
    )
    op.create_index(
        op.f("ix_failure_counters_expires_at"), "failure_counters", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_failure_counters_expires_at"), table_name="failure_counters")
    op.drop_table("failure_counters")
