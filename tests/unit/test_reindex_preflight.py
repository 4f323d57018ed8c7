"""What a REINDEX preflight decides before it writes anything: the command's
target and thresholds, the target config checked against the model registry,
the staging copy's estimate, the staging base name, and what each answer of
``ResourceService.Reserve`` means."""

from __future__ import annotations

import uuid

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

from indexer.adapters.resources_client import UNAVAILABLE_NOTE, Reservation, ReservationStatus
from indexer.adapters.resources_client import _refusal as refusal
from indexer.commands import decode
from indexer.domain.operation_plan import error_type_for
from indexer.domain.reindex_plan import estimate_staging, physical_base
from indexer.domain.validation import Thresholds
from indexer.reprocessing import staging_settings
from kit.embedding_models import ModelRegistry, Quantization
from kit.errors import DomainError, NotFound, ResourceExhausted, Unavailable
from kit.events import new_envelope
from kit.operation_protocol import ErrorType, OperationType
from vectorops.common.v1 import config_pb2, operation_pb2
from vectorops.events.v1 import commands_pb2

HASH = "vectorops/hash-bow-384"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def config(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "embedding_model": HASH,
        "dimension": 384,
        "quantization": "float32",
        "chunk_size": 24,
        "chunk_overlap": 4,
    }
    return {**base, **changes}


def test_a_valid_target_gives_the_settings_reprocessing_uses() -> None:
    settings = staging_settings(
        config(embedding_model=MINILM, quantization="int8", chunk_size=200, instruction=""),
        ModelRegistry(),
    )
    assert (settings.model, settings.dimension) == (MINILM, 384)
    assert settings.quantization is Quantization.INT8
    assert (settings.chunk_size, settings.chunk_overlap, settings.instruction) == (200, 4, "")
    assert settings.tokenizer.max_chunk_tokens == 254


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"embedding_model": "no/such-model"}, "UNKNOWN_MODEL", None),
        ({"dimension": 768}, "DIMENSION_MISMATCH", "dimension"),
        ({"quantization": "int4"}, "INVALID_CONFIG", "quantization"),
        ({"chunk_size": 12, "chunk_overlap": 12}, "INVALID_CONFIG", "chunk_overlap"),
        ({"embedding_model": MINILM, "chunk_size": 300}, "INVALID_CONFIG", "chunk_size"),
    ],
)
def test_an_invalid_target_is_refused_before_anything_is_written(
    changes: dict[str, object], reason: str, field: str | None
) -> None:
    with pytest.raises(DomainError) as refused:
        staging_settings(config(**changes), ModelRegistry())
    assert refused.value.reason == reason
    if field is not None:
        assert field in {v.field for v in refused.value.field_violations}


def test_an_unknown_model_fails_the_operation_as_unknown_model() -> None:
    with pytest.raises(NotFound) as refused:
        staging_settings(config(embedding_model="nope"), ModelRegistry())
    assert error_type_for(refused.value.reason) is ErrorType.UNKNOWN_MODEL
    assert error_type_for("VALIDATION_FAILED") is ErrorType.VALIDATION_FAILED


def test_the_estimate_scales_live_chunks_by_the_chunk_stride() -> None:
    halved = estimate_staging(
        10, 100, 5000, config(), config(chunk_size=12, chunk_overlap=2)
    )  # stride 20 → 10
    assert (halved.vectors, halved.bytes) == (200, 5000)
    doubled = estimate_staging(10, 100, 5000, config(), config(chunk_size=44))  # 20 → 40
    assert doubled.vectors == 50
    # Never fewer than one per document, even when chunks grow a lot.
    assert estimate_staging(10, 12, 50, config(), config(chunk_size=4000)).vectors == 10
    assert estimate_staging(3, 0, 0, config(), config()).vectors == 3


def test_the_staging_base_drops_an_earlier_staging_suffix() -> None:
    assert physical_base("vo_abc_g1") == "vo_abc_g1"
    assert physical_base("vo_abc_g1_staging_20260101T000000Z") == "vo_abc_g1"


def rpc_error(code: grpc.StatusCode, details: str = "") -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(), details=details)


def test_a_refused_reservation_is_quota_exceeded() -> None:
    error = refusal(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "max_vectors"), "alice")
    assert isinstance(error, ResourceExhausted)
    assert error.reason == "QUOTA_EXCEEDED"
    assert error.metadata["owner_id"] == "alice"
    assert error_type_for(error.reason) is ErrorType.QUOTA_EXCEEDED


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_an_unreachable_resources_service_is_retried(code: grpc.StatusCode) -> None:
    error = refusal(rpc_error(code), "alice")
    assert isinstance(error, Unavailable)
    assert error.reason == "BACKEND_UNAVAILABLE"  # transient: the command comes back


def test_other_answers_are_a_handler_error() -> None:
    error = refusal(rpc_error(grpc.StatusCode.PERMISSION_DENIED, "no"), "alice")
    assert not isinstance(error, DomainError)


def test_the_checkpoint_says_loudly_when_no_reservation_was_made() -> None:
    assert Reservation(ReservationStatus.UNAVAILABLE).note == UNAVAILABLE_NOTE
    assert UNAVAILABLE_NOTE == "unavailable: resources service answers UNIMPLEMENTED"
    assert Reservation(ReservationStatus.RESERVED, 10, 100).note == "reserved"


def test_a_reindex_command_carries_its_target_and_thresholds_into_the_order() -> None:
    collection_id = str(uuid.uuid4())
    command = commands_pb2.ReindexCommand(
        operation_id=str(uuid.uuid4()),
        collection=commands_pb2.CollectionSnapshot(
            collection_id=collection_id,
            owner_id="alice",
            physical_collection="vo_x_g4",
            generation=4,
            config=config_pb2.CollectionConfig(embedding_model=HASH, chunk_size=24),
        ),
        target_config=config_pb2.CollectionConfig(
            embedding_model=MINILM,
            dimension=384,
            quantization=config_pb2.QUANTIZATION_FLOAT16,
            chunk_size=128,
            chunk_overlap=16,
            instruction="",
        ),
        thresholds=operation_pb2.ValidationThresholds(min_topk_overlap=0.8, top_k=5),
    )
    order = decode(new_envelope(command, producer="orchestrator"))
    assert order.type is OperationType.REINDEX
    assert order.collection.generation == 4  # the fencing generation
    assert order.reindex is not None
    assert order.reindex.config == {
        "embedding_model": MINILM,
        "dimension": 384,
        "quantization": "float16",
        "chunk_size": 128,
        "chunk_overlap": 16,
        "instruction": "",
    }
    assert order.reindex.thresholds == Thresholds(min_topk_overlap=0.8, top_k=5)
