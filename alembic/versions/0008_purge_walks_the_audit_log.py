"""Purge walks the audit log in ``seq`` order: no index on ``redeemed_at``.

``ix_redemptions_redeemed_at`` served purge alone (no audit query filters or
orders by the time; the exchange's ``redeemed_at`` condition goes with the
redemption's id, found by ``uq_redemptions_id``), and every use wrote an entry
to it. Purge now walks the primary key, whose order is the rows' nearly
(``service.store.purge_batches.Walk``). The downgrade builds the index again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 13:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_redemptions_redeemed_at"


def upgrade() -> None:
    op.drop_index(INDEX, table_name="redemptions")


def downgrade() -> None:
    op.create_index(INDEX, "redemptions", ["redeemed_at"])
