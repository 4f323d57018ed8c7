"""What a REINDEX switch announces, as outbox rows written in the
CompleteReindex transaction: ``CollectionSwitched`` for the indexers (they move
the alias on it too, in case the caller died before it did) and the
``reindex.switch`` audit record."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from kit.audit_records import audit_event_id, audit_row
from kit.auth import Principal
from kit.bus import subjects
from kit.events import new_envelope
from orchestrator.adapters.records import CollectionRecord, OperationRecord
from orchestrator.commands import PRODUCER, OutboxRow
from orchestrator.domain.reindex import Switch
from vectorops.events.v1 import collection_events_pb2

SWITCH_ACTION = "reindex.switch"


def switch_rows(
    collection: CollectionRecord,
    op: OperationRecord,
    switch: Switch,
    actor: Principal,
    request_id: str,
) -> list[OutboxRow]:
    """The rows of one switch; ``actor`` is the service that called (the audit's
    "who" of the switch itself; the step's ``operation.step`` carries the requester)."""
    announced = new_envelope(
        collection_switched(collection, op, switch),
        producer=PRODUCER,
        operation_id=op.id,
        collection_id=op.operation.collection_id,
        owner_id=op.owner_id,
        actor=actor,
    )
    return [(subjects.COLLECTION_SWITCHED, announced), switch_audit(op, switch, actor, request_id)]


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
    op: OperationRecord, switch: Switch, actor: Principal, request_id: str
) -> OutboxRow:
    """The ``reindex.switch`` audit row; one per operation (its event id says so)."""
    return audit_row(
        SWITCH_ACTION,
        service=PRODUCER,
        details={
            "from_generation": switch.from_generation,
            "to_generation": switch.to_generation,
            "old_physical_collections": list(switch.retired_collections),
            "new_physical_collection": switch.physical_collection,
            "validation_passed": True,  # the switch is refused otherwise
        },
        request_id=request_id,
        operation_id=op.id,
        collection_id=op.operation.collection_id,
        owner_id=op.owner_id,
        actor=actor,
        event_id=audit_event_id(op.id, SWITCH_ACTION),
    )
