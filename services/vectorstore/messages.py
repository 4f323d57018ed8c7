"""Qdrant's gRPC messages (``qdrant_client.grpc``) and the vector store's values,
both ways. No I/O here.

Requests are read as ``QdrantServerStore`` (through ``qdrant_mapping``) writes
them: one unnamed dense vector per collection, UUID point ids, filters that are a
``must`` of field matches (a value, or any of a list), alias moves. A field set
outside that subset is refused (``Unsupported``), never silently dropped.
Responses carry what a server's would, with Qdrant's defaults where the engine
has no say (HNSW and WAL settings), so qdrant-client reads them as a server's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from google.protobuf.message import Message
from qdrant_client import grpc as q
from qdrant_client.conversions.conversion import GrpcToRest, RestToGrpc

from indexer.adapters.vector_store import (
    CollectionInfo,
    Distance,
    PayloadFilter,
    Quantization,
    ScoredPoint,
    ScrollPage,
    VectorPoint,
)
from vectorstore.errors import Unsupported

DEFAULT_INDEXING_THRESHOLD_KB = 10_000
"""The engine's and a Qdrant server's default."""

DEFAULT_LIMIT = 10
"""Qdrant's limit for a query or scroll that names none."""

_DISTANCES = {
    q.Distance.Cosine: Distance.COSINE,
    q.Distance.Dot: Distance.DOT,
    q.Distance.Euclid: Distance.EUCLID,
}
_QDRANT_DISTANCES = {ours: theirs for theirs, ours in _DISTANCES.items()}

_FIELD_TYPES = {
    q.FieldType.FieldTypeKeyword: "keyword",
    q.FieldType.FieldTypeInteger: "integer",
    q.FieldType.FieldTypeFloat: "float",
    q.FieldType.FieldTypeBool: "bool",
    q.FieldType.FieldTypeUuid: "uuid",
    q.FieldType.FieldTypeDatetime: "datetime",
    q.FieldType.FieldTypeText: "text",
    q.FieldType.FieldTypeGeo: "geo",
}
_SCHEMA_TYPES = {
    "keyword": q.PayloadSchemaType.Keyword,
    "integer": q.PayloadSchemaType.Integer,
    "float": q.PayloadSchemaType.Float,
    "bool": q.PayloadSchemaType.Bool,
    "uuid": q.PayloadSchemaType.Uuid,
    "datetime": q.PayloadSchemaType.Datetime,
    "text": q.PayloadSchemaType.Text,
    "geo": q.PayloadSchemaType.Geo,
}

# The engine's scalar quantization (``edge_store._edge_config``): reported as is.
_INT8 = q.QuantizationConfig(
    scalar=q.ScalarQuantization(type=q.QuantizationType.Int8, quantile=0.99, always_ram=True)
)


class Health(StrEnum):
    """A collection's status as a Qdrant server reports it."""

    GREEN = "green"  # nothing to optimise
    YELLOW = "yellow"  # an optimisation runs
    GREY = "grey"  # one is due, and waits for an update to start it
    RED = "red"  # the last one failed


_STATUSES = {
    Health.GREEN: q.CollectionStatus.Green,
    Health.YELLOW: q.CollectionStatus.Yellow,
    Health.GREY: q.CollectionStatus.Grey,
    Health.RED: q.CollectionStatus.Red,
}


@dataclass(frozen=True)
class CollectionSpec:
    """A create request, as the engine takes it."""

    name: str
    dimension: int
    distance: Distance
    quantization: Quantization
    indexing_threshold_kb: int | None
    metadata: dict[str, Any]


@dataclass(frozen=True)
class CollectionState:
    """What a collection-info answer says: the engine's figures plus ours."""

    info: CollectionInfo
    payload_schema: Mapping[str, tuple[str, int]]
    indexing_threshold_kb: int | None
    metadata: Mapping[str, Any]
    health: Health
    optimizer_error: str | None = None


@dataclass(frozen=True)
class AliasChange:
    """One action of a ``ChangeAliases`` request, in its order."""

    kind: str  # "create", "delete" or "rename"
    alias: str
    collection: str | None = None  # create: the target
    new_alias: str | None = None  # rename: the new name


# -- requests ---------------------------------------------------------------------


def refuse_other_fields(message: Message, allowed: Iterable[str]) -> None:
    """Refuse ``message`` if it sets a field outside ``allowed``."""
    allowed = set(allowed)
    extra = sorted(field.name for field, _ in message.ListFields() if field.name not in allowed)
    if extra:
        raise Unsupported(f"{type(message).__name__} with {', '.join(extra)}")


def _single(value: int, what: str) -> None:
    if value > 1:
        raise Unsupported(f"{what} {value}: this server keeps one copy of one shard")


