"""hubness kept up to date: each item's k-th bank similarity, the bank changes still to follow, a user bank

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 14:00:00

Triggers on item_vectors queue every change of a collection with a hubness fit in hub_pending:
an inserted vector, a deleted one (with its vector: a removed bank item lowers the biases of
the items it was near), a replaced one (both). The refresh (indexer/hubness.py) works the queue off.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FITTED = "(SELECT hub_k FROM collections WHERE id = {row}.collection_id) IS NOT NULL"


def _sqlite_queue(row: str, removed: bool) -> str:
    vec = f"{row}.vector" if removed else "NULL"
    return (
        "INSERT INTO hub_pending (collection_id, item_key, modality, removed, vector) "
        f"SELECT {row}.collection_id, {row}.item_key, {row}.modality, {int(removed)}, {vec} "
        f"WHERE {FITTED.format(row=row)};"
    )


SQLITE = [
    f"CREATE TRIGGER item_vectors_hub_ins AFTER INSERT ON item_vectors BEGIN {_sqlite_queue('new', False)} END",
    f"CREATE TRIGGER item_vectors_hub_del AFTER DELETE ON item_vectors BEGIN {_sqlite_queue('old', True)} END",
    "CREATE TRIGGER item_vectors_hub_upd AFTER UPDATE OF vector ON item_vectors WHEN old.vector IS NOT new.vector "
    f"BEGIN {_sqlite_queue('old', True)} {_sqlite_queue('new', False)} END",
]

PG = f"""
CREATE OR REPLACE FUNCTION inforank_hub_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' AND (TG_OP = 'DELETE' OR OLD.vector IS DISTINCT FROM NEW.vector)
     AND {FITTED.format(row="OLD")} THEN
    INSERT INTO hub_pending (collection_id, item_key, modality, removed, vector)
    VALUES (OLD.collection_id, OLD.item_key, OLD.modality, true, OLD.vector);
  END IF;
  IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR OLD.vector IS DISTINCT FROM NEW.vector)
     AND {FITTED.format(row="NEW")} THEN
    INSERT INTO hub_pending (collection_id, item_key, modality, removed, vector)
    VALUES (NEW.collection_id, NEW.item_key, NEW.modality, false, NULL);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER item_vectors_hub_pending
AFTER INSERT OR DELETE OR UPDATE OF vector ON item_vectors
FOR EACH ROW EXECUTE FUNCTION inforank_hub_pending();
"""


def upgrade() -> None:
    with op.batch_alter_table("collections") as batch:
        batch.add_column(sa.Column("hub", sa.JSON(), nullable=True))
    with op.batch_alter_table("item_vectors") as batch:
        batch.add_column(sa.Column("hub_kth", sa.Float(), nullable=True))
    op.create_table(
        "hub_pending",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("collection_id", sa.Integer(), sa.ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
        sa.Column("item_key", sa.String(length=512), nullable=False),
        sa.Column("modality", sa.String(length=8), nullable=False),
        sa.Column("removed", sa.Boolean(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=True),
    )
    op.create_index("ix_hub_pending_collection", "hub_pending", ["collection_id", "id"])
    op.create_table(
        "hub_bank",
        sa.Column("collection_id", sa.Integer(), sa.ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("modality", sa.String(length=8), primary_key=True),
        sa.Column("vectors", sa.LargeBinary(), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG)
    else:
        for ddl in SQLITE:
            op.execute(ddl)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS item_vectors_hub_pending ON item_vectors")
        op.execute("DROP FUNCTION IF EXISTS inforank_hub_pending()")
    else:
        for name in ("ins", "del", "upd"):
            op.execute(f"DROP TRIGGER IF EXISTS item_vectors_hub_{name}")
    op.drop_table("hub_bank")
    op.drop_index("ix_hub_pending_collection", "hub_pending")
    op.drop_table("hub_pending")
    with op.batch_alter_table("item_vectors") as batch:
        batch.drop_column("hub_kth")
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("hub")
