"""One-click unsubscribe (RFC 8058): ``actions`` gain ``one_click`` (false).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 20:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("actions") as table:
        table.add_column(
            sa.Column("one_click", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("actions") as table:
        table.drop_column("one_click")
