"""collections.linked_fields: the metadata fields whose payload index every HNSW graph was built with

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 05:00:00

A payload index created before any graph of the collection was built (at creation, or before
the first build) means every graph links the points of the field's values, and Qdrant's filtered
walk keeps its recall on it; the searcher routes filters on such fields to Qdrant's own plan.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("collections") as batch:
        batch.add_column(sa.Column("linked_fields", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("linked_fields")
