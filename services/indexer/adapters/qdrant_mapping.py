"""Our vector-store values in qdrant-client's models and back: collection config
and info, payload indexes, points, filters, alias moves, and the server address.
No I/O here. Also where a cluster puts a new collection (``Placement``).

A collection's ``CollectionConfig`` also goes into its Qdrant ``metadata`` at
creation and is read back from there first: qdrant-client's local mode keeps the
vector size, distance and datatype but drops the quantization config, and the
metadata says the same on a server and in local mode. A collection made by
someone else (no metadata) has its config derived from its vector parameters.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from qdrant_client import models

from indexer.adapters.vector_store import (
    INDEXED_PAYLOAD_FIELDS,
    CollectionConfig,
    CollectionInfo,
    CollectionStatus,
    Distance,
    InvalidVectorStoreArgument,
    PayloadFilter,
    Quantization,
    VectorCollectionConflict,
    VectorPoint,
)

METADATA_KEY = "vectorops"
"""Key of our config record in a collection's Qdrant metadata."""

DEFAULT_GRPC_PORT = 6334

PAYLOAD_INDEXES: dict[str, models.PayloadSchemaType] = {
    **{name: models.PayloadSchemaType.KEYWORD for name in INDEXED_PAYLOAD_FIELDS},
    # Stale-chunk deletion filters on a document's chunk indexes.
    "chunk_index": models.PayloadSchemaType.INTEGER,
}
"""Payload indexes made with every collection (a server filters on them without a
full scan)."""

_DISTANCES = {
    Distance.COSINE: models.Distance.COSINE,
    Distance.DOT: models.Distance.DOT,
    Distance.EUCLID: models.Distance.EUCLID,
}
_OUR_DISTANCES = {theirs: ours for ours, theirs in _DISTANCES.items()}

_STATUSES = {
    models.CollectionStatus.GREEN: CollectionStatus.GREEN,
    models.CollectionStatus.YELLOW: CollectionStatus.YELLOW,
    # Grey: optimisations are pending but not started; not green either.
    models.CollectionStatus.GREY: CollectionStatus.YELLOW,
    models.CollectionStatus.RED: CollectionStatus.RED,
}


def vector_params(config: CollectionConfig) -> models.VectorParams:
    datatype = (
        models.Datatype.FLOAT16
        if config.quantization is Quantization.FLOAT16
        else models.Datatype.FLOAT32
    )
    return models.VectorParams(
        size=config.dimension, distance=_DISTANCES[config.distance], datatype=datatype
    )


def quantization_config(config: CollectionConfig) -> models.ScalarQuantization | None:
    """int8 = scalar quantization over float32 originals, as the embedded engine does."""
    if config.quantization is not Quantization.INT8:
        return None
    return models.ScalarQuantization(
        scalar=models.ScalarQuantizationConfig(
            type=models.ScalarType.INT8, quantile=0.99, always_ram=True
        )
    )


@dataclass(frozen=True)
class Placement:
    """How a cluster spreads a new collection: shards, copies of each shard, and the
    copies that must apply a write before it is acknowledged. ``None`` leaves the
    server's default."""

    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None

    def __post_init__(self) -> None:
        copies = self.replication_factor or 1
        if self.write_consistency_factor is not None and self.write_consistency_factor > copies:
            # Qdrant would accept it and then refuse every write.
            raise ValueError(
                f"write consistency {self.write_consistency_factor} exceeds "
                f"the {copies} copies of each shard"
            )

    def create_options(self) -> dict[str, int]:
        """The ``create_collection`` arguments this placement sets."""
        options = {
            "shard_number": self.shard_number,
            "replication_factor": self.replication_factor,
            "write_consistency_factor": self.write_consistency_factor,
        }
        return {key: value for key, value in options.items() if value is not None}


def config_metadata(config: CollectionConfig) -> dict[str, Any]:
    return {METADATA_KEY: config.to_dict()}


