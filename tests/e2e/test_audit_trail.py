"""The audit trail of a collection's whole life through the real services:
INDEX → APPEND → REINDEX → REMOVE_SOURCE → DELETE leaves every operation's
start, steps and completion in the audit log, in order, with the requester as
"who" and no personal data from the inputs (a source under ``/home/alice``, an
e-mail in a document name and in the description, an ``api_token=`` secret)
in any stored row; the audit service SIGKILLed mid-run loses no event; and a
row edited in Postgres is the first broken link VerifyChain names."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import asyncpg
import grpc
import pytest
from api import HASH_MODEL, Client, config, directory, request_id
from corpus import write_text_corpus

from kit.config import ServiceName
from kit.operation_protocol import STEPS, OperationType
from vectorops.audit.v1 import audit_service_pb2, audit_service_pb2_grpc
from vectorops.common.v1 import audit_pb2, operation_pb2, principal_pb2
from vectorops.orchestrator.v1 import collection_service_pb2, orchestrator_pb2

pytestmark = pytest.mark.integration

SECRET = "hunter2-not-for-logs"
DESCRIPTION = f"kept by bob@example.com, api_token={SECRET}"
PERSONAL = ("alice", "bob@example.com", SECRET)
AUDIT_TABLE = "audit.audit_events"
APPEND_ONLY = "audit_events_append_only"  # the trigger that refuses UPDATE and DELETE
ORDER = (
    OperationType.INDEX,
    OperationType.APPEND,
    OperationType.REINDEX,
    OperationType.REMOVE_SOURCE,
    OperationType.DELETE,
)


@pytest.fixture
def client(stack):
    api = Client(stack, stack.tokens.clear["user"])
    yield api
    api.close()


class AuditReader:
    """AuditService with one caller's token (the audit port survives a restart)."""

    def __init__(self, stack, token: str) -> None:
        self._channel = grpc.insecure_channel(stack.endpoints[ServiceName.AUDIT].target)
        self._stub = audit_service_pb2_grpc.AuditServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)

    def events(self, collection_id: str, action: str = "") -> list:
        found, token = [], ""
        while True:
            page = self._stub.ListAuditEvents(
                audit_service_pb2.ListAuditEventsRequest(
                    collection_id=collection_id, action=action, page_size=20, page_token=token
                ),
                metadata=self._metadata,
                timeout=30,
            )
            found += page.events
            token = page.next_page_token
            if not token:
                return found

    def verify(self):
        return self._stub.VerifyChain(
            audit_service_pb2.VerifyChainRequest(), metadata=self._metadata, timeout=60
        )

    def close(self) -> None:
        self._channel.close()


def expected_trail() -> list[tuple[str, str, str]]:
    """(action, operation type, step) of every operation event, in order."""
    trail = []
    for kind in ORDER:
        trail.append(("operation.start", kind.value, ""))
        trail += [("operation.step", kind.value, step) for step in STEPS[kind]]
        trail.append(("operation.complete", kind.value, ""))
    return trail


def as_trail(events) -> list[tuple[str, str, str]]:
    return [
        (e.action, e.details["operation_type"], e.details["step"] if "step" in e.details else "")
        for e in events
    ]


def wait_for(audit: AuditReader, collection_id: str, count: int, seconds: float = 120) -> list:
    """The collection's operation events once there are ``count`` of them."""
    deadline = time.monotonic() + seconds
    while True:
        events = audit.events(collection_id, "operation.*")
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.3)


def create(client: Client, name: str, source: str):
    collection = orchestrator_pb2.Collection(
        name=name, description=DESCRIPTION, config=config(HASH_MODEL, 64, 8)
    )
    return client.collections.CreateCollection(
        collection_service_pb2.CreateCollectionRequest(
            collection=collection, sources=[directory(source)], request_id=request_id()
        ),
        metadata=client.metadata,
        timeout=30,
    )


async def stored_rows(dsn: str, collection_id: str) -> list[dict]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f"SELECT * FROM {AUDIT_TABLE} WHERE collection_id = $1 ORDER BY sequence",
            collection_id,
        )
    finally:
        await conn.close()
    return [dict(row) for row in rows]


