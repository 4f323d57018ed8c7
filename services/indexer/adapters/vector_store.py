"""The indexer's vector store: one interface, an embedded engine behind it today.

``VectorStore`` is what the indexer's application layer talks to. ``EdgeVectorStore``
(``indexer.adapters.edge_store``) implements it on Qdrant's own engine run
in-process (``qdrant-edge-py`` 0.9, module ``qdrant_edge``). What that engine gives
us, as probed on 0.9.0:

- one ``EdgeShard`` per directory (``EdgeShard.create`` / ``EdgeShard.load``),
  persisted with a WAL; a second open of the same directory fails (WAL lock), so one
  process owns a data dir. There is no notion of several collections: we keep one
  shard per collection under ``<data_dir>/collections/<name>/shard`` plus our own
  ``collection.json`` (dimension, distance, quantization).
- dense vectors with cosine / dot / euclid, storage datatype float32 / float16,
  scalar int8 quantization (plus product / binary, unused), payload indexes
  (``create_field_index``), filters (``Filter``/``FieldCondition``/``MatchValue``/
  ``MatchAny``), exact and approximate ``count``, ``delete_points_by_filter`` (returns
  nothing: we count first, under the collection's write lock), ``scroll`` with a
  point-id offset, ``info`` (points, indexed vectors, segments, payload schema).
- no background optimizer: writes land in appendable segments and ``optimize()``
  builds the HNSW / quantized segments synchronously. So ``optimize`` is the
  "wait until green" step, and a collection is yellow only while it runs.
- no aliases (a server/cluster feature): we keep them ourselves in
  ``<data_dir>/aliases.json`` (written atomically) and in memory.
- queries and updates may run concurrently from several threads; closing a shard
  while a query runs fails that query, so closes wait for in-flight calls.

The Qdrant server adapter (``QdrantServerStore`` in ``indexer.adapters.qdrant_store``)
maps the Protocol one to one onto ``qdrant_client.AsyncQdrantClient`` (gRPC):
``create_collection`` → ``create_collection(vectors_config=VectorParams(size,
distance, datatype=FLOAT16|FLOAT32), quantization_config=ScalarQuantization(INT8))``
then ``create_payload_index`` for ``INDEXED_PAYLOAD_FIELDS``, comparing
``get_collection`` first for idempotency; ``upsert(wait=True)`` in batches;
``delete_points`` → ``count(exact)`` then ``delete(FilterSelector)``; ``search`` →
``query_points``; ``scroll``/``count`` as is; ``collection_info`` → ``get_collection``
(status green/yellow/red straight from the server); ``optimize`` → poll
``get_collection`` until green; ``set_alias`` → ``update_collection_aliases`` with
delete + create in one request (atomic on the server); ``get_alias`` →
``get_aliases``. One contract suite runs against both (the server one through
``qdrant-client``'s local mode).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kit.embedding_models import Quantization
from kit.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)

SYSTEM_PREFIX = "_"
"""Names starting with this are system collections: never created or deleted by
the indexer's normal paths (the design's cleanup rule)."""

INDEXED_PAYLOAD_FIELDS: tuple[str, ...] = ("collection_id", "source_id", "document_id")
"""Keyword payload indexes on every collection: filtered delete and count by these
are the remove-source and validation paths."""

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,190}$")

# No bools: the embedded engine (qdrant-edge-py 0.9) matches True as 1, so a bool
# filter would match nothing there while a server matches it.
FilterValue = str | int | Sequence[str] | Sequence[int]
PayloadFilter = Mapping[str, FilterValue]
"""Payload key → value (all must match); a list value matches any of its items."""


class Distance(StrEnum):
    COSINE = "cosine"
    DOT = "dot"
    EUCLID = "euclid"


class CollectionStatus(StrEnum):
    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"  # a Qdrant server whose optimizer failed on the collection


@dataclass(frozen=True)
class CollectionConfig:
    dimension: int
    distance: Distance = Distance.COSINE
    quantization: Quantization = Quantization.FLOAT32

    def to_dict(self) -> dict[str, Any]:
        return {
            "dimension": self.dimension,
            "distance": self.distance.value,
            "quantization": self.quantization.value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CollectionConfig:
        return cls(
            dimension=int(data["dimension"]),
            distance=Distance(data["distance"]),
            quantization=Quantization(data["quantization"]),
        )


@dataclass(slots=True)
class VectorPoint:
    """One chunk: ``id`` is a UUID string (stable per document chunk), ``payload``
    carries collection_id, source_id, document_id, chunk_index, text, page…"""

    id: str
    vector: np.ndarray
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScoredPoint:
    id: str
    score: float
    payload: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class StoredPoint:
    id: str
    payload: dict[str, Any] | None
    vector: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class ScrollPage:
    points: list[StoredPoint]
    next_offset: str | None
    """Pass back as ``offset`` for the next page; None when this was the last."""


def scroll_page(records: Iterable[Any], next_offset: object, with_vectors: bool) -> ScrollPage:
    """A page from a Qdrant engine's records (``id``, ``payload``, ``vector``), as
    both adapters' scrolls return it."""
    points = [
        StoredPoint(
            str(record.id),
            record.payload,
            np.asarray(record.vector, dtype=np.float32) if with_vectors else None,
        )
        for record in records
    ]
    return ScrollPage(points, None if next_offset is None else str(next_offset))


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    status: CollectionStatus
    points_count: int
    indexed_vectors_count: int
    segments_count: int
    config: CollectionConfig
    payload_indexes: tuple[str, ...]


