"""item_vectors: no index on score values

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24 07:00:00

The exact percentile cut-off reads the value inside a histogram bucket from Qdrant's range
index on the score field (which Qdrant keeps anyway for filters) instead of this index, whose
random inserts made every write slower as the collection grew. Dropped without copying the
table (a plain DROP INDEX on SQLite and PostgreSQL alike).
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_item_vectors_score_values", table_name="item_vectors")


def downgrade() -> None:
    op.create_index(
        "ix_item_vectors_score_values", "item_vectors", ["collection_id", "modality", "info_gain", "conformity"]
    )
