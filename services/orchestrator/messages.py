"""The orchestrator's records as API messages (``Collection``, ``Operation``,
``Source``, ``CollectionConfig``), and the API's enums as domain values."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from kit.grpc.request_times import request_time
from orchestrator.adapters.records import CollectionRecord, OperationRecord, SourceRecord
from orchestrator.domain.collections import is_searchable
from orchestrator.domain.config import RequestedConfig
from orchestrator.domain.operations import (
    CollectionStatus,
    ErrorType,
    OperationStatus,
    OperationType,
)
from vectorops.common.v1 import config_pb2, operation_pb2, source_pb2
from vectorops.orchestrator.v1 import orchestrator_pb2

E = TypeVar("E", bound=StrEnum)

# Failures a later attempt may not meet again (an outage, a lost worker).
_RETRYABLE = frozenset(
    {
        ErrorType.RETRIES_EXHAUSTED,
        ErrorType.STUCK,
        ErrorType.EMBEDDER_UNAVAILABLE,
        ErrorType.VECTOR_STORE_ERROR,
    }
)


def timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def optional_time(message: Message, field: str) -> datetime | None:
    """A request's Timestamp field as an aware datetime; None when unset."""
    return request_time(message, field)


# --- enums ------------------------------------------------------------------------


def collection_status(status: CollectionStatus) -> int:
    return operation_pb2.CollectionStatus.Value(f"COLLECTION_STATUS_{status.value}")


def operation_status(status: OperationStatus) -> int:
    return operation_pb2.OperationStatus.Value(f"OPERATION_STATUS_{status.value}")


def operation_type(kind: OperationType) -> int:
    return operation_pb2.OperationType.Value(f"OPERATION_TYPE_{kind.value}")


def collection_status_from(value: int) -> CollectionStatus | None:
    """None for UNSPECIFIED or a number this server does not know."""
    return _member(operation_pb2.CollectionStatus, value, "COLLECTION_STATUS_", CollectionStatus)


def operation_status_from(value: int) -> OperationStatus | None:
    return _member(operation_pb2.OperationStatus, value, "OPERATION_STATUS_", OperationStatus)


def operation_type_from(value: int) -> OperationType | None:
    return _member(operation_pb2.OperationType, value, "OPERATION_TYPE_", OperationType)


def _member(enum: Any, value: int, prefix: str, domain: type[E]) -> E | None:
    if value not in enum.values():
        return None
    name = enum.Name(value).removeprefix(prefix)
    return None if name == "UNSPECIFIED" else domain(name)


# --- config -----------------------------------------------------------------------


def requested_config(message: config_pb2.CollectionConfig) -> RequestedConfig:
    quantization = ""
    if message.quantization != config_pb2.QUANTIZATION_UNSPECIFIED:
        # An unknown number still reaches validation, which names the field.
        quantization = (
            config_pb2.Quantization.Name(message.quantization).removeprefix("QUANTIZATION_")
            if message.quantization in config_pb2.Quantization.values()
            else str(message.quantization)
        )
    return RequestedConfig(
        embedding_model=message.embedding_model.strip(),
        dimension=message.dimension,
        quantization=quantization.lower() or None,
        instruction=message.instruction if message.HasField("instruction") else None,
        chunk_size=message.chunk_size,
        chunk_overlap=message.chunk_overlap,
    )


def config_message(config: Mapping[str, Any]) -> config_pb2.CollectionConfig:
    """A stored config (see ``domain.config``) as the API's ``CollectionConfig``."""
    message = config_pb2.CollectionConfig(
        embedding_model=str(config.get("embedding_model") or ""),
        dimension=int(config.get("dimension") or 0),
        chunk_size=int(config.get("chunk_size") or 0),
        chunk_overlap=int(config.get("chunk_overlap") or 0),
    )
    quantization = str(config.get("quantization") or "")
    if quantization:
        message.quantization = config_pb2.Quantization.Value(f"QUANTIZATION_{quantization.upper()}")
    instruction = config.get("instruction")
    if isinstance(instruction, str):
        message.instruction = instruction
    return message


