"""The Qdrant server store's pure parts: config, status and filters in qdrant-client's
models, the server address, and the server's gRPC errors as ours. These are the
paths local mode (the contract suite's stand-in for a server) cannot show: a
server's int8 quantization config, grey and red statuses, gRPC status codes."""

from __future__ import annotations

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata
from qdrant_client import models

from indexer.adapters.qdrant_errors import translate, translated
from indexer.adapters.qdrant_mapping import (
    GrpcEndpoint,
    config_metadata,
    config_of,
    grpc_endpoint,
    qdrant_filter,
    quantization_config,
    status_of,
    vector_params,
)
from indexer.adapters.vector_store import (
    CollectionConfig,
    CollectionStatus,
    Distance,
    InvalidVectorStoreArgument,
    Quantization,
    VectorCollectionConflict,
    VectorCollectionNotFound,
    VectorStoreUnavailable,
)


def _info(
    vectors: object,
    *,
    quantization: object = None,
    metadata: dict | None = None,
    status: models.CollectionStatus = models.CollectionStatus.GREEN,
) -> models.CollectionInfo:
    return models.CollectionInfo(
        status=status,
        optimizer_status=models.OptimizersStatusOneOf.OK,
        points_count=0,
        segments_count=1,
        payload_schema={},
        config=models.CollectionConfig(
            params=models.CollectionParams(vectors=vectors),
            hnsw_config=models.HnswConfig(m=16, ef_construct=100, full_scan_threshold=10000),
            optimizer_config=models.OptimizersConfig(
                deleted_threshold=0.2,
                vacuum_min_vector_number=1000,
                default_segment_number=0,
                flush_interval_sec=5,
            ),
            wal_config=models.WalConfig(wal_capacity_mb=32, wal_segments_ahead=0),
            quantization_config=quantization,
            metadata=metadata,
        ),
    )


@pytest.mark.parametrize("quantization", list(Quantization))
@pytest.mark.parametrize("distance", list(Distance))
def test_a_config_survives_the_round_trip_through_server_params(
    quantization: Quantization, distance: Distance
) -> None:
    config = CollectionConfig(384, distance, quantization)
    # What a server reports back: the params and quantization it was created with,
    # without our metadata record, must give the same config.
    info = _info(vector_params(config), quantization=quantization_config(config))
    assert config_of("c", info) == config
    with_record = _info(vector_params(config), metadata=config_metadata(config))
    assert config_of("c", with_record) == config


def test_the_wire_shapes_of_each_quantization() -> None:
    float16 = CollectionConfig(8, Distance.COSINE, Quantization.FLOAT16)
    assert vector_params(float16).datatype == models.Datatype.FLOAT16
    assert quantization_config(float16) is None
    int8 = CollectionConfig(8, Distance.COSINE, Quantization.INT8)
    assert vector_params(int8).datatype == models.Datatype.FLOAT32
    scalar = quantization_config(int8)
    assert isinstance(scalar, models.ScalarQuantization)
    assert scalar.scalar.type == models.ScalarType.INT8 and scalar.scalar.always_ram


def test_the_metadata_record_wins_over_what_local_mode_drops() -> None:
    config = CollectionConfig(8, Distance.COSINE, Quantization.INT8)
    # Local mode keeps no quantization config; the record still says int8.
    info = _info(vector_params(config), metadata=config_metadata(config))
    assert config_of("c", info).quantization is Quantization.INT8
    assert config_of("c", _info(vector_params(config))).quantization is Quantization.FLOAT32


def test_a_collection_of_named_vectors_is_not_ours() -> None:
    named = {"text": models.VectorParams(size=8, distance=models.Distance.COSINE)}
    with pytest.raises(VectorCollectionConflict):
        config_of("c", _info(named))


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        (models.CollectionStatus.GREEN, CollectionStatus.GREEN),
        (models.CollectionStatus.YELLOW, CollectionStatus.YELLOW),
        (models.CollectionStatus.GREY, CollectionStatus.YELLOW),
        (models.CollectionStatus.RED, CollectionStatus.RED),
    ],
)
def test_statuses(theirs: models.CollectionStatus, ours: CollectionStatus) -> None:
    config = CollectionConfig(8)
    assert status_of(_info(vector_params(config), status=theirs)) is ours


