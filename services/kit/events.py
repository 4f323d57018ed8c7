"""The JetStream envelope: every message on the bus is a ``vectorops.events.v1.Envelope``
whose ``payload`` (an ``Any``) holds one event or command."""

from __future__ import annotations

import uuid
from typing import TypeVar

from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import DecodeError, Message

from kit.auth import Principal, Role
from kit.tracing import current_trace_id
from vectorops.common.v1 import principal_pb2
from vectorops.events.v1 import envelope_pb2

M = TypeVar("M", bound=Message)

_ROLES = {
    Role.USER: principal_pb2.ROLE_USER,
    Role.ADMIN: principal_pb2.ROLE_ADMIN,
    Role.SERVICE: principal_pb2.ROLE_SERVICE,
}


class EnvelopeError(ValueError):
    """Bytes that are not an envelope, or a payload of another type than expected."""


def new_envelope(
    payload: Message,
    *,
    producer: str,
    operation_id: str = "",
    collection_id: str = "",
    owner_id: str = "",
    actor: Principal | None = None,
    trace_id: str = "",
    causation_id: str = "",
) -> envelope_pb2.Envelope:
    """Wrap ``payload`` with a fresh event id (also its Nats-Msg-Id) and the current time.
    ``trace_id`` "" means the trace of the work running now (``kit.tracing``)."""
    packed = any_pb2.Any()
    packed.Pack(payload)
    occurred_at = timestamp_pb2.Timestamp()
    occurred_at.GetCurrentTime()
    envelope = envelope_pb2.Envelope(
        event_id=str(uuid.uuid4()),
        type=payload.DESCRIPTOR.full_name,
        occurred_at=occurred_at,
        operation_id=operation_id,
        collection_id=collection_id,
        owner_id=owner_id,
        trace_id=trace_id or current_trace_id(),
        producer=producer,
        causation_id=causation_id,
        payload=packed,
    )
    if actor is not None:
        envelope.actor.principal_id = actor.id
        envelope.actor.role = _ROLES[actor.role]
    return envelope


def parse_envelope(data: bytes) -> envelope_pb2.Envelope:
    envelope = envelope_pb2.Envelope()
    try:
        envelope.ParseFromString(data)
    except DecodeError as error:
        raise EnvelopeError(f"not an envelope: {error}") from error
    if not envelope.event_id or not envelope.type:
        raise EnvelopeError("envelope without event id or type")
    return envelope


def unpack(envelope: envelope_pb2.Envelope, payload_type: type[M]) -> M:
    payload = payload_type()
    if not envelope.payload.Unpack(payload):
        raise EnvelopeError(
            f"payload is {envelope.type}, expected {payload_type.DESCRIPTOR.full_name}"
        )
    return payload