# Errors: kit domain errors, so a servicer can let them through when they make sense
# to a client; the reasons are the indexer's own (physical collections are internal).


@dataclass
class VectorCollectionNotFound(NotFound):
    reason: str = "VECTOR_COLLECTION_NOT_FOUND"


@dataclass
class VectorCollectionConflict(AlreadyExists):
    """The name is taken by a collection of another config, or by an alias."""

    reason: str = "VECTOR_COLLECTION_CONFLICT"


@dataclass
class InvalidVectorStoreArgument(InvalidArgument):
    reason: str = "INVALID_ARGUMENT"


@dataclass
class SystemCollectionProtected(FailedPrecondition):
    reason: str = "SYSTEM_COLLECTION_PROTECTED"


@dataclass
class VectorStoreUnavailable(Unavailable):
    """A Qdrant server that cannot be reached or did not answer in time: transient."""

    reason: str = "BACKEND_UNAVAILABLE"
    metadata: dict[str, str] = field(default_factory=lambda: {"backend": "qdrant"})


def collection_config_for(
    name: str, dimension: int, distance: Distance, quantization: Quantization, *, system: bool
) -> CollectionConfig:
    """The checked config of a collection to create, as every adapter takes it."""
    validate_name(name, allow_system=system)
    if not isinstance(dimension, int) or dimension <= 0:
        raise InvalidVectorStoreArgument(
            f"dimension must be a positive integer, got {dimension!r}",
            metadata={"field": "dimension"},
        )
    return CollectionConfig(dimension, Distance(distance), Quantization(quantization))


def validate_name(name: str, *, what: str = "collection", allow_system: bool = False) -> str:
    """Refuse names that could escape the data dir or take a reserved prefix."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidVectorStoreArgument(
            f"invalid {what} name {name!r}: use 1-191 of A-Z a-z 0-9 _ -",
            metadata={"field": what, "name": str(name)[:200]},
        )
    if name.startswith(SYSTEM_PREFIX) and not allow_system:
        raise InvalidVectorStoreArgument(
            f"{what} name {name!r} is reserved: {SYSTEM_PREFIX!r}-prefixed names are system",
            metadata={"field": what, "name": name},
        )
    return name


@runtime_checkable
class VectorStore(Protocol):
    """Collections of vectors, addressed by name or alias wherever a name goes
    (except the alias targets and collection management calls, which take names)."""

    async def create_collection(
        self,
        name: str,
        dimension: int,
        distance: Distance = Distance.COSINE,
        quantization: Quantization = Quantization.FLOAT32,
        *,
        system: bool = False,
    ) -> bool:
        """Create it; True if created, False if it already existed with this config.
        Another config, or an alias of that name → ``VectorCollectionConflict``."""
        ...

    async def delete_collection(self, name: str, *, system: bool = False) -> bool:
        """Delete it and the aliases that point at it; False if it did not exist."""
        ...

    async def collection_exists(self, name: str) -> bool: ...

    async def list_collections(self) -> list[str]: ...

    async def upsert(self, name: str, points: Sequence[VectorPoint]) -> int:
        """Write the points (insert or replace by id); returns how many."""
        ...

    async def delete_points(self, name: str, filter: PayloadFilter) -> int:
        """Delete every point matching ``filter`` (must not be empty); returns how many."""
        ...

    async def count(
        self, name: str, filter: PayloadFilter | None = None, exact: bool = True
    ) -> int: ...

    async def search(
        self,
        name: str,
        vector: np.ndarray | Sequence[float],
        top_k: int,
        filter: PayloadFilter | None = None,
        score_threshold: float | None = None,
        with_payload: bool = True,
    ) -> list[ScoredPoint]:
        """Nearest points, best first."""
        ...

    async def scroll(
        self,
        name: str,
        filter: PayloadFilter | None = None,
        limit: int = 256,
        offset: str | None = None,
        with_vectors: bool = False,
    ) -> ScrollPage: ...

    async def collection_info(self, name: str) -> CollectionInfo: ...

    async def optimize(self, name: str) -> CollectionInfo:
        """Build indexes / quantized segments and return once the collection is green."""
        ...

    async def set_alias(self, alias: str, collection: str) -> None:
        """Point ``alias`` at ``collection`` (creating or moving it) atomically: once
        this returns, every call through the alias reaches ``collection``."""
        ...

    async def delete_alias(self, alias: str) -> bool: ...

    async def get_alias(self, alias: str) -> str | None: ...

    async def list_aliases(self) -> dict[str, str]: ...

    async def resolve(self, name_or_alias: str) -> str:
        """The collection name behind an alias, or the name itself."""
        ...

    async def close(self) -> None: ...
