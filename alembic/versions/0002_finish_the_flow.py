"""Finish the flow in the caller's app: exchange codes, typed codes, supersede.

- ``redemptions`` gain ``exchanged_at`` (set once, by the exchange), ``via``
  (the door: ``link``, ``code``, ``one_click``; existing rows came through
  the link) and ``once_key`` (read back from ``claim_key`` for existing rows).
- ``actions`` gain ``code`` (links carry a typed code by default; false).
- ``code_failures``: wrong typed codes per link, purged with the link.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("redemptions") as table:
        table.add_column(sa.Column("once_key", sa.Text(), nullable=True))
        table.add_column(
            sa.Column("via", sa.String(length=16), server_default=sa.text("'link'"), nullable=False)
        )
        table.add_column(sa.Column("exchanged_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE redemptions SET once_key = substr(claim_key, 3) WHERE claim_key LIKE 'o:%'"
    )
    with op.batch_alter_table("actions") as table:
        table.add_column(
            sa.Column("code", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
    op.create_table(
        "code_failures",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("link_id", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "link_id", name=op.f("pk_code_failures")),
    )
    op.create_index(
        op.f("ix_code_failures_expires_at"), "code_failures", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_code_failures_expires_at"), table_name="code_failures")
    op.drop_table("code_failures")
    with op.batch_alter_table("actions") as table:
        table.drop_column("code")
    with op.batch_alter_table("redemptions") as table:
        table.drop_column("exchanged_at")
        table.drop_column("via")
        table.drop_column("once_key")
