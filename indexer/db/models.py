"""SQLAlchemy models. The schema is owned by the Alembic migrations in ``migrations/``;
CI runs ``alembic check`` so these models and the migrations cannot drift apart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class CollectionRow(Base):
    """One inforank collection. Its row is the lock that serialises statistics writers."""

    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    model: Mapped[str] = mapped_column(String(255))
    pretrained: Mapped[str] = mapped_column(String(1024))
    dim: Mapped[int] = mapped_column(Integer)
    tau: Mapped[float] = mapped_column(Float, default=1.0)
    min_count: Mapped[int] = mapped_column(Integer, default=32)
    qdrant_collection: Mapped[str] = mapped_column(String(255))
    vector_names: Mapped[dict[str, str]] = mapped_column(JSON)
    attached: Mapped[bool] = mapped_column(Boolean, default=False)
    stats_version: Mapped[int] = mapped_column(BigInteger, default=0)
    #: freshness tolerances: stored conformity within this (absolute) of its current value,
    #: information gain within this fraction of the modality's mean information gain
    tol_conformity: Mapped[float] = mapped_column(Float, default=1e-3, server_default="0.001")
    tol_info_gain: Mapped[float] = mapped_column(Float, default=0.01, server_default="0.01")
    #: hubness correction fitted by `inforank hubness fit`: k nearest bank items, weight β, and the
    #: statistics version it was fitted at (None: not fitted)
    hub_k: Mapped[int | None] = mapped_column(Integer, nullable=True)
    hub_beta: Mapped[float | None] = mapped_column(Float, nullable=True)
    hub_version: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: the fit's state kept by the refresh (indexer/hubness.py): ``bank`` ("collection" or
    #: "user"), per gallery modality the neutral ``center`` (mean bias at the fit), the ``floor``
    #: (lowest k-th similarity) and the ``bound`` on how far any stored bias can be from its definition
    hub: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: what the last `inforank evaluate` found (its summary) and the defaults chosen from it
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: metadata fields indexed before any HNSW graph of the collection was built (0009)
    linked_fields: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class StatsRow(Base):
    """Running statistics of one modality; ``kind`` is ``current`` or ``baseline`` (drift)."""

    __tablename__ = "modality_stats"

    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)
    modality: Mapped[str] = mapped_column(String(8), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    n: Mapped[int] = mapped_column(BigInteger)
    dim: Mapped[int] = mapped_column(Integer)
    mean: Mapped[bytes] = mapped_column(LargeBinary)
    m2: Mapped[bytes] = mapped_column(LargeBinary)
    raw_mean: Mapped[bytes] = mapped_column(LargeBinary)
    norm_sum: Mapped[float] = mapped_column(Float)
    norm_sq_sum: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class PointRow(Base):
    """One item (a Qdrant point): the user's id, metadata and its sync state with Qdrant."""

    __tablename__ = "points"
    __table_args__ = (
        # a sync round reads the dirty rows in key order (migration 0008); only they are indexed
        # (migration 0011): a full index moved every point's entry when it was marked clean
        Index(
            "ix_points_dirty",
            "collection_id",
            "item_key",
            sqlite_where=text("dirty = 1"),
            postgresql_where=text("dirty = true"),
        ),
        Index(
            "ix_points_quarantined",
            "collection_id",
            "item_key",
            sqlite_where=text("quarantine IS NOT NULL"),
            postgresql_where=text("quarantine IS NOT NULL"),
        ),
    )

    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)
    item_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    user_id: Mapped[Any] = mapped_column(JSON)
    point_id: Mapped[str] = mapped_column(String(36))
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    revision: Mapped[int] = mapped_column(BigInteger, default=1)
    dirty: Mapped[bool] = mapped_column(Boolean, default=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    #: why Qdrant refused this point (it is not dirty, so it never blocks a sync); cleared by
    #: the next write of the item, which retries it. None: not quarantined.
    quarantine: Mapped[str | None] = mapped_column(String(1024), nullable=True)


class VectorRow(Base):
    """One modality of one item: the exact unit vector merged into the statistics, its scores."""

    __tablename__ = "item_vectors"
    __table_args__ = (
        Index("ix_item_vectors_scores", "collection_id", "modality", "scores_version"),
        Index("ix_item_vectors_checked", "collection_id", "checked_version"),
    )

    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)
    item_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    modality: Mapped[str] = mapped_column(String(8), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    raw_norm: Mapped[float] = mapped_column(Float)
    conformity: Mapped[float | None] = mapped_column(Float, nullable=True)
    info_gain: Mapped[float | None] = mapped_column(Float, nullable=True)
    scores_version: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the statistics version these scores were last computed or confirmed at (within the
    #: rescore's skip tolerance); rows below the freshness baseline are still to be checked
    checked_version: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: hubness bias: mean of the item's k highest similarities to the other modality (None: not fitted)
    hub_bias: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: the k-th of those similarities: a new bank item closer than this changes the bias
    hub_kth: Mapped[float | None] = mapped_column(Float, nullable=True)


class HubPendingRow(Base):
    """A change of a collection with a hubness fit the refresh has not followed yet; queued by
    triggers on ``item_vectors`` (migration 0006). ``removed``: the vector (kept here) left the bank."""

    __tablename__ = "hub_pending"
    __table_args__ = (Index("ix_hub_pending_collection", "collection_id", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    item_key: Mapped[str] = mapped_column(String(512))
    modality: Mapped[str] = mapped_column(String(8))
    removed: Mapped[bool] = mapped_column(Boolean)
    vector: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class HubBankRow(Base):
    """A user-supplied hubness bank (``hubness fit --bank``): float32 rows of one modality."""

    __tablename__ = "hub_bank"

    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)
    modality: Mapped[str] = mapped_column(String(8), primary_key=True)
    vectors: Mapped[bytes] = mapped_column(LargeBinary)


class ScoreBucketRow(Base):
    """How many stored scores of one field fall in one bucket (:mod:`indexer.sketch`); kept by
    triggers on ``item_vectors`` (migration 0004), never written by the application. No foreign
    key: dropping a collection cascades into ``item_vectors``, whose triggers count down here."""

    __tablename__ = "score_buckets"

    collection_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    modality: Mapped[str] = mapped_column(String(8), primary_key=True)
    field: Mapped[str] = mapped_column(String(16), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, default=0)


class FreshnessRow(Base):
    """How far stored scores of one modality can be from their value under the current
    statistics (docs/DESIGN.md, "Freshness"). ``baseline_version``: the statistics the last
    rescore scored against (kept in the ``baseline`` stats row). Rows checked at or after it are
    within ``spread_*`` of their value there; rows not yet checked within ``pending_*``; so every
    stored score is within ``bound_* = shift(baseline → now) + max(spread, pending)``."""

    __tablename__ = "freshness"

    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)
    modality: Mapped[str] = mapped_column(String(8), primary_key=True)
    baseline_version: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(BigInteger)
    spread_conformity: Mapped[float] = mapped_column(Float, default=0.0)
    spread_info_gain: Mapped[float] = mapped_column(Float, default=0.0)
    pending_conformity: Mapped[float] = mapped_column(Float, default=0.0)
    pending_info_gain: Mapped[float] = mapped_column(Float, default=0.0)
    bound_conformity: Mapped[float] = mapped_column(Float, default=0.0)
    bound_info_gain: Mapped[float] = mapped_column(Float, default=0.0)
    #: the absolute information-gain tolerance at ``version`` (the fraction × the mean IG)
    tol_info_gain_abs: Mapped[float] = mapped_column(Float, default=0.0)
    #: items added or removed in this modality since the baseline (the rescore budget)
    changes: Mapped[int] = mapped_column(BigInteger, default=0)
    rescored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rescored_items: Mapped[int] = mapped_column(BigInteger, default=0)


class AlignmentRow(Base):
    """A fitted text→image map, versioned; at most one is active per collection."""

    __tablename__ = "alignment_maps"

    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    method: Mapped[str] = mapped_column(String(32))
    shrinkage: Mapped[float] = mapped_column(Float)
    dim: Mapped[int] = mapped_column(Integer)
    matrix: Mapped[bytes] = mapped_column(LargeBinary)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    stats_version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
