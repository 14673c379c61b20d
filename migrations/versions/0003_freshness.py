"""freshness: per-modality bounds on stored scores, checked_version, tolerances, score index, hubness bias

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "freshness",
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("modality", sa.String(length=8), nullable=False),
        sa.Column("baseline_version", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("spread_conformity", sa.Float(), nullable=False),
        sa.Column("spread_info_gain", sa.Float(), nullable=False),
        sa.Column("pending_conformity", sa.Float(), nullable=False),
        sa.Column("pending_info_gain", sa.Float(), nullable=False),
        sa.Column("bound_conformity", sa.Float(), nullable=False),
        sa.Column("bound_info_gain", sa.Float(), nullable=False),
        sa.Column("tol_info_gain_abs", sa.Float(), nullable=False),
        sa.Column("changes", sa.BigInteger(), nullable=False),
        sa.Column("rescored_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rescored_items", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["collection_id"], ["collections.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("collection_id", "modality"),
    )
    with op.batch_alter_table("collections") as batch:
        batch.add_column(sa.Column("tol_conformity", sa.Float(), server_default="0.001", nullable=False))
        batch.add_column(sa.Column("tol_info_gain", sa.Float(), server_default="0.01", nullable=False))
        batch.add_column(sa.Column("hub_k", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("hub_beta", sa.Float(), nullable=True))
        batch.add_column(sa.Column("hub_version", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("item_vectors") as batch:
        batch.add_column(sa.Column("checked_version", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("hub_bias", sa.Float(), nullable=True))
        batch.create_index("ix_item_vectors_checked", ["collection_id", "checked_version"])
        batch.create_index(
            "ix_item_vectors_score_values", ["collection_id", "modality", "info_gain", "conformity"]
        )


def downgrade() -> None:
    with op.batch_alter_table("item_vectors") as batch:
        batch.drop_index("ix_item_vectors_score_values")
        batch.drop_index("ix_item_vectors_checked")
        batch.drop_column("hub_bias")
        batch.drop_column("checked_version")
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("hub_version")
        batch.drop_column("hub_beta")
        batch.drop_column("hub_k")
        batch.drop_column("tol_info_gain")
        batch.drop_column("tol_conformity")
    op.drop_table("freshness")
