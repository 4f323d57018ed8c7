"""The commands the orchestrator sends the indexer, as outbox rows
``(subject, envelope)``: written in the transaction that accepts the
operation, published by the outbox dispatcher afterwards.

Each command carries a ``CollectionSnapshot`` (owner, alias, physical
collection, generation, config): the indexer keeps its own copy of
collections and never reads the orchestrator's tables.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import Message

from kit.auth import Principal
from kit.bus import subjects
from kit.events import new_envelope
from orchestrator.adapters.records import CollectionRecord, OperationRecord, SourceRecord
from orchestrator.domain.operations import DomainEvent, OperationCancelled, OperationType
from orchestrator.messages import config_message, source_message
from vectorops.common.v1 import operation_pb2
from vectorops.events.v1 import commands_pb2, envelope_pb2

OutboxRow = tuple[str, envelope_pb2.Envelope]
PRODUCER = "orchestrator"


def snapshot(collection: CollectionRecord) -> commands_pb2.CollectionSnapshot:
    return commands_pb2.CollectionSnapshot(
        collection_id=collection.id,
        owner_id=collection.owner_id,
        alias_name=collection.alias_name,
        physical_collection=collection.physical_collection,
        generation=collection.generation,
        config=config_message(collection.config),
    )


def _row(
    subject: str,
    payload: Message,
    operation_id: str,
    collection_id: str,
    owner_id: str,
    actor: Principal | None,
) -> OutboxRow:
    envelope = new_envelope(
        payload,
        producer=PRODUCER,
        operation_id=operation_id,
        collection_id=collection_id,
        owner_id=owner_id,
        actor=actor,
    )
    return subject, envelope


def _command(
    collection: CollectionRecord, op: OperationRecord, payload: Message, actor: Principal | None
) -> OutboxRow:
    subject = subjects.command_subject(op.operation.type.value)
    return _row(subject, payload, op.id, collection.id, collection.owner_id, actor)


def index_command(
    collection: CollectionRecord, op: OperationRecord, actor: Principal | None
) -> OutboxRow:
    """INDEX: create the physical collection and ingest the first sources."""
    payload = commands_pb2.IndexCommand(
        operation_id=op.id,
        collection=snapshot(collection),
        sources=[source_message(source) for source in collection.sources],
    )
    return _command(collection, op, payload, actor)


def append_command(
    collection: CollectionRecord,
    op: OperationRecord,
    actor: Principal | None,
    upload: commands_pb2.UploadManifest | None = None,
) -> OutboxRow:
    """APPEND: ingest the source the operation added (``op.source_id``); for an
    upload source, exactly the uploaded documents ``upload`` lists."""
    source = _source(collection, op.source_id)
    payload = commands_pb2.AppendCommand(
        operation_id=op.id,
        collection=snapshot(collection),
        source=source_message(source),
        upload=upload,
    )
    return _command(collection, op, payload, actor)


def remove_source_command(
    collection: CollectionRecord, op: OperationRecord, actor: Principal | None
) -> OutboxRow:
    payload = commands_pb2.RemoveSourceCommand(
        operation_id=op.id, collection=snapshot(collection), source_id=op.source_id or ""
    )
    return _command(collection, op, payload, actor)


def delete_command(
    collection: CollectionRecord, op: OperationRecord, actor: Principal | None
) -> OutboxRow:
    """DELETE: drop every physical collection the collection still holds (live,
    those retired by a switch and waiting for cleanup, and a staging one), so
    nothing is left behind for cleanup to find."""
    physical = [collection.physical_collection, *collection.old_physical_collections]
    if collection.staging_collection:
        physical.append(collection.staging_collection)
    payload = commands_pb2.DeleteCommand(
        operation_id=op.id,
        collection=snapshot(collection),
        physical_collections=list(dict.fromkeys(physical)),
    )
    return _command(collection, op, payload, actor)


def reindex_command(
    collection: CollectionRecord,
    op: OperationRecord,
    actor: Principal | None,
    thresholds: operation_pb2.ValidationThresholds,
) -> OutboxRow:
    """REINDEX: build ``op.config`` into a staging collection next to the live
    one. The snapshot's generation is the fencing token the indexer hands back
    to CompleteReindex; ``thresholds`` are the ones in force (defaults with
    the request's overrides)."""
    payload = commands_pb2.ReindexCommand(
        operation_id=op.id,
        collection=snapshot(collection),
        target_config=config_message(op.config),
        thresholds=thresholds,
    )
    return _command(collection, op, payload, actor)


COMMANDS = {
    OperationType.INDEX: index_command,
    OperationType.APPEND: append_command,
    OperationType.REMOVE_SOURCE: remove_source_command,
    OperationType.DELETE: delete_command,
}


def cancel_command(
    operation_id: str,
    collection_id: str,
    owner_id: str,
    reason: str,
    actor: Principal | None,
) -> OutboxRow:
    """Fan-out to every indexer instance: the one running the operation stops,
    the others remember it and drop the command if it arrives later."""
    payload = commands_pb2.CancelOperationCommand(
        operation_id=operation_id, collection_id=collection_id, reason=reason
    )
    return _row(subjects.CANCEL, payload, operation_id, collection_id, owner_id, actor)


def cancel_rows(
    owner_id: str, reason: str, actor: Principal | None
) -> Callable[[list[DomainEvent]], list[OutboxRow]]:
    """The ``outbox_for`` of a cancel: one CancelOperationCommand when the
    domain did cancel (a repeated cancel produces no event, so sends nothing)."""

    def rows(events: list[DomainEvent]) -> list[OutboxRow]:
        return [
            cancel_command(event.operation_id, event.collection_id, owner_id, reason, actor)
            for event in events
            if isinstance(event, OperationCancelled)
        ]

    return rows


def _source(collection: CollectionRecord, source_id: str | None) -> SourceRecord:
    for source in collection.sources:
        if source.id == source_id:
            return source
    # The repository adds the source in the same transaction: a bug if missing.
    raise LookupError(f"source {source_id} is not in collection {collection.id}")
