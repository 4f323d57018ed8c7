"""The orchestrator's rows as Python: the persistence view of collections, sources and
operations (an ``OperationRecord`` wraps the domain's ``Operation`` with what only
the API needs), names derived from ids, and the row mappers."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from orchestrator.domain.operations import (
    STEPS,
    CollectionStatus,
    ErrorType,
    Operation,
    OperationError,
    OperationStatus,
    OperationType,
    Progress,
)


@dataclass(frozen=True)
class SourceSpec:
    """A source as a request gives it."""

    kind: str  # "directory" | "upload"
    path: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # Chosen by UploadDocuments, whose objects are named by the source id
    # before the source is stored; "" lets the repository pick one.
    id: str = ""


@dataclass(frozen=True)
class SourceRecord:
    id: str
    collection_id: str
    kind: str
    path: str
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    status: str
    document_count: int
    created_at: datetime


@dataclass(frozen=True)
class CollectionRecord:
    """A collection as stored: what ``Collection`` in the API answers from."""

    id: str
    owner_id: str
    name: str
    description: str
    alias_name: str
    physical_collection: str
    staging_collection: str | None
    generation: int
    config: Mapping[str, Any]
    status: CollectionStatus
    status_message: str
    document_count: int
    vector_count: int
    stored_bytes: int
    active_operation_id: str | None
    old_physical_collections: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    sources: tuple[SourceRecord, ...] = ()


@dataclass(frozen=True)
class ResourceFigures:
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_memory_bytes: int = 0
    documents: int = 0
    vectors: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class OperationRecord:
    """A stored operation: the domain state plus what only the API reads."""

    operation: Operation
    owner_id: str
    config: Mapping[str, Any]
    previous_config: Mapping[str, Any] | None = None
    source_id: str | None = None
    request_id: str = ""
    created_by: str = ""
    trace_id: str = ""  # of the request that started it (kit.tracing)
    resources: ResourceFigures = field(default_factory=ResourceFigures)
    result: Mapping[str, Any] | None = None

    @property
    def id(self) -> str:
        return self.operation.id


def alias_name_for(collection_id: str) -> str:
    """The public alias: from the id, so renames and reindexes never move it."""
    return f"vo_{uuid.UUID(collection_id).hex}"


def physical_name_for(collection_id: str, generation: int) -> str:
    return f"{alias_name_for(collection_id)}_g{generation}"


def request_hash(*parts: object) -> str:
    """A stable hash of a request's meaningful fields, for idempotency keys."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def collection_from(row: asyncpg.Record, sources: tuple[SourceRecord, ...]) -> CollectionRecord:
    active = row["active_operation_id"]
    return CollectionRecord(
        id=str(row["id"]),
        owner_id=row["owner_id"],
        name=row["name"],
        description=row["description"],
        alias_name=row["alias_name"],
        physical_collection=row["physical_collection"],
        staging_collection=row["staging_collection"],
        generation=row["generation"],
        config=json.loads(row["config"]),
        status=CollectionStatus(row["status"]),
        status_message=row["status_message"],
        document_count=row["document_count"],
        vector_count=row["vector_count"],
        stored_bytes=row["stored_bytes"],
        active_operation_id=str(active) if active else None,
        old_physical_collections=tuple(json.loads(row["old_physical_collections"])),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        sources=sources,
    )


def source_from(row: asyncpg.Record) -> SourceRecord:
    return SourceRecord(
        id=str(row["id"]),
        collection_id=str(row["collection_id"]),
        kind=row["kind"],
        path=row["path"],
        include=tuple(json.loads(row["include"])),
        exclude=tuple(json.loads(row["exclude"])),
        status=row["status"],
        document_count=row["document_count"],
        created_at=row["created_at"],
    )


def operation_from(row: asyncpg.Record) -> OperationRecord:
    kind = OperationType(row["type"])
    stored = json.loads(row["checkpoints"])
    # jsonb does not keep key order; the domain's order is step order.
    checkpoints = {step: stored[step] for step in STEPS[kind] if step in stored}
    error = None
    if row["error_type"]:
        error = OperationError(
            ErrorType(row["error_type"]), row["error_message"] or "", row["error_step"]
        )
    before = row["collection_status_before"]
    operation = Operation(
        id=str(row["id"]),
        collection_id=str(row["collection_id"]),
        type=kind,
        created_at=row["created_at"],
        status=OperationStatus(row["status"]),
        current_step=row["current_step"],
        checkpoints=checkpoints,
        progress=Progress(**json.loads(row["progress"])),
        error=error,
        collection_status_before=CollectionStatus(before) if before else None,
        changed_anything=row["changed_anything"],
        started_at=row["started_at"],
        updated_at=row["updated_at"],
        ended_at=row["ended_at"],
    )
    previous = row["previous_config"]
    result = row["result"]
    return OperationRecord(
        operation=operation,
        owner_id=row["owner_id"],
        config=json.loads(row["config"]),
        previous_config=json.loads(previous) if previous is not None else None,
        source_id=str(row["source_id"]) if row["source_id"] else None,
        request_id=row["request_id"],
        created_by=row["created_by"],
        trace_id=row["trace_id"],
        resources=ResourceFigures(
            wall_seconds=row["wall_seconds"],
            cpu_seconds=row["cpu_seconds"],
            peak_memory_bytes=row["peak_memory_bytes"],
            documents=row["documents"],
            vectors=row["vectors"],
            bytes=row["bytes"],
        ),
        result=json.loads(result) if result is not None else None,
    )


# --- errors, ids, page tokens --------------------------------------------------------
