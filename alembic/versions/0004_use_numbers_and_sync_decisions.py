"""Use numbers that never repeat, and sync redemptions awaiting their receiver's verdict.

- ``claims.issued``: how many use numbers the counter has handed out. It only
  grows; a ``sync`` use given back lowers ``uses``, not ``issued``, so the
  next claim takes a new number. Existing counters start above every use
  number their audit rows carry (before this, a given-back use could be
  numbered again).
- ``ix_deliveries_deciding``: the ``sync`` jobs whose receiver has not
  decided yet (``status = 'deciding'``), by lease, for the sweep that gives
  back the ones whose process never settled them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HIGHEST_USE_NUMBERS = """
UPDATE claims SET issued = top.use
FROM (SELECT client_id, claim_key, max(use) AS use FROM redemptions
      GROUP BY client_id, claim_key) AS top
WHERE top.client_id = claims.client_id AND top.claim_key = claims.key
  AND top.use > claims.issued
"""


def upgrade() -> None:
    with op.batch_alter_table("claims") as table:
        table.add_column(
            sa.Column("issued", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
    op.execute("UPDATE claims SET issued = uses")
    op.execute(HIGHEST_USE_NUMBERS)
    op.create_index(
        "ix_deliveries_deciding",
        "deliveries",
        ["leased_until"],
        unique=False,
        postgresql_where=sa.text("status = 'deciding'"),
        sqlite_where=sa.text("status = 'deciding'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_deliveries_deciding",
        table_name="deliveries",
        postgresql_where=sa.text("status = 'deciding'"),
        sqlite_where=sa.text("status = 'deciding'"),
    )
    with op.batch_alter_table("claims") as table:
        table.drop_column("issued")
