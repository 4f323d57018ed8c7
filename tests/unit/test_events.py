"""Envelopes: every bus message wraps one payload with ids, time and actor."""

import uuid

import pytest

from kit.auth import Principal, Role
from kit.events import EnvelopeError, new_envelope, parse_envelope, unpack
from vectorops.common.v1 import principal_pb2
from vectorops.events.v1 import dead_letter_pb2, usage_pb2


def test_envelope_carries_payload_type_ids_and_actor() -> None:
    envelope = new_envelope(
        usage_pb2.UsageDelta(owner_id="alice"),
        producer="indexer",
        operation_id="op-1",
        collection_id="col-1",
        owner_id="alice",
        actor=Principal("alice", Role.USER),
    )
    uuid.UUID(envelope.event_id)  # a UUID: also the Nats-Msg-Id
    assert envelope.type == "vectorops.events.v1.UsageDelta"
    assert (envelope.operation_id, envelope.collection_id, envelope.producer) == (
        "op-1",
        "col-1",
        "indexer",
    )
    assert envelope.actor.role == principal_pb2.ROLE_USER
    assert envelope.occurred_at.seconds > 0

    parsed = parse_envelope(envelope.SerializeToString())
    assert unpack(parsed, usage_pb2.UsageDelta).owner_id == "alice"


def test_each_envelope_gets_its_own_event_id() -> None:
    ids = {new_envelope(usage_pb2.UsageDelta(), producer="x").event_id for _ in range(50)}
    assert len(ids) == 50


def test_wrong_payload_type_is_an_error() -> None:
    envelope = new_envelope(usage_pb2.UsageDelta(), producer="x")
    with pytest.raises(EnvelopeError, match="expected vectorops.events.v1.DeadLetter"):
        unpack(envelope, dead_letter_pb2.DeadLetter)


@pytest.mark.parametrize("data", [b"\xff\xff\xff", b"", b"plain text"])
def test_bytes_that_are_not_an_envelope_are_refused(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        parse_envelope(data)
