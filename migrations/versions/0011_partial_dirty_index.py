"""points: the dirty index holds the dirty points only

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24 07:45:00

A sync round reads ``WHERE collection_id = ? AND dirty = true ORDER BY item_key``. On
(collection_id, dirty, item_key) over every point, marking a point clean moved its entry from
the dirty to the clean part of the index, at the point's key: for keys that arrive in random
order (content hashes, UUIDs) a random page per point, in an index as large as the collection.
A partial index on (collection_id, item_key) where dirty holds only the points not yet pushed:
as small as the writes in flight, and the round reads it in key order as before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_points_dirty", "points")
    op.create_index(
        "ix_points_dirty",
        "points",
        ["collection_id", "item_key"],
        sqlite_where=sa.text("dirty = 1"),
        postgresql_where=sa.text("dirty = true"),
    )


def downgrade() -> None:
    op.drop_index("ix_points_dirty", "points")
    op.create_index("ix_points_dirty", "points", ["collection_id", "dirty", "item_key"])