async def set_details(dsn: str, sequence: int, details: str) -> None:
    """Edit a row behind the append-only trigger's back, as an intruder with
    the table owner's rights would (the trigger is off only in this transaction)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(f"ALTER TABLE {AUDIT_TABLE} DISABLE TRIGGER {APPEND_ONLY}")
            await conn.execute(
                f"UPDATE {AUDIT_TABLE} SET details = $2::jsonb WHERE sequence = $1",
                sequence,
                details,
            )
            await conn.execute(f"ALTER TABLE {AUDIT_TABLE} ENABLE TRIGGER {APPEND_ONLY}")
    finally:
        await conn.close()


def test_collection_life_is_audited_in_order_without_personal_data(stack, client) -> None:
    home = stack.options.roots()[0] / f"audit-{uuid.uuid4().hex[:8]}" / "home" / "alice"
    write_text_corpus(home / "docs", 4, 80)
    (home / "docs" / "bob@example.com.txt").write_text("notes for the audit trail test " * 20)
    write_text_corpus(home / "more", 3, 80, seed=5)
    admin = AuditReader(stack, stack.tokens.clear["admin"])
    try:
        created = create(client, f"audit-{uuid.uuid4().hex[:6]}", str(home / "docs"))
        collection_id = created.collection.id
        client.finish(created.operation.id)
        appended = client.add_source(collection_id, directory(str(home / "more")))
        client.finish(appended.operation.id)
        # Killed only once idle: INDEX's and APPEND's events are all stored.
        so_far = sum(len(STEPS[kind]) + 2 for kind in ORDER[:2])
        assert len(wait_for(admin, collection_id, so_far)) == so_far

        # The sink dies; the REINDEX's events wait in the stream for its return.
        stack.kill(ServiceName.AUDIT)
        try:
            before = client.get(collection_id)
            # Random-word documents rank unstably under another chunking: a low bar.
            lenient = operation_pb2.ValidationThresholds(min_topk_overlap=0.05)
            reindex = client.reindex(collection_id, config(HASH_MODEL, 32, 4), thresholds=lenient)
            client.finish(reindex.id)
        finally:
            stack.start_service(ServiceName.AUDIT)
        client.finish(client.remove_source(collection_id, appended.source.id).id)
        client.finish(client.delete(collection_id).id)

        expected = expected_trail()
        events = wait_for(admin, collection_id, len(expected))
        assert as_trail(events) == expected
        assert [e.sequence for e in events] == sorted(e.sequence for e in events)
        for event in events:
            assert (event.principal_id, event.role) == ("dev-user", principal_pb2.ROLE_USER)
            assert event.owner_id == "dev-user" and event.service == "orchestrator"
            assert event.outcome == audit_pb2.AUDIT_OUTCOME_SUCCESS
        operations = {e.details["operation_type"]: e.operation_id for e in events}
        assert operations["INDEX"] == created.operation.id
        assert operations["APPEND"] == appended.operation.id
        [switch] = admin.events(collection_id, "reindex.switch")
        assert switch.operation_id == operations["REINDEX"]
        assert switch.details["from_generation"] == before.generation
        # The user sees their own collection's trail too.
        mine = AuditReader(stack, stack.tokens.clear["user"])
        try:
            assert as_trail(mine.events(collection_id, "operation.*")) == expected
        finally:
            mine.close()

        rows = asyncio.run(stored_rows(stack.postgres_dsn, collection_id))
        assert len(rows) >= len(expected) + 1  # and the switch's, and cleanup's
        for row in rows:
            text = json.dumps(row, default=str)
            for personal in PERSONAL:
                assert personal not in text, (personal, row)
            assert "api_token" not in _keys(json.loads(row["details"]))
        index_start = json.loads(rows[0]["details"])
        assert index_start["description"] == "kept by <email>, api_token=<redacted>"
        assert index_start["sources"][0]["path"].startswith(("<tmp>", "<home>"))

        # Tampering: one edited row is the first broken link.
        assert admin.verify().ok
        target = next(r for r in rows if r["action"] == "operation.start")
        original = target["details"]
        tampered = json.dumps({**json.loads(original), "collection_name": "nothing to see"})
        asyncio.run(set_details(stack.postgres_dsn, target["sequence"], tampered))
        try:
            report = admin.verify()
            assert not report.ok
            assert report.first_broken_sequence == target["sequence"]
            assert report.failure == "hash_mismatch"
        finally:
            asyncio.run(set_details(stack.postgres_dsn, target["sequence"], original))
        assert admin.verify().ok  # restored for the tests after this one
    finally:
        if ServiceName.AUDIT not in stack.endpoints:
            stack.start_service(ServiceName.AUDIT)
        admin.close()


def _keys(value) -> set[str]:
    """Every key of a JSON value, at any depth."""
    if isinstance(value, dict):
        return set(value) | {k for item in value.values() for k in _keys(item)}
    if isinstance(value, list):
        return {k for item in value for k in _keys(item)}
    return set()
