"""Trace ids through the real services: a REINDEX sent with a W3C
``traceparent`` is logged under that trace id by all five services (the
orchestrator's API and step handling, the indexer's work, the embedder's
batches, the resources service's reservation, the audit sink's records), every
audit record of the operation carries it, and the caller gets it back as
``x-trace-id`` response metadata. A call without one gets a fresh id back."""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from pathlib import Path

import grpc
import pytest
from api import HASH_MODEL, Client, config, directory, request_id
from corpus import FIRST_SOURCE, write_source

from kit.config import ServiceName
from vectorops.audit.v1 import audit_service_pb2, audit_service_pb2_grpc
from vectorops.common.v1 import operation_pb2
from vectorops.orchestrator.v1 import collection_service_pb2

pytestmark = pytest.mark.integration

HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def client(stack):
    api = Client(stack, stack.tokens.clear["user"])
    yield api
    api.close()


def traced_lines(log_path: Path, trace_id: str) -> list[dict]:
    """The JSON log lines of one service's log file that carry ``trace_id``."""
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # e.g. a subprocess's own output
        if isinstance(event, dict) and event.get("trace_id") == trace_id:
            found.append(event)
    return found


def audit_events(stack, operation_id: str) -> list:
    with grpc.insecure_channel(stack.endpoints[ServiceName.AUDIT].target) as channel:
        stub = audit_service_pb2_grpc.AuditServiceStub(channel)
        return list(
            stub.ListAuditEvents(
                audit_service_pb2.ListAuditEventsRequest(operation_id=operation_id, page_size=100),
                metadata=(("authorization", f"Bearer {stack.tokens.clear['admin']}"),),
                timeout=30,
            ).events
        )


def wait_for(found, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while True:
        result = found()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_one_trace_id_follows_a_reindex_through_all_five_services(stack, client) -> None:
    root = stack.options.roots()[0] / f"trace-{uuid.uuid4().hex[:8]}"
    write_source(root, FIRST_SOURCE)
    created = client.create(
        f"trace-{uuid.uuid4().hex[:6]}", config(HASH_MODEL, 64, 8), [directory(str(root))]
    )
    client.finish(created.operation.id)
    before = client.get(created.collection.id)

    trace_id = secrets.token_hex(16)
    response, call = client.collections.ReindexCollection.with_call(
        collection_service_pb2.ReindexCollectionRequest(
            collection_id=before.id,
            config=config(HASH_MODEL, 32, 4),
            expected_generation=before.generation,
            request_id=request_id(),
            # A handful of documents rank loosely under another chunking.
            thresholds=operation_pb2.ValidationThresholds(min_topk_overlap=0.3),
        ),
        metadata=(*client.metadata, ("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01")),
        timeout=30,
    )
    assert dict(call.initial_metadata())["x-trace-id"] == trace_id
    operation_id = response.operation.id
    client.finish(operation_id)

    # Every audit record of the operation, whichever service or consumer wrote
    # it (the API's start, the step events', the switch's), is in the trace.
    def trail_to_completion() -> list | None:
        events = audit_events(stack, operation_id)
        return events if any(e.action == "operation.complete" for e in events) else None

    events = wait_for(trail_to_completion, 30, "the operation's completion in the audit log")
    assert {e.action for e in events} >= {
        "operation.start",
        "operation.step",
        "reindex.switch",
        "operation.complete",
    }
    assert {e.trace_id for e in events} == {trace_id}

    # One grep of the logs for the trace id finds all five services (the audit
    # sink may still be storing the last records: wait a little for it).
    deadline = time.monotonic() + 30
    while True:
        found = {
            service: traced_lines(stack.endpoints[service].log_path, trace_id)
            for service in ServiceName
        }
        silent = [service.value for service, lines in found.items() if not lines]
        if not silent:
            break
        assert time.monotonic() < deadline, f"no log line with trace {trace_id} from {silent}"
        time.sleep(0.2)
    for service, lines in found.items():
        assert {line["service"] for line in lines} == {service.value}, service
    events_of = {service: {line["event"] for line in lines} for service, lines in found.items()}
    assert "resources.reserved" in events_of[ServiceName.RESOURCES]
    assert "embed.batch_done" in events_of[ServiceName.EMBEDDER]
    assert "audit.stored" in events_of[ServiceName.AUDIT]
    assert "orchestrator.reindex_switched" in events_of[ServiceName.ORCHESTRATOR]
    # The consumers bind the operation id with the trace id.
    for service in (ServiceName.INDEXER, ServiceName.EMBEDDER, ServiceName.AUDIT):
        assert any(line.get("operation_id") == operation_id for line in found[service]), service


def test_every_call_gets_a_trace_id_back(stack, client) -> None:
    plain = client.collections.ListCollections.with_call(
        collection_service_pb2.ListCollectionsRequest(page_size=1),
        metadata=client.metadata,
        timeout=30,
    )[1]
    fresh = dict(plain.initial_metadata())["x-trace-id"]
    assert HEX32.fullmatch(fresh) and fresh != "0" * 32

    chosen = secrets.token_hex(16)
    echoed = client.collections.ListCollections.with_call(
        collection_service_pb2.ListCollectionsRequest(page_size=1),
        metadata=(*client.metadata, ("x-trace-id", chosen)),
        timeout=30,
    )[1]
    assert dict(echoed.initial_metadata())["x-trace-id"] == chosen