def collection_spec(request: q.CreateCollection) -> CollectionSpec:
    refuse_other_fields(
        request,
        (
            "collection_name",
            "vectors_config",
            "quantization_config",
            "optimizers_config",
            "metadata",
            "timeout",
            "shard_number",
            "replication_factor",
            "write_consistency_factor",
        ),
    )
    _single(request.shard_number, "shard_number")
    _single(request.replication_factor, "replication_factor")
    _single(request.write_consistency_factor, "write_consistency_factor")
    if request.vectors_config.WhichOneof("config") != "params":
        raise Unsupported("named vectors: one unnamed dense vector per collection")
    params = request.vectors_config.params
    refuse_other_fields(params, ("size", "distance", "datatype"))
    if params.distance not in _DISTANCES:
        raise Unsupported(f"distance {q.Distance.Name(params.distance)}")
    if params.datatype not in (q.Datatype.Default, q.Datatype.Float32, q.Datatype.Float16):
        raise Unsupported(f"datatype {q.Datatype.Name(params.datatype)}")
    quantization = (
        Quantization.FLOAT16 if params.datatype == q.Datatype.Float16 else Quantization.FLOAT32
    )
    if request.HasField("quantization_config"):
        if not _is_scalar_int8(request.quantization_config):
            raise Unsupported("quantization other than scalar int8")
        if quantization is Quantization.FLOAT16:
            raise Unsupported("int8 quantization over float16 vectors")
        quantization = Quantization.INT8
    threshold = None
    if request.HasField("optimizers_config"):
        refuse_other_fields(request.optimizers_config, ("indexing_threshold",))
        if request.optimizers_config.HasField("indexing_threshold"):
            threshold = request.optimizers_config.indexing_threshold
    return CollectionSpec(
        name=request.collection_name,
        dimension=params.size,
        distance=_DISTANCES[params.distance],
        quantization=quantization,
        indexing_threshold_kb=threshold,
        metadata=GrpcToRest.convert_payload(request.metadata),
    )


def _is_scalar_int8(config: q.QuantizationConfig) -> bool:
    return (
        config.WhichOneof("quantization") == "scalar"
        and config.scalar.type == q.QuantizationType.Int8
    )


def check_update(request: q.UpdateCollection) -> None:
    """Only the nudge a client sends to start due optimisations (an empty optimizer
    diff) is served; the collection's settings do not change here."""
    refuse_other_fields(request, ("collection_name", "optimizers_config", "timeout"))
    if request.HasField("optimizers_config"):
        refuse_other_fields(request.optimizers_config, ())


def alias_changes(request: q.ChangeAliases) -> list[AliasChange]:
    changes = []
    for action in request.actions:
        kind = action.WhichOneof("action")
        if kind == "create_alias":
            create = action.create_alias
            changes.append(AliasChange("create", create.alias_name, create.collection_name))
        elif kind == "delete_alias":
            changes.append(AliasChange("delete", action.delete_alias.alias_name))
        elif kind == "rename_alias":
            rename = action.rename_alias
            changes.append(
                AliasChange("rename", rename.old_alias_name, new_alias=rename.new_alias_name)
            )
        else:
            raise Unsupported(f"alias action {kind}")
    return changes


def payload_filter(message: q.Filter | None) -> PayloadFilter | None:
    """A ``must`` of field matches → {key: value or list}; anything else is refused."""
    if message is None:
        return None
    refuse_other_fields(message, ("must",))
    result: dict[str, Any] = {}
    for condition in message.must:
        if condition.WhichOneof("condition_one_of") != "field":
            raise Unsupported(f"filter condition {condition.WhichOneof('condition_one_of')}")
        field = condition.field
        refuse_other_fields(field, ("key", "match"))
        if field.key in result:
            raise Unsupported(f"two conditions on {field.key!r}")
        result[field.key] = _match_value(field.match)
    return result


def _match_value(match: q.Match) -> Any:
    kind = match.WhichOneof("match_value")
    if kind in ("keyword", "integer", "boolean"):
        return getattr(match, kind)
    if kind == "keywords":
        return list(match.keywords.strings)
    if kind == "integers":
        return list(match.integers.integers)
    raise Unsupported(f"match {kind}")


def point_id(message: q.PointId) -> str:
    if message.WhichOneof("point_id_options") != "uuid":
        raise Unsupported("integer point ids: the engine's collections take UUIDs")
    return message.uuid


def vector_points(points: Sequence[q.PointStruct]) -> list[VectorPoint]:
    return [
        VectorPoint(
            point_id(point.id),
            np.asarray(_dense(point.vectors), dtype=np.float32),
            GrpcToRest.convert_payload(point.payload),
        )
        for point in points
    ]


def _dense(vectors: q.Vectors) -> Sequence[float]:
    if vectors.WhichOneof("vectors_options") != "vector":
        raise Unsupported("named vectors")
    vector = vectors.vector
    kind = vector.WhichOneof("vector")
    if kind == "dense":
        return vector.dense.data
    if kind is None and not vector.HasField("indices") and not vector.vectors_count:
        return vector.data  # the older encoding of a dense vector
    raise Unsupported(f"{kind or 'sparse or multi'} vectors")


def query_vector(request: q.QueryPoints) -> list[float]:
    if request.query.WhichOneof("variant") != "nearest":
        raise Unsupported(f"query {request.query.WhichOneof('variant')}")
    nearest = request.query.nearest
    if nearest.WhichOneof("variant") != "dense":
        raise Unsupported(f"nearest to {nearest.WhichOneof('variant')}")
    return list(nearest.dense.data)


