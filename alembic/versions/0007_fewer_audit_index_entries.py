"""Fewer audit index entries per use: a first use writes two fewer on a typical link.

- ``ix_redemptions_client_link_seq`` holds only the rows that are not a
  single-use link's (``max_uses`` 1, no once key). Such a link has at most one
  row, and ``ux_redemptions_single_use`` already finds it by its claim key,
  which is ``l:`` and the link id; the audit queries by link id read both
  indexes. A single-use link's first use so writes one index entry keyed by
  its (random) link id instead of two.
- ``ix_redemptions_client_subject_seq`` holds only rows with a subject: a
  subject filter never matches one without.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SINGLE_USE = "max_uses = 1 AND once_key IS NULL"
NOT_SINGLE_USE = "(max_uses IS NULL OR max_uses <> 1 OR once_key IS NOT NULL)"
HAS_SUBJECT = "subject IS NOT NULL"
# A single-use link's row is found by its claim key; one whose key were not its link's
# would vanish from the audit queries by link id.
STRAY_KEYS = f"""
SELECT count(*) FROM redemptions WHERE {SINGLE_USE} AND claim_key <> 'l:' || link_id
"""

INDEXES = (
    ("ix_redemptions_client_link_seq", ["client_id", "link_id", "seq"], NOT_SINGLE_USE),
    ("ix_redemptions_client_subject_seq", ["client_id", "subject", "seq"], HAS_SUBJECT),
)


def upgrade() -> None:
    stray = op.get_bind().execute(sa.text(STRAY_KEYS)).scalar_one()
    if stray:
        raise RuntimeError(f"{stray} single-use audit rows have a claim key not their link's")
    for name, columns, condition in INDEXES:
        op.drop_index(name, table_name="redemptions")
        op.create_index(
            name,
            "redemptions",
            columns,
            postgresql_where=sa.text(condition),
            sqlite_where=sa.text(condition),
        )


def downgrade() -> None:
    for name, columns, _ in INDEXES:
        op.drop_index(name, table_name="redemptions")
        op.create_index(name, "redemptions", columns)
