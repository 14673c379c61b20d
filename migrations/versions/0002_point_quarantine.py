"""points.quarantine: why Qdrant refused a point, so it never blocks the others

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("points") as batch:
        batch.add_column(sa.Column("quarantine", sa.String(length=1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("points") as batch:
        batch.drop_column("quarantine")