def test_filters_match_all_keys_and_any_of_a_list() -> None:
    assert qdrant_filter(None) is None and qdrant_filter({}) is None
    built = qdrant_filter({"document_id": "d1", "chunk_index": [3, 4], "source_id": ("s",)})
    assert built is not None
    by_key = {condition.key: condition.match for condition in built.must}
    assert by_key["document_id"] == models.MatchValue(value="d1")
    assert by_key["chunk_index"] == models.MatchAny(any=[3, 4])
    assert by_key["source_id"] == models.MatchAny(any=["s"])
    with pytest.raises(InvalidVectorStoreArgument):
        qdrant_filter({"page": 1.5})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("http://qdrant:6334", GrpcEndpoint("qdrant", 6334, False)),
        ("https://q.example.com", GrpcEndpoint("q.example.com", 6334, True)),
        ("qdrant:7000", GrpcEndpoint("qdrant", 7000, False)),
        ("http://10.0.0.5:6334/", GrpcEndpoint("10.0.0.5", 6334, False)),
    ],
)
def test_grpc_endpoints(url: str, endpoint: GrpcEndpoint) -> None:
    assert grpc_endpoint(url) == endpoint


@pytest.mark.parametrize(
    "url", ["ftp://qdrant:6334", "http://", "http://qdrant:port", "http://qdrant:6334/prefix"]
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        grpc_endpoint(url)


def _rpc_error(code: grpc.StatusCode, details: str) -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(), details=details)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            _rpc_error(grpc.StatusCode.NOT_FOUND, "Not found: Collection `c` doesn't exist!"),
            VectorCollectionNotFound,
        ),
        (_rpc_error(grpc.StatusCode.ALREADY_EXISTS, "exists"), VectorCollectionConflict),
        (
            _rpc_error(
                grpc.StatusCode.INVALID_ARGUMENT,
                "Wrong input: Collection `c` already exists!",
            ),
            VectorCollectionConflict,
        ),
        (
            _rpc_error(
                grpc.StatusCode.INVALID_ARGUMENT,
                "Wrong input: Vector dimension error: expected dim: 4, got 3",
            ),
            InvalidVectorStoreArgument,
        ),
        (_rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused"), VectorStoreUnavailable),
        (_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "slow"), VectorStoreUnavailable),
        # Local mode's refusals.
        (ValueError("Collection c not found"), VectorCollectionNotFound),
        (ValueError("Collection c already exists"), VectorCollectionConflict),
        (ValueError("shapes (3,4) and (3,) not aligned"), InvalidVectorStoreArgument),
    ],
)
def test_errors_become_ours(error: Exception, expected: type[Exception]) -> None:
    ours = translate(error, "c")
    assert isinstance(ours, expected)
    assert ours.metadata.get("collection", "c") == "c"
    with pytest.raises(expected) as raised, translated("c"):
        raise error
    assert raised.value.__cause__ is error


def test_other_failures_pass_through() -> None:
    internal = _rpc_error(grpc.StatusCode.INTERNAL, "boom")
    assert translate(internal, "c") is None
    assert translate(RuntimeError("closed"), "c") is None
    with pytest.raises(AioRpcError), translated("c"):
        raise internal


def test_unavailable_names_the_backend() -> None:
    error = translate(_rpc_error(grpc.StatusCode.UNAVAILABLE, "down"), "c")
    assert isinstance(error, VectorStoreUnavailable)
    assert error.reason == "BACKEND_UNAVAILABLE" and error.metadata == {"backend": "qdrant"}
