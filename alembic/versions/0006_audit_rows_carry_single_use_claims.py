"""The audit row of a single-use link is its claim: no counter row on PostgreSQL.

- ``redemptions.claim_expires_at``: set on the audit row of a single-use link
  (``max_uses`` 1, no once key) claimed without a counter, to that link's
  expiry. While it is in the future the row is the link's only record of its
  use, so purge gives the link a used-up counter before the row goes.
- ``ux_redemptions_single_use``: at most one audit row per single-use link
  (client, claim key). It is what makes such a claim exactly-once: two first
  uses racing insert one row, the other conflicts (``ON CONFLICT DO
  NOTHING``), whichever way each was claimed (a counter, or the row itself).

The downgrade gives every audit row that carries a claim its counter back
(used up), so the code before this revision, which reads counters only, still
refuses those links.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 23:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SINGLE_USE = "max_uses = 1 AND once_key IS NULL"

COUNTERS_BACK = """
INSERT INTO claims
    (client_id, key, uses, issued, max_uses, expires_at, first_used_at, last_used_at)
SELECT client_id, claim_key, 1, use, 1, claim_expires_at, redeemed_at, redeemed_at
FROM redemptions WHERE claim_expires_at IS NOT NULL
ON CONFLICT (client_id, key) DO UPDATE
SET uses = {greatest}(claims.uses, 1), issued = {greatest}(claims.issued, excluded.issued)
"""


def upgrade() -> None:
    with op.batch_alter_table("redemptions") as table:
        table.add_column(sa.Column("claim_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ux_redemptions_single_use",
        "redemptions",
        ["client_id", "claim_key"],
        unique=True,
        postgresql_where=sa.text(SINGLE_USE),
        sqlite_where=sa.text(SINGLE_USE),
    )


def downgrade() -> None:
    greatest = "max" if op.get_bind().dialect.name == "sqlite" else "greatest"
    op.execute(COUNTERS_BACK.format(greatest=greatest))
    op.drop_index(
        "ux_redemptions_single_use",
        table_name="redemptions",
        postgresql_where=sa.text(SINGLE_USE),
        sqlite_where=sa.text(SINGLE_USE),
    )
    with op.batch_alter_table("redemptions") as table:
        table.drop_column("claim_expires_at")
