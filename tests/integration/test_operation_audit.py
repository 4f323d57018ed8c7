"""The audit trail of operations in the orchestrator's outbox, against a real
Postgres: every state change writes its ``AuditRecord`` row in its own
transaction (start, each applied checkpoint, complete, fail, cancel), with the
requester as "who", sanitised details, and an event id fixed per (operation,
transition) so a redelivered step audits nothing twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from google.protobuf import json_format

from kit.audit_records import audit_event_id
from kit.db.migrations import load_migrations, migrate
from kit.events import parse_envelope, unpack
from orchestrator.adapters.records import SourceSpec, request_hash
from orchestrator.adapters.repository import OrchestratorRepository
from orchestrator.domain.operations import STEPS, ErrorType, OperationType
from vectorops.common.v1 import audit_pb2, principal_pb2
from vectorops.events.v1 import audit_record_pb2

SCHEMA = "orchestrator"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
CONFIG = {"embedding_model": "hash-384", "dimension": 384, "chunk_size": 256, "chunk_overlap": 32}
SOURCE = "/home/alice/docs"
DESCRIPTION = "mail bob@example.com; api_token=hunter2"


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn, SCHEMA, load_migrations("kit") + load_migrations("orchestrator"))
    yield pool
    await pool.close()


@pytest.fixture
def repo(pool: asyncpg.Pool) -> OrchestratorRepository:
    return OrchestratorRepository(pool, SCHEMA)


def nothing(*_args) -> list:
    return []


async def audited(pool: asyncpg.Pool) -> list:
    """(envelope, record) of every audit row in the outbox, in write order."""
    rows = await pool.fetch(
        f"SELECT payload FROM {SCHEMA}.outbox WHERE subject LIKE 'vo.audit.%' ORDER BY id"
    )
    envelopes = [parse_envelope(row["payload"]) for row in rows]
    return [(e, unpack(e, audit_record_pb2.AuditRecord)) for e in envelopes]


async def create(repo: OrchestratorRepository, created_by: str = "alice"):
    collection, op, _ = await repo.create_collection_with_operation(
        "alice",
        "docs",
        CONFIG,
        "req-1",
        request_hash("create"),
        [SourceSpec("directory", SOURCE)],
        T0,
        nothing,
        description=DESCRIPTION,
        created_by=created_by,
    )
    return collection, op


async def test_index_run_audits_start_each_step_and_completion_once(repo, pool) -> None:
    collection, op = await create(repo)
    for step in STEPS[OperationType.INDEX]:
        checkpoint = {"documents_done": 3.0, "source": f"{SOURCE}/x.txt"}
        await repo.apply(op.id, lambda o, s=step, c=checkpoint: o.complete_step(s, c, T0), nothing)
        # A redelivered step event: the domain ignores it, and nothing is audited twice.
        await repo.apply(op.id, lambda o, s=step, c=checkpoint: o.complete_step(s, c, T0), nothing)

    trail = await audited(pool)
    steps = [(r.action, r.details["step"] if "step" in r.details else "") for _, r in trail]
    assert steps == [
        ("operation.start", ""),
        ("operation.step", "create_collection"),
        ("operation.step", "ingest"),
        ("operation.step", "finalize"),
        ("operation.complete", ""),
    ]
    keys = [("operation.start", ""), *(("operation.step", s) for s in STEPS[OperationType.INDEX])]
    keys.append(("operation.complete", ""))
    assert [e.event_id for e, _ in trail] == [audit_event_id(op.id, a, k) for a, k in keys]
    for envelope, record in trail:
        assert (envelope.operation_id, envelope.collection_id) == (op.id, collection.id)
        assert envelope.owner_id == "alice" and record.request_id == "req-1"
        assert envelope.actor.principal_id == "alice"
        assert envelope.actor.role == principal_pb2.ROLE_USER
        assert record.service == "orchestrator"
        assert record.outcome == audit_pb2.AUDIT_OUTCOME_SUCCESS
        assert record.details["operation_type"] == "INDEX"

    start = json_format.MessageToDict(trail[0][1].details)
    assert start["collection_name"] == "docs" and start["config"] == CONFIG
    assert start["sources"] == [
        {
            "source_id": collection.sources[0].id,
            "kind": "directory",
            "path": "<home>/docs",
            "include": [],
        }
    ]
    assert start["description"] == "mail <email>; api_token=<redacted>"
    step = json_format.MessageToDict(trail[1][1].details)
    assert step["checkpoint"] == {"documents_done": 3.0, "source": "<home>/docs/x.txt"}
    everything = str([json_format.MessageToDict(record) for _, record in trail])
    for personal in ("alice", "bob@example.com", "hunter2"):
        assert personal not in everything


async def test_failure_is_audited_with_outcome_failure_and_a_sanitised_message(repo, pool) -> None:
    _, op = await create(repo)
    await repo.apply(op.id, lambda o: o.begin_step("create_collection", T0), nothing)
    await repo.apply(
        op.id,
        lambda o: o.fail(ErrorType.HANDLER_ERROR, f"cannot read {SOURCE}/a.pdf", T0),
        nothing,
    )
    envelope, record = (await audited(pool))[-1]
    assert record.action == "operation.fail"
    assert record.outcome == audit_pb2.AUDIT_OUTCOME_FAILURE
    assert record.reason == "HANDLER_ERROR"
    details = json_format.MessageToDict(record.details)
    assert details.pop("progress")["documents_done"] == 0
    assert details == {
        "operation_type": "INDEX",
        "error_type": "HANDLER_ERROR",
        "error_message": "cannot read <home>/docs/a.pdf",
        "step": "create_collection",
    }
    assert envelope.event_id == audit_event_id(op.id, "operation.fail", "")


async def test_cancel_by_an_admin_is_audited_with_the_admin_as_who(repo, pool) -> None:
    collection, op = await create(repo)
    for step in STEPS[OperationType.INDEX]:
        await repo.apply(op.id, lambda o, s=step: o.complete_step(s, {}, T0), nothing)
    _, append, _ = await repo.start_operation(
        collection.id,
        None,
        OperationType.APPEND,
        None,
        "req-2",
        request_hash("append"),
        T0 + timedelta(1),
        nothing,
        new_source=SourceSpec("directory", "/Users/carol/notes"),
        created_by="ops-admin",
    )
    await repo.apply(append.id, lambda o: o.cancel(T0 + timedelta(2)), nothing)

    trail = [(e, r) for e, r in await audited(pool) if e.operation_id == append.id]
    assert [r.action for _, r in trail] == ["operation.start", "operation.cancel"]
    for envelope, record in trail:
        assert envelope.actor.principal_id == "ops-admin"
        assert envelope.actor.role == principal_pb2.ROLE_ADMIN
        assert envelope.owner_id == "alice" and record.request_id == "req-2"
    start = json_format.MessageToDict(trail[0][1].details)
    assert start["operation_type"] == "APPEND"
    assert [s["path"] for s in start["sources"]] == ["<home>/notes"]
    assert json_format.MessageToDict(trail[1][1].details) == {
        "operation_type": "APPEND",
        "step": None,
        "changed_anything": False,
    }


async def test_a_rolled_back_start_audits_nothing(repo, pool) -> None:
    def refuse(*_args) -> list:
        raise RuntimeError("outbox callback failed")

    with pytest.raises(RuntimeError):
        await repo.create_collection_with_operation(
            "alice", "docs", CONFIG, "req-1", "h", [], T0, refuse, created_by="alice"
        )
    assert await audited(pool) == []
