"""The catalog of collections: model identity, dimension, τ and where the points live."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from indexer.db.models import CollectionRow
from indexer.errors import ConflictError, InvalidInputError, NotFoundError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
EXTERNAL = "external"
#: the statistics keep a d×d float64 co-moment per modality (current and drift baseline), in the
#: database and in every process's cache: 128 MiB each at 4096, 32 GiB at 65,536.
MAX_DIM = 4096


@dataclass(frozen=True)
class Collection:
    id: int
    name: str
    model: str
    pretrained: str
    dim: int
    tau: float
    min_count: int
    qdrant_collection: str
    vector_names: dict[str, str]
    attached: bool
    stats_version: int
    tol_conformity: float = 1e-3
    tol_info_gain: float = 0.01
    hub_k: int | None = None
    hub_beta: float | None = None
    hub_version: int | None = None
    #: the hubness fit's state (``CollectionRow.hub``): bank kind, per modality center, floor, bound
    hub: dict[str, Any] | None = None
    #: the last evaluation's summary and the defaults chosen from it (``defaults``: e.g.
    #: ``{"hubness": {"text_to_image": true, "image_to_text": false}}``)
    evaluation: dict[str, Any] | None = None
    #: metadata fields given a payload index before any HNSW graph was built: every graph links
    #: their values, so Qdrant's filtered walk keeps its recall on them
    linked_fields: tuple[str, ...] = ()

    @property
    def model_identity(self) -> str:
        return self.model if self.model == EXTERNAL else f"{self.model}:{self.pretrained}"

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in ("image", "text") if m in self.vector_names)

    @classmethod
    def of(cls, r: Any) -> Collection:
        """From a :class:`CollectionRow` or a Core row of its columns."""
        return cls(
            r.id,
            r.name,
            r.model,
            r.pretrained,
            r.dim,
            r.tau,
            r.min_count,
            r.qdrant_collection,
            dict(r.vector_names),
            r.attached,
            r.stats_version,
            r.tol_conformity,
            r.tol_info_gain,
            r.hub_k,
            r.hub_beta,
            r.hub_version,
            getattr(r, "hub", None),
            getattr(r, "evaluation", None),
            tuple(getattr(r, "linked_fields", None) or ()),
        )


def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise InvalidInputError(
            f"{name!r} is not a valid collection name: use letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (at most 128 characters)."
        )
    return name


_BY_NAME = select(*CollectionRow.__table__.c).where(CollectionRow.name == bindparam("name"))


def get(session: Session, name: str) -> Collection:
    # Core columns, not an ORM entity: this runs on every search, and skips identity-map work.
    row = session.execute(_BY_NAME, {"name": name}).first()
    if row is None:
        raise NotFoundError(
            f"Collection {name!r} does not exist. Create it with `inforank create {name} ...` "
            "or list collections with `inforank collections`."
        )
    return Collection.of(row)


def check_model(c: Collection, model: str, pretrained: str) -> None:
    """Refuse vectors from another model than the collection's."""
    if model == c.model and (model == EXTERNAL or pretrained == c.pretrained):
        return
    raise ConflictError(
        f"Collection {c.name!r} holds vectors of model {c.model_identity!r}; "
        f"refusing vectors of {model if model == EXTERNAL else model + ':' + pretrained!r}. "
        "Use a separate collection per model: scores are only meaningful within one model."
    )


def check_settings(
    *, dim: int, tau: float, min_count: int, tol_conformity: float = 1e-3, tol_info_gain: float = 0.01
) -> None:
    """A collection's numeric settings, refused with their reason before anything is created."""
    if isinstance(dim, bool) or not isinstance(dim, int) or not 2 <= dim <= MAX_DIM:
        raise InvalidInputError(
            f"The dimension must be an integer from 2 to {MAX_DIM}, got {dim!r}: the statistics keep a "
            "d×d matrix per modality (128 MiB at 4096)."
        )
    if tau != 1.0:
        raise InvalidInputError(
            f"tau must be 1, got {tau!r}: information gain is the norm-based estimate, faithful to the exact "
            "KL divergence at τ = 1 (R² ≥ 0.999 on real CLIP pairs). At another τ it is only rescaled by "
            "1/τ², which changes no ranking, cut-off or rerank, so inforank does not offer it."
        )
    for what, tol in (("tol_conformity", tol_conformity), ("tol_info_gain", tol_info_gain)):
        if not math.isfinite(tol) or not 0 < tol <= 1:
            raise InvalidInputError(f"{what} must be a number in (0, 1], got {tol!r}.")
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 2:
        raise InvalidInputError(
            f"min_count must be an integer of at least 2 (a covariance needs two items), got {min_count!r}."
        )


def insert(
    session: Session,
    *,
    name: str,
    model: str,
    pretrained: str,
    dim: int,
    tau: float,
    min_count: int,
    qdrant_collection: str,
    vector_names: dict[str, str],
    attached: bool,
    tol_conformity: float = 1e-3,
    tol_info_gain: float = 0.01,
) -> Collection:
    if session.execute(select(CollectionRow.id).where(CollectionRow.name == name)).scalar():
        raise ConflictError(f"Collection {name!r} already exists.")
    check_settings(dim=dim, tau=tau, min_count=min_count, tol_conformity=tol_conformity, tol_info_gain=tol_info_gain)
    row = CollectionRow(
        name=name,
        model=model,
        pretrained=pretrained,
        dim=dim,
        tau=tau,
        min_count=min_count,
        qdrant_collection=qdrant_collection,
        vector_names=vector_names,
        attached=attached,
        stats_version=0,
        tol_conformity=tol_conformity,
        tol_info_gain=tol_info_gain,
    )
    session.add(row)
    session.flush()
    return Collection.of(row)
