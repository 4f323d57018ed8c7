"""Audit records as outbox rows: the ``AuditRecord`` envelope a service writes
on ``vo.audit.<action>`` in the transaction of the change it audits.

Details are sanitised here, before they leave the service (the audit sink
sanitises them again). A record that may be produced twice for one fact (a
redelivered event, a retried transaction) takes an event id derived from that
fact (``audit_event_id``), so JetStream and the sink keep it once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2

from kit.auth import Principal
from kit.bus.subjects import audit_subject
from kit.events import new_envelope
from kit.sanitise import sanitise, sanitise_data
from vectorops.common.v1 import audit_pb2
from vectorops.events.v1 import audit_record_pb2, envelope_pb2

AuditRow = tuple[str, envelope_pb2.Envelope]

SUCCESS = audit_pb2.AUDIT_OUTCOME_SUCCESS
FAILURE = audit_pb2.AUDIT_OUTCOME_FAILURE
DENIED = audit_pb2.AUDIT_OUTCOME_DENIED

_NAMESPACE = uuid.UUID("0b6f1c2e-8a35-4d7e-9f42-6a1d3c5e7b90")


def audit_event_id(*parts: str) -> str:
    """The event id of the one audited fact ``parts`` name (e.g. operation id,
    action, step): the same parts always give the same id."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


def audit_row(
    action: str,
    *,
    service: str,
    outcome: int = SUCCESS,
    details: Mapping[str, Any] | None = None,
    reason: str = "",
    request_id: str = "",
    operation_id: str = "",
    collection_id: str = "",
    owner_id: str = "",
    actor: Principal | None = None,
    event_id: str = "",
) -> AuditRow:
    """The outbox row ``(subject, envelope)`` of one audit record; ``event_id``
    "" means a fresh random one. ``actor`` is the audit's "who"."""
    sanitised = struct_pb2.Struct()
    sanitised.update(sanitise_data(dict(details or {})))
    record = audit_record_pb2.AuditRecord(
        action=action,
        outcome=outcome,
        service=service,
        request_id=request_id,
        reason=sanitise(reason, 200),
        details=sanitised,
    )
    envelope = new_envelope(
        record,
        producer=service,
        operation_id=operation_id,
        collection_id=collection_id,
        owner_id=owner_id,
        actor=actor,
    )
    if event_id:
        envelope.event_id = event_id
    return audit_subject(action), envelope