def with_payload(selector: q.WithPayloadSelector, default: bool) -> bool:
    kind = selector.WhichOneof("selector_options")
    if kind is None:
        return default
    if kind != "enable":
        raise Unsupported(f"payload {kind} selectors")
    return selector.enable


def with_vectors(selector: q.WithVectorsSelector) -> bool:
    kind = selector.WhichOneof("selector_options")
    if kind not in (None, "enable"):
        raise Unsupported(f"vector {kind} selectors")
    return kind is not None and selector.enable


def field_kind(request: q.CreateFieldIndexCollection) -> str:
    refuse_other_fields(
        request, ("collection_name", "wait", "field_name", "field_type", "ordering", "timeout")
    )
    return _FIELD_TYPES[request.field_type]


# -- responses --------------------------------------------------------------------


class Clock:
    """Seconds since it was made: the ``time`` every Qdrant answer carries."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self._start


def _point_id(value: str) -> q.PointId:
    return q.PointId(uuid=str(uuid.UUID(value)))


def scored_points(hits: Iterable[ScoredPoint]) -> list[q.ScoredPoint]:
    return [
        q.ScoredPoint(
            id=_point_id(hit.id),
            score=hit.score,
            payload=RestToGrpc.convert_payload(hit.payload or {}),
            version=0,
        )
        for hit in hits
    ]


def scroll_response(page: ScrollPage, payload: bool, elapsed: float) -> q.ScrollResponse:
    points = [
        q.RetrievedPoint(
            id=_point_id(point.id),
            payload=RestToGrpc.convert_payload(point.payload or {}) if payload else None,
            vectors=(
                q.VectorsOutput(
                    vector=q.VectorOutput(dense=q.DenseVector(data=point.vector.tolist()))
                )
                if point.vector is not None
                else None
            ),
        )
        for point in page.points
    ]
    response = q.ScrollResponse(result=points, time=elapsed)
    if page.next_offset is not None:
        response.next_page_offset.CopyFrom(_point_id(page.next_offset))
    return response


def update_result(operation_id: int) -> q.UpdateResult:
    return q.UpdateResult(operation_id=operation_id, status=q.UpdateStatus.Completed)


def alias_descriptions(aliases: Mapping[str, str]) -> list[q.AliasDescription]:
    return [
        q.AliasDescription(alias_name=alias, collection_name=collection)
        for alias, collection in sorted(aliases.items())
    ]


def collection_info(state: CollectionState) -> q.CollectionInfo:
    info = state.info
    config = info.config
    params = q.VectorParams(
        size=config.dimension,
        distance=_QDRANT_DISTANCES[config.distance],
        datatype=(
            q.Datatype.Float16
            if config.quantization is Quantization.FLOAT16
            else q.Datatype.Float32
        ),
    )
    threshold = state.indexing_threshold_kb
    return q.CollectionInfo(
        status=_STATUSES[state.health],
        optimizer_status=(
            q.OptimizerStatus(ok=False, error=state.optimizer_error)
            if state.optimizer_error
            else q.OptimizerStatus(ok=True)
        ),
        segments_count=info.segments_count,
        points_count=info.points_count,
        indexed_vectors_count=info.indexed_vectors_count,
        payload_schema={
            name: q.PayloadSchemaInfo(data_type=_SCHEMA_TYPES[kind], points=points)
            for name, (kind, points) in state.payload_schema.items()
            if kind in _SCHEMA_TYPES
        },
        config=q.CollectionConfig(
            params=q.CollectionParams(
                vectors_config=q.VectorsConfig(params=params),
                shard_number=1,
                replication_factor=1,
                write_consistency_factor=1,
                on_disk_payload=False,
            ),
            # Qdrant's defaults: the engine builds with them and takes no others here.
            hnsw_config=q.HnswConfigDiff(m=16, ef_construct=100, full_scan_threshold=10_000),
            optimizer_config=q.OptimizersConfigDiff(
                deleted_threshold=0.2,
                vacuum_min_vector_number=1000,
                default_segment_number=0,
                flush_interval_sec=5,
                indexing_threshold=(
                    DEFAULT_INDEXING_THRESHOLD_KB if threshold is None else threshold
                ),
            ),
            wal_config=q.WalConfigDiff(wal_capacity_mb=32, wal_segments_ahead=0),
            quantization_config=_INT8 if config.quantization is Quantization.INT8 else None,
            metadata=RestToGrpc.convert_payload(dict(state.metadata)),
        ),
    )


def optimisation_due(info: CollectionInfo, indexing_threshold_kb: int | None) -> bool:
    """Whether the engine would build an index now: vectors outside one take more
    than the indexing threshold (a server's rule, per segment; here for them all)."""
    unindexed = info.points_count - info.indexed_vectors_count
    width = 2 if info.config.quantization is Quantization.FLOAT16 else 4
    threshold = (
        DEFAULT_INDEXING_THRESHOLD_KB if indexing_threshold_kb is None else indexing_threshold_kb
    )
    return unindexed > 0 and unindexed * info.config.dimension * width >= threshold * 1024
