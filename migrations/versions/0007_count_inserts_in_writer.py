"""score_buckets: inserted scores are counted by the writer, one upsert per bucket and batch

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 15:00:00

A per-row trigger on INSERT cost two histogram upserts (and, on SQLite, two calls into Python)
for every stored vector: two thirds of the time of inserting a batch into item_vectors
(BENCHMARKS.md, "Ingest"). Rows enter item_vectors in one place (indexer/writer.py, ``_record``),
which now counts a batch's scores per bucket and upserts each bucket once, in the same
transaction. Deletes and score updates stay counted by the triggers of 0004.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

PG_TRIGGER = """
DROP TRIGGER IF EXISTS item_vectors_score_buckets ON item_vectors;
CREATE TRIGGER item_vectors_score_buckets
AFTER DELETE OR UPDATE OF conformity, info_gain ON item_vectors
FOR EACH ROW EXECUTE FUNCTION inforank_score_buckets();
"""

PG_TRIGGER_BEFORE = """
DROP TRIGGER IF EXISTS item_vectors_score_buckets ON item_vectors;
CREATE TRIGGER item_vectors_score_buckets
AFTER INSERT OR DELETE OR UPDATE OF conformity, info_gain ON item_vectors
FOR EACH ROW EXECUTE FUNCTION inforank_score_buckets();
"""

SQLITE_INSERT_TRIGGER = (
    "CREATE TRIGGER item_vectors_buckets_ins AFTER INSERT ON item_vectors BEGIN "
    + " ".join(
        "INSERT INTO score_buckets (collection_id, modality, field, bucket, n) "
        f"SELECT new.collection_id, new.modality, '{f}', inforank_bucket(new.{f}), 1 "
        f"WHERE new.{f} IS NOT NULL "
        "ON CONFLICT (collection_id, modality, field, bucket) DO UPDATE SET n = n + excluded.n;"
        for f in ("conformity", "info_gain")
    )
    + " END"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_TRIGGER)
    else:
        op.execute("DROP TRIGGER IF EXISTS item_vectors_buckets_ins")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_TRIGGER_BEFORE)
    else:
        op.execute(SQLITE_INSERT_TRIGGER)
