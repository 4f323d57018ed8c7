"""The audit trail of operations: one ``AuditRecord`` outbox row per state
change, written by the repository in the transaction that makes the change, so
the trail holds exactly the changes that committed, on every path (API,
step events, cancel, reaper, dead letters, the switch).

- ``operation.start``: the operation was accepted (the transaction creating it);
- ``operation.step``: a step's checkpoint was applied;
- ``operation.complete`` / ``operation.fail`` (outcome FAILURE) / ``operation.cancel``.

Event ids are derived from (operation, action, step): a transition applied twice
(it cannot, the domain is idempotent, but a retried transaction could try) is
still stored once by the sink.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from kit.audit_records import FAILURE, SUCCESS, AuditRow, audit_event_id, audit_row
from kit.auth import Principal, Role
from orchestrator.adapters.records import CollectionRecord, OperationRecord
from orchestrator.domain.operations import (
    DomainEvent,
    Operation,
    OperationCancelled,
    OperationCompleted,
    OperationFailed,
    OperationType,
    StepCompleted,
)

SERVICE = "orchestrator"
START = "operation.start"
STEP = "operation.step"
COMPLETE = "operation.complete"
FAIL = "operation.fail"
CANCEL = "operation.cancel"


def requester(record: OperationRecord) -> Principal | None:
    """Who asked for the operation. Only an admin acts on another owner's
    collection, so a requester other than the owner is one."""
    if not record.created_by:
        return None
    role = Role.USER if record.created_by == record.owner_id else Role.ADMIN
    return Principal(record.created_by, role)


def operation_audit(
    record: OperationRecord,
    action: str,
    details: Mapping[str, Any],
    *,
    key: str = "",
    outcome: int = SUCCESS,
    reason: str = "",
    actor: Principal | None = None,
) -> AuditRow:
    """One audit row about ``record``; ``key`` tells apart the rows one action
    may produce per operation (a step's name). ``actor`` defaults to the requester."""
    return audit_row(
        action,
        service=SERVICE,
        outcome=outcome,
        details={"operation_type": record.operation.type.value, **details},
        reason=reason,
        request_id=record.request_id,
        operation_id=record.id,
        collection_id=record.operation.collection_id,
        owner_id=record.owner_id,
        # Steps are reported by the indexer, but the work is done on the
        # requester's behalf: the audit's "who" is always the requester.
        actor=actor or requester(record),
        event_id=audit_event_id(record.id, action, key),
    )


def start_row(collection: CollectionRecord, record: OperationRecord) -> AuditRow:
    """``operation.start``: what was asked for, with the sources it concerns."""
    kind = record.operation.type
    details: dict[str, Any] = {"collection_name": collection.name, "config": dict(record.config)}
    if kind is OperationType.INDEX:
        details["description"] = collection.description
        concerned = list(collection.sources)
    else:
        concerned = [s for s in collection.sources if s.id == record.source_id]
    if concerned:
        details["sources"] = [
            {"source_id": s.id, "kind": s.kind, "path": s.path, "include": list(s.include)}
            for s in concerned
        ]
    elif record.source_id:
        details["source_id"] = record.source_id
    if record.previous_config is not None:
        details["previous_config"] = dict(record.previous_config)
    return operation_audit(record, START, details)


def transition_rows(
    record: OperationRecord, new: Operation, events: Iterable[DomainEvent]
) -> list[AuditRow]:
    """The audit rows of one transition of ``record`` (as it was) into ``new``."""
    rows: list[AuditRow] = []
    progress = asdict(new.progress)
    for event in events:
        if isinstance(event, StepCompleted):
            details = {"step": event.step, "checkpoint": dict(event.checkpoint)}
            rows.append(operation_audit(record, STEP, details, key=event.step))
        elif isinstance(event, OperationCompleted):
            rows.append(operation_audit(record, COMPLETE, {"progress": progress}))
        elif isinstance(event, OperationFailed):
            details = {
                "error_type": event.error.type.value,
                "error_message": event.error.message,
                "step": event.error.step,
                "progress": progress,
            }
            rows.append(
                operation_audit(
                    record, FAIL, details, outcome=FAILURE, reason=event.error.type.value
                )
            )
        elif isinstance(event, OperationCancelled):
            details = {"step": event.step, "changed_anything": event.changed_anything}
            rows.append(operation_audit(record, CANCEL, details))
    return rows
