"""The audit sink: the durable ``audit-sink`` consumer on VO_AUDIT that sanitises
each AuditRecord again and appends it to the hash chain, once per event id."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from google.protobuf import json_format

from audit.adapters.audit_repository import AuditRepository, NewEntry
from kit.bus.jetstream import Delivery, Reject
from kit.bus.topology import AUDIT, ConsumerSpec
from kit.events import EnvelopeError, parse_envelope, unpack
from kit.logs import get_logger
from kit.sanitise import sanitise, sanitise_data
from vectorops.common.v1 import audit_pb2, principal_pb2
from vectorops.events.v1 import audit_record_pb2

log = get_logger(__name__)

DURABLE = "audit-sink"


def consumer_spec(
    stream: str = AUDIT.name, durable: str = DURABLE, subjects: str = "vo.audit.>"
) -> ConsumerSpec:
    """One message in flight across all sinks (``max_ack_pending=1``), so the chain
    keeps the order the events were published in: otherwise a sink that dies
    holding fetched messages has them appended after the later ones, once their
    ack wait has run out (an operation's end before its last step)."""
    return ConsumerSpec(stream, durable, (subjects,), max_ack_pending=1)


class AuditSink:
    def __init__(self, repository: AuditRepository) -> None:
        self._repository = repository

    async def handle(self, delivery: Delivery) -> None:
        try:
            envelope = parse_envelope(delivery.data)
            record = unpack(envelope, audit_record_pb2.AuditRecord)
            event_id = str(uuid.UUID(envelope.event_id))
            entry = to_entry(envelope, record, event_id)
        except (EnvelopeError, ValueError) as error:
            # Never storable: keep it in the dead letters rather than retry forever.
            raise Reject(str(error)) from error
        stored = await self._repository.append(entry)
        if stored is None:
            log.info("audit.duplicate", event_id=event_id)
        else:
            # The record's own trace id (also bound by the consumer, from the envelope).
            log.info(
                "audit.stored",
                event_id=event_id,
                action=entry.action,
                outcome=entry.outcome,
                trace_id=entry.trace_id,
                operation_id=entry.operation_id,
            )


def to_entry(envelope, record: audit_record_pb2.AuditRecord, event_id: str) -> NewEntry:
    """The row for one record, sanitised again: a producer that forgot to (or an old
    producer with weaker rules) must not put personal data into the log."""
    details = sanitise_data(json_format.MessageToDict(record.details))
    if record.reason:
        details["reason"] = sanitise(record.reason)
    occurred = (
        envelope.occurred_at.ToDatetime(tzinfo=UTC)
        if envelope.HasField("occurred_at")
        else datetime.now(UTC)
    )
    return NewEntry(
        event_id=event_id,
        action=sanitise(record.action, 200),
        outcome=audit_pb2.AuditOutcome.Name(record.outcome),
        principal=sanitise(envelope.actor.principal_id, 200),
        role=principal_pb2.Role.Name(envelope.actor.role),  # ValueError: unknown
        owner_id=envelope.owner_id,
        collection_id=envelope.collection_id,
        operation_id=envelope.operation_id,
        service=sanitise(record.service, 200),
        request_id=sanitise(record.request_id, 200),
        trace_id=envelope.trace_id,
        occurred_at=occurred,
        details=details,
    )