def config_of(name: str, info: models.CollectionInfo) -> CollectionConfig:
    """The collection's config: our metadata record, else its vector parameters."""
    record = (info.config.metadata or {}).get(METADATA_KEY)
    if isinstance(record, Mapping):
        return CollectionConfig.from_dict(record)
    params = info.config.params.vectors
    if not isinstance(params, models.VectorParams) or params.distance not in _OUR_DISTANCES:
        raise VectorCollectionConflict(
            f"vector collection {name!r} is not laid out as one unnamed dense vector",
            metadata={"collection": name},
        )
    if params.datatype == models.Datatype.FLOAT16:
        quantization = Quantization.FLOAT16
    elif _is_int8(info.config.quantization_config or params.quantization_config):
        quantization = Quantization.INT8
    else:
        quantization = Quantization.FLOAT32
    return CollectionConfig(params.size, _OUR_DISTANCES[params.distance], quantization)


def _is_int8(quantization: Any) -> bool:
    return (
        isinstance(quantization, models.ScalarQuantization)
        and quantization.scalar.type == models.ScalarType.INT8
    )


def status_of(info: models.CollectionInfo) -> CollectionStatus:
    return _STATUSES[models.CollectionStatus(info.status)]


def collection_info_of(name: str, info: models.CollectionInfo) -> CollectionInfo:
    return CollectionInfo(
        name=name,
        status=status_of(info),
        points_count=info.points_count or 0,
        indexed_vectors_count=info.indexed_vectors_count or 0,
        segments_count=info.segments_count,
        config=config_of(name, info),
        payload_indexes=tuple(sorted(info.payload_schema or {})),
    )


def point_id(point: VectorPoint) -> str:
    try:
        return str(uuid.UUID(point.id))
    except (ValueError, TypeError, AttributeError):
        raise InvalidVectorStoreArgument(
            f"point id {point.id!r} is not a UUID", metadata={"field": "id"}
        ) from None


def vector_list(vector: np.ndarray | Sequence[float]) -> list[float]:
    """One flat float32 vector. Its size against the collection's is the engine's
    check (one round trip fewer per call), translated to ``InvalidVectorStoreArgument``."""
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or array.shape[0] == 0:
        raise InvalidVectorStoreArgument(
            f"a vector must be flat and non-empty, not of shape {array.shape}",
            metadata={"field": "vector"},
        )
    return array.tolist()


def alias_operations(
    alias: str, collection: str | None, *, replace: bool
) -> list[models.AliasOperations]:
    """One request's alias changes: drop ``alias`` if ``replace``, then point it at
    ``collection`` unless that is None."""
    operations: list[models.AliasOperations] = []
    if replace:
        operations.append(
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))
        )
    if collection is not None:
        operations.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)
            )
        )
    return operations


def qdrant_filter(filter: PayloadFilter | None) -> models.Filter | None:
    """All keys must match; a list value matches any of its items (as the edge store)."""
    if not filter:
        return None
    conditions: list[models.Condition] = []
    for key, value in filter.items():
        if isinstance(value, (list, tuple)):
            match: models.Match = models.MatchAny(any=list(value))
        elif isinstance(value, (str, int, bool)):
            match = models.MatchValue(value=value)
        else:
            raise InvalidVectorStoreArgument(
                f"filter value for {key!r} must be str, int, bool or a list of them",
                metadata={"field": f"filter.{key}"},
            )
        conditions.append(models.FieldCondition(key=key, match=match))
    return models.Filter(must=conditions)


@dataclass(frozen=True)
class GrpcEndpoint:
    host: str
    port: int
    https: bool


def grpc_endpoint(url: str) -> GrpcEndpoint:
    """``http://qdrant:6334`` (or ``https://…``, or a bare ``host[:port]``) → where the
    server's gRPC API listens; the port defaults to Qdrant's gRPC port 6334."""
    parsed = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if parsed.scheme not in ("http", "https") or not parsed.hostname or port == -1:
        raise ValueError(f"the Qdrant URL {url!r} is not http(s)://host[:grpc port]")
    if parsed.path.strip("/") or parsed.query:
        raise ValueError(f"the Qdrant URL {url!r} has a path: gRPC takes none")
    return GrpcEndpoint(parsed.hostname, port or DEFAULT_GRPC_PORT, parsed.scheme == "https")
