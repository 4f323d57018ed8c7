"""What a REINDEX switch announces, as outbox rows written in the
CompleteReindex transaction: ``CollectionSwitched`` for the indexers (they move
the alias on it too, in case the caller died before it did) and the
``reindex.switch`` audit record."""

from __future__ import annotations

from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from kit.auth import Principal
from kit.bus import subjects
from kit.events import new_envelope
from kit.sanitise import sanitise_data
from orchestrator.adapters.records import CollectionRecord, OperationRecord
from orchestrator.commands import PRODUCER, OutboxRow
from orchestrator.domain.reindex import Switch
from vectorops.common.v1 import audit_pb2
from vectorops.events.v1 import audit_record_pb2, collection_events_pb2

SWITCH_ACTION = "reindex.switch"


def switch_rows(
    collection: CollectionRecord,
    op: OperationRecord,
    switch: Switch,
    actor: Principal,
    request_id: str,
) -> list[OutboxRow]:
    """The rows of one switch; ``actor`` is the service that called."""
    return [
        _row(subjects.COLLECTION_SWITCHED, collection_switched(collection, op, switch), op, actor),
        _row(
            subjects.audit_subject(SWITCH_ACTION),
            switch_audit(op, switch, request_id),
            op,
            actor,
        ),
    ]


def collection_switched(
    collection: CollectionRecord, op: OperationRecord, switch: Switch
) -> collection_events_pb2.CollectionSwitched:
    cleanup_time = timestamp_pb2.Timestamp()
    cleanup_time.FromDatetime(switch.cleanup_not_before)
    return collection_events_pb2.CollectionSwitched(
        collection_id=collection.id,
        operation_id=op.id,
        generation=switch.to_generation,
        alias_name=collection.alias_name,
        physical_collection=switch.physical_collection,
        retired_collections=list(switch.retired_collections),
        cleanup_not_before=cleanup_time,
    )


def switch_audit(
    op: OperationRecord, switch: Switch, request_id: str
) -> audit_record_pb2.AuditRecord:
    details = struct_pb2.Struct()
    details.update(
        sanitise_data(
            {
                "from_generation": switch.from_generation,
                "to_generation": switch.to_generation,
                "old_physical_collections": list(switch.retired_collections),
                "new_physical_collection": switch.physical_collection,
                "validation_passed": True,  # the switch is refused otherwise
            }
        )
    )
    return audit_record_pb2.AuditRecord(
        action=SWITCH_ACTION,
        outcome=audit_pb2.AUDIT_OUTCOME_SUCCESS,
        service=PRODUCER,
        request_id=request_id,
        details=details,
    )


def _row(subject: str, payload: Message, op: OperationRecord, actor: Principal) -> OutboxRow:
    envelope = new_envelope(
        payload,
        producer=PRODUCER,
        operation_id=op.id,
        collection_id=op.operation.collection_id,
        owner_id=op.owner_id,
        actor=actor,
    )
    return subject, envelope