# --- resources ----------------------------------------------------------------------


def source_message(source: SourceRecord) -> source_pb2.Source:
    message = source_pb2.Source(
        id=source.id,
        collection_id=source.collection_id,
        document_count=source.document_count,
        create_time=timestamp(source.created_at),
    )
    if source.kind == "directory":
        message.directory.CopyFrom(
            source_pb2.DirectorySource(
                path=source.path,
                include_globs=list(source.include),
                exclude_globs=list(source.exclude),
            )
        )
    else:
        message.upload.SetInParent()
        message.display_name = source.path  # an upload source's path is its label
    return message


def collection_message(collection: CollectionRecord) -> orchestrator_pb2.Collection:
    return orchestrator_pb2.Collection(
        id=collection.id,
        owner_id=collection.owner_id,
        name=collection.name,
        description=collection.description,
        alias_name=collection.alias_name,
        physical_collection=collection.physical_collection,
        staging_collection=collection.staging_collection or "",
        generation=collection.generation,
        config=config_message(collection.config),
        status=collection_status(collection.status),
        status_message=collection.status_message,
        document_count=collection.document_count,
        vector_count=collection.vector_count,
        stored_bytes=collection.stored_bytes,
        active_operation_id=collection.active_operation_id or "",
        sources=[source_message(source) for source in collection.sources],
        searchable=is_searchable(collection.status),
        create_time=timestamp(collection.created_at),
        update_time=timestamp(collection.updated_at),
    )


def operation_message(record: OperationRecord) -> orchestrator_pb2.Operation:
    op = record.operation
    progress = op.progress
    completed = op.completed_steps
    message = orchestrator_pb2.Operation(
        id=op.id,
        collection_id=op.collection_id,
        owner_id=record.owner_id,
        type=operation_type(op.type),
        status=operation_status(op.status),
        current_step=op.current_step or "",
        last_checkpoint=completed[-1] if completed else "",
        progress=operation_pb2.Progress(
            documents_total=progress.documents_total,
            documents_done=progress.documents_done,
            documents_failed=progress.documents_failed,
            documents_skipped=progress.documents_skipped,
            documents_duplicate=progress.documents_duplicate,
            vectors_written=progress.vectors_written,
            percent=progress.percent,
            step=op.current_step or "",
            update_time=timestamp(op.updated_at),
        ),
        create_time=timestamp(op.created_at),
        start_time=timestamp(op.started_at),
        update_time=timestamp(op.updated_at),
        end_time=timestamp(op.ended_at),
        resources=operation_pb2.ResourceFigures(
            wall_seconds=record.resources.wall_seconds,
            cpu_seconds=record.resources.cpu_seconds,
            peak_memory_bytes=record.resources.peak_memory_bytes,
            documents=record.resources.documents,
            vectors=record.resources.vectors,
            bytes=record.resources.bytes,
        ),
        config=config_message(record.config),
        source_id=record.source_id or "",
        request_id=record.request_id,
        created_by=record.created_by,
        done=op.finished,
    )
    if op.error is not None:
        message.error.CopyFrom(
            operation_pb2.OperationError(
                type=op.error.type.value,
                message=op.error.message,
                step=op.error.step or "",
                retryable=op.error.type in _RETRYABLE,
            )
        )
    if record.previous_config is not None:
        message.previous_config.CopyFrom(config_message(record.previous_config))
    validation = (record.result or {}).get("validation")
    if validation:  # a REINDEX's, kept from its validation step or its switch
        json_format.ParseDict(validation, message.validation, ignore_unknown_fields=True)
    staging = op.checkpoint("staging") if op.type is OperationType.REINDEX else None
    if staging:
        message.staging_collection = str(staging.get("staging_collection") or "")
    return message
