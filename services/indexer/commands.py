"""The indexer's command consumer: ``indexer-commands`` on VO_COMMANDS.

Each message is decoded into an ``OperationOrder`` and handed to the runner,
which announces the operation's outcome itself; the command is then acked. A
transient failure (``Retry``) naks it with backoff; a message that is not a
command at all is rejected to the dead letters. Several operations run at once
(never two on one collection: the orchestrator allows one at a time).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

from indexer.adapters.document_repository import CollectionRecord, SourceRecord
from indexer.collection_config import config_of
from indexer.domain.reindex_plan import ReindexTarget
from indexer.operation_runner import OperationRunner
from indexer.operations.base import OperationOrder
from indexer.upload_source import manifest_of
from indexer.validation import thresholds_of
from kit.bus import subjects
from kit.bus.jetstream import Delivery, JetStream, Reject
from kit.bus.topology import COMMANDS, ConsumerSpec
from kit.events import EnvelopeError, parse_envelope, unpack
from kit.logs import bind_ids, get_logger
from kit.operation_protocol import OperationType
from vectorops.common.v1 import source_pb2
from vectorops.events.v1 import commands_pb2, envelope_pb2

log = get_logger(__name__)

DURABLE = "indexer-commands"
DEFAULT_CONCURRENCY = 4


def consumer_spec(ack_wait_seconds: float, max_deliver: int) -> ConsumerSpec:
    return ConsumerSpec(
        stream=COMMANDS.name,
        durable=DURABLE,
        filter_subjects=(subjects.COMMANDS_FILTER,),
        max_deliver=max_deliver,
        ack_wait_seconds=ack_wait_seconds,
    )


class UnknownCommand(ValueError):
    """A message on the command subjects that is no command this indexer knows."""


class CommandConsumer:
    def __init__(
        self, runner: OperationRunner, spec: ConsumerSpec, concurrency: int = DEFAULT_CONCURRENCY
    ) -> None:
        self._runner = runner
        self.spec = spec
        self._concurrency = concurrency

    async def run(self, bus: JetStream, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; operations in flight finish first."""
        await bus.consume(self.spec, self.handle, concurrency=self._concurrency, stop=stop)

    async def handle(self, delivery: Delivery) -> None:
        try:
            order = decode(parse_envelope(delivery.data))
        except (EnvelopeError, UnknownCommand) as error:
            raise Reject(str(error)) from error
        bind_ids(operation_id=order.operation_id, collection_id=order.collection_id)
        log.info(
            "operation.command",
            operation_id=order.operation_id,
            type=order.type,
            attempt=delivery.attempt,
        )
        await self._runner.run(
            order,
            keepalive=delivery.in_progress,
            # Well within the ack wait, so one late beat does not lose the command.
            keepalive_seconds=self.spec.ack_wait_seconds / 3,
        )


# --- decoding ----------------------------------------------------------------------------


def collection_of(snapshot: commands_pb2.CollectionSnapshot) -> CollectionRecord:
    return CollectionRecord(
        collection_id=snapshot.collection_id,
        owner_id=snapshot.owner_id,
        alias_name=snapshot.alias_name,
        physical_collection=snapshot.physical_collection,
        generation=snapshot.generation,
        config=config_of(snapshot.config),
    )


def source_of(source: source_pb2.Source, collection_id: str) -> SourceRecord:
    kind = source.WhichOneof("kind")
    if kind == "directory":
        directory = source.directory
        return SourceRecord(
            source_id=source.id,
            collection_id=collection_id,
            kind="directory",
            path=directory.path,
            include=tuple(directory.include_globs),
            exclude=tuple(directory.exclude_globs),
        )
    return SourceRecord(
        source_id=source.id, collection_id=collection_id, kind="upload", path=source.display_name
    )


def _order(envelope: envelope_pb2.Envelope, **fields: Any) -> OperationOrder:
    return OperationOrder(trace_id=envelope.trace_id, causation_id=envelope.event_id, **fields)


def _index(envelope: envelope_pb2.Envelope) -> OperationOrder:
    command = unpack(envelope, commands_pb2.IndexCommand)
    collection = collection_of(command.collection)
    return _order(
        envelope,
        operation_id=command.operation_id,
        type=OperationType.INDEX,
        collection=collection,
        sources=tuple(source_of(s, collection.collection_id) for s in command.sources),
        max_documents=command.max_documents,
    )


def _append(envelope: envelope_pb2.Envelope) -> OperationOrder:
    command = unpack(envelope, commands_pb2.AppendCommand)
    collection = collection_of(command.collection)
    return _order(
        envelope,
        operation_id=command.operation_id,
        type=OperationType.APPEND,
        collection=collection,
        sources=(source_of(command.source, collection.collection_id),),
        max_documents=command.max_documents,
        upload=manifest_of(command.upload)
        if command.source.HasField("upload") or command.HasField("upload")
        else None,
    )


def _remove_source(envelope: envelope_pb2.Envelope) -> OperationOrder:
    command = unpack(envelope, commands_pb2.RemoveSourceCommand)
    return _order(
        envelope,
        operation_id=command.operation_id,
        type=OperationType.REMOVE_SOURCE,
        collection=collection_of(command.collection),
        source_id=command.source_id,
    )


def _reindex(envelope: envelope_pb2.Envelope) -> OperationOrder:
    command = unpack(envelope, commands_pb2.ReindexCommand)
    return _order(
        envelope,
        operation_id=command.operation_id,
        type=OperationType.REINDEX,
        collection=collection_of(command.collection),
        reindex=ReindexTarget(
            config=config_of(command.target_config),
            thresholds=thresholds_of(command.thresholds),
        ),
    )


def _delete(envelope: envelope_pb2.Envelope) -> OperationOrder:
    command = unpack(envelope, commands_pb2.DeleteCommand)
    return _order(
        envelope,
        operation_id=command.operation_id,
        type=OperationType.DELETE,
        collection=collection_of(command.collection),
        physical_collections=tuple(command.physical_collections),
    )


_DECODERS: Mapping[str, Any] = {
    commands_pb2.IndexCommand.DESCRIPTOR.full_name: _index,
    commands_pb2.AppendCommand.DESCRIPTOR.full_name: _append,
    commands_pb2.RemoveSourceCommand.DESCRIPTOR.full_name: _remove_source,
    commands_pb2.ReindexCommand.DESCRIPTOR.full_name: _reindex,
    commands_pb2.DeleteCommand.DESCRIPTOR.full_name: _delete,
}


def decode(envelope: envelope_pb2.Envelope) -> OperationOrder:
    """The order a command envelope carries; ``UnknownCommand`` if it carries none."""
    decoder = _DECODERS.get(envelope.type)
    if decoder is None:
        raise UnknownCommand(f"{envelope.type!r} is not an indexer command")
    order: OperationOrder = decoder(envelope)
    for name in ("operation_id", "collection_id"):
        try:
            uuid.UUID(getattr(order, name))
        except ValueError:
            raise UnknownCommand(f"{envelope.type} whose {name} is not a UUID") from None
    return order
