"""score_buckets: per-field score histograms kept exact by triggers on item_vectors

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 12:00:00

The bucket of a score x is 0 for |x| <= 1e-12, else sign(x) * ceil(ln(|x| / 1e-12) / ln(gamma))
with gamma = 1.005 / 0.995 (relative accuracy 0.5 %; indexer/sketch.py). PostgreSQL gets it as
an SQL function; SQLite as a Python function the engine registers on every connection.
"""

import math

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

LOG_GAMMA = math.log(1.005 / 0.995)
FIELDS = ("conformity", "info_gain")

PG_FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION inforank_bucket(x double precision) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN x IS NULL OR x = 'NaN'::float8 THEN NULL
              WHEN abs(x) <= 1e-12 THEN 0
              ELSE (sign(x) * ceil(ln(abs(x) / 1e-12) / {LOG_GAMMA!r}))::integer END
$$;

CREATE OR REPLACE FUNCTION inforank_count_score(c integer, m varchar, f varchar, x double precision, d integer)
RETURNS void LANGUAGE sql AS $$
  INSERT INTO score_buckets (collection_id, modality, field, bucket, n)
  VALUES (c, m, f, inforank_bucket(x), d)
  ON CONFLICT (collection_id, modality, field, bucket) DO UPDATE SET n = score_buckets.n + EXCLUDED.n
$$;

CREATE OR REPLACE FUNCTION inforank_score_buckets() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    IF OLD.conformity IS NOT NULL AND (TG_OP = 'DELETE' OR OLD.conformity IS DISTINCT FROM NEW.conformity) THEN
      PERFORM inforank_count_score(OLD.collection_id, OLD.modality, 'conformity', OLD.conformity, -1);
    END IF;
    IF OLD.info_gain IS NOT NULL AND (TG_OP = 'DELETE' OR OLD.info_gain IS DISTINCT FROM NEW.info_gain) THEN
      PERFORM inforank_count_score(OLD.collection_id, OLD.modality, 'info_gain', OLD.info_gain, -1);
    END IF;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    IF NEW.conformity IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.conformity IS DISTINCT FROM NEW.conformity) THEN
      PERFORM inforank_count_score(NEW.collection_id, NEW.modality, 'conformity', NEW.conformity, 1);
    END IF;
    IF NEW.info_gain IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.info_gain IS DISTINCT FROM NEW.info_gain) THEN
      PERFORM inforank_count_score(NEW.collection_id, NEW.modality, 'info_gain', NEW.info_gain, 1);
    END IF;
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER item_vectors_score_buckets
AFTER INSERT OR DELETE OR UPDATE OF conformity, info_gain ON item_vectors
FOR EACH ROW EXECUTE FUNCTION inforank_score_buckets();
"""


def _sqlite_count(row: str, f: str, d: int) -> str:
    return (
        "INSERT INTO score_buckets (collection_id, modality, field, bucket, n) "
        f"SELECT {row}.collection_id, {row}.modality, '{f}', inforank_bucket({row}.{f}), {d} "
        f"WHERE {row}.{f} IS NOT NULL "
        "ON CONFLICT (collection_id, modality, field, bucket) DO UPDATE SET n = n + excluded.n;"
    )


def _sqlite_triggers() -> list[str]:
    out = [
        "CREATE TRIGGER item_vectors_buckets_ins AFTER INSERT ON item_vectors BEGIN "
        + " ".join(_sqlite_count("new", f, 1) for f in FIELDS)
        + " END",
        "CREATE TRIGGER item_vectors_buckets_del AFTER DELETE ON item_vectors BEGIN "
        + " ".join(_sqlite_count("old", f, -1) for f in FIELDS)
        + " END",
    ]
    for f in FIELDS:
        out.append(
            f"CREATE TRIGGER item_vectors_buckets_upd_{f} AFTER UPDATE OF {f} ON item_vectors "
            f"WHEN old.{f} IS NOT new.{f} BEGIN {_sqlite_count('old', f, -1)} {_sqlite_count('new', f, 1)} END"
        )
    return out


def upgrade() -> None:
    op.create_table(
        "score_buckets",
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("modality", sa.String(length=8), nullable=False),
        sa.Column("field", sa.String(length=16), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("collection_id", "modality", "field", "bucket"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTIONS)
    else:
        for ddl in _sqlite_triggers():
            op.execute(ddl)
    for f in FIELDS:  # the scores already stored
        op.execute(
            "INSERT INTO score_buckets (collection_id, modality, field, bucket, n) "
            f"SELECT collection_id, modality, '{f}', inforank_bucket({f}), count(*) FROM item_vectors "
            f"WHERE {f} IS NOT NULL GROUP BY collection_id, modality, inforank_bucket({f})"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS item_vectors_score_buckets ON item_vectors")
        op.execute("DROP FUNCTION IF EXISTS inforank_score_buckets()")
        op.execute("DROP FUNCTION IF EXISTS inforank_count_score(integer, varchar, varchar, double precision, integer)")
        op.execute("DROP FUNCTION IF EXISTS inforank_bucket(double precision)")
    else:
        for name in ("ins", "del", *(f"upd_{f}" for f in FIELDS)):
            op.execute(f"DROP TRIGGER IF EXISTS item_vectors_buckets_{name}")
    op.drop_table("score_buckets")
