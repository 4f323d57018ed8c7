"""The orchestrator's repository against a real Postgres: every change is one
transaction with its outbox rows, retries are idempotent, one operation runs
per collection, and the failure mapping holds when ``apply`` ends operations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from kit.db.migrations import load_migrations, migrate
from kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from kit.events import new_envelope
from orchestrator.adapters.records import (
    CollectionRecord,
    OperationRecord,
    SourceSpec,
    request_hash,
)
from orchestrator.adapters.repository import OrchestratorRepository
from orchestrator.domain.operations import (
    STEPS,
    CollectionStatus,
    DomainEvent,
    ErrorType,
    OperationStatus,
    OperationType,
)
from vectorops.events.v1 import commands_pb2

SCHEMA = "orchestrator"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
CONFIG = {"embedding_model": "hash-384", "dimension": 384, "chunk_size": 256, "chunk_overlap": 32}


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=8)
    async with pool.acquire() as conn:
        await migrate(conn, SCHEMA, load_migrations("kit") + load_migrations("orchestrator"))
    yield pool
    await pool.close()


@pytest.fixture
def repo(pool: asyncpg.Pool) -> OrchestratorRepository:
    return OrchestratorRepository(pool, SCHEMA)


def command(collection: CollectionRecord, op: OperationRecord) -> list[tuple[str, object]]:
    """The outbox rows a create writes: one index command naming the new ids."""
    payload = commands_pb2.IndexCommand(operation_id=op.id)
    envelope = new_envelope(
        payload, producer="test", operation_id=op.id, collection_id=collection.id
    )
    return [("vo.cmd.indexer.index", envelope)]


def no_events(_events: list[DomainEvent]) -> list:
    return []


async def create(
    repo: OrchestratorRepository, owner: str = "alice", name: str = "docs", request_id: str = ""
) -> tuple[CollectionRecord, OperationRecord, bool]:
    request_id = request_id or f"req-{owner}-{name}"
    return await repo.create_collection_with_operation(
        owner,
        name,
        CONFIG,
        request_id,
        request_hash("create", owner, name),
        [SourceSpec("directory", "/data/a", ("*.md",))],
        T0,
        command,
    )


async def finish(repo: OrchestratorRepository, op_id: str, now: datetime = T0) -> OperationRecord:
    """Run every step of an operation to completion through ``apply``."""
    record = await repo.get_operation(op_id, None)
    for step in STEPS[record.operation.type]:
        record, _ = await repo.apply(
            op_id, lambda op, s=step: op.complete_step(s, {"ok": True}, now), no_events
        )
    return record


async def ready(repo: OrchestratorRepository, owner: str = "alice", name: str = "docs"):
    collection, op, _ = await create(repo, owner, name)
    await finish(repo, op.id)
    return await repo.get_collection(collection.id, owner)


async def count(pool: asyncpg.Pool, table: str) -> int:
    return await pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.{table}")


async def announced(pool: asyncpg.Pool) -> int:
    """Outbox rows other than audit records (each change also writes those)."""
    return await pool.fetchval(
        f"SELECT count(*) FROM {SCHEMA}.outbox WHERE subject NOT LIKE 'vo.audit.%'"
    )


async def test_create_writes_collection_sources_operation_outbox_and_key(repo, pool) -> None:
    collection, op, created = await create(repo)
    assert created
    assert collection.status is CollectionStatus.PENDING
    assert collection.active_operation_id == op.id
    assert collection.alias_name and collection.physical_collection != collection.alias_name
    assert [s.path for s in collection.sources] == ["/data/a"]
    assert collection.sources[0].include == ("*.md",)
    assert op.operation.type is OperationType.INDEX
    assert op.operation.status is OperationStatus.PENDING
    assert op.config == CONFIG and op.owner_id == "alice"
    assert await announced(pool) == 1
    assert await count(pool, "idempotency_keys") == 1


@pytest.mark.parametrize("failure", ["callback", "constraint"])
async def test_create_is_all_or_nothing(repo, pool, failure: str) -> None:
    def raising(collection: CollectionRecord, op: OperationRecord) -> list:
        raise RuntimeError("outbox callback failed")

    def duplicated(collection: CollectionRecord, op: OperationRecord) -> list:
        return command(collection, op) * 2  # same event id twice: outbox unique violation

    expected = RuntimeError if failure == "callback" else asyncpg.UniqueViolationError
    with pytest.raises(expected):
        await repo.create_collection_with_operation(
            "alice",
            "docs",
            CONFIG,
            "req-1",
            "h",
            [SourceSpec("directory", "/data/a")],
            T0,
            raising if failure == "callback" else duplicated,
        )
    for table in ("collections", "sources", "operations", "outbox", "idempotency_keys"):
        assert await count(pool, table) == 0, table
    # Nothing half-written blocks the retry either.
    _, _, created = await repo.create_collection_with_operation(
        "alice", "docs", CONFIG, "req-1", "h", [], T0, command
    )
    assert created


async def test_retry_with_same_request_id_returns_first_result(repo, pool) -> None:
    first_c, first_op, _ = await create(repo, request_id="r1")
    again_c, again_op, created = await create(repo, request_id="r1")
    assert not created
    assert (again_c.id, again_op.id) == (first_c.id, first_op.id)
    assert await announced(pool) == 1
    assert await count(pool, "operations") == 1


async def test_concurrent_retries_create_once(repo, pool) -> None:
    results = await asyncio.gather(*(create(repo, request_id="r1") for _ in range(4)))
    assert sorted(created for *_, created in results) == [False, False, False, True]
    assert len({op.id for _, op, _ in results}) == 1
    assert await announced(pool) == 1


async def test_request_id_reused_for_another_request(repo, pool) -> None:
    await create(repo, name="docs", request_id="r1")
    with pytest.raises(InvalidArgument) as caught:
        await create(repo, name="other", request_id="r1")
    assert caught.value.reason == "REQUEST_ID_REUSED"
    assert await count(pool, "collections") == 1


async def test_name_taken_per_owner_free_for_another(repo, pool) -> None:
    collection, _, _ = await create(repo, "alice", "docs", request_id="r1")
    with pytest.raises(AlreadyExists) as caught:
        await create(repo, "alice", "docs", request_id="r2")
    assert caught.value.reason == "COLLECTION_NAME_TAKEN"
    assert caught.value.metadata == {"name": "docs", "collection_id": collection.id}
    _, _, created = await create(repo, "bob", "docs", request_id="r1")
    assert created
    assert await announced(pool) == 2
    assert await count(pool, "idempotency_keys") == 2


async def test_concurrent_start_operation_one_wins(repo, pool) -> None:
    collection = await ready(repo)
    assert collection.status is CollectionStatus.READY and collection.active_operation_id is None

    async def start(n: int):
        return await repo.start_operation(
            collection.id,
            "alice",
            OperationType.APPEND,
            None,
            f"append-{n}",
            request_hash("append", n),
            T0,
            [],
            new_source=SourceSpec("directory", f"/data/b{n}"),
        )

    results = await asyncio.gather(start(1), start(2), return_exceptions=True)
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, BaseException)]
    assert len(wins) == 1 and len(losses) == 1
    _, winner, _ = wins[0]
    assert isinstance(losses[0], FailedPrecondition)
    assert losses[0].reason == "OPERATION_IN_PROGRESS"
    assert losses[0].metadata["active_operation_id"] == winner.id
    after = await repo.get_collection(collection.id, "alice")
    assert after.status is CollectionStatus.PROCESSING
    assert after.active_operation_id == winner.id
    assert winner.operation.collection_status_before is CollectionStatus.READY
    assert winner.source_id in {s.id for s in after.sources}
    assert len(after.sources) == 2  # the loser's source was rolled back with it


async def test_failed_index_leaves_error_and_no_active_operation(repo) -> None:
    collection, op, _ = await create(repo)
    record, events = await repo.apply(
        op.id,
        lambda o: o.fail(ErrorType.HANDLER_ERROR, "boom in /home/alice/x", T0 + timedelta(1)),
        no_events,
    )
    assert record.operation.status is OperationStatus.FAILED and events
    after = await repo.get_collection(collection.id, "alice")
    assert after.status is CollectionStatus.ERROR
    assert after.active_operation_id is None
    assert "/home/alice" not in after.status_message
    # A late step event for the failed operation changes nothing.
    again, events = await repo.apply(
        op.id, lambda o: o.complete_step("create_collection", {}, T0), no_events
    )
    assert events == [] and again.operation.status is OperationStatus.FAILED


async def test_cancelled_append_that_changed_nothing_restores_ready(repo, pool) -> None:
    collection = await ready(repo)
    _, op, _ = await repo.start_operation(
        collection.id, "alice", OperationType.APPEND, None, "a1", "h", T0, []
    )
    await repo.apply(op.id, lambda o: o.begin_step("scan", T0), no_events)
    assert (await repo.get_collection(collection.id, "alice")).status is CollectionStatus.PROCESSING

    def outbox_for(events: list[DomainEvent]) -> list:
        return [("vo.test.cancelled", new_envelope(commands_pb2.IndexCommand(), producer="t"))]

    record, _ = await repo.apply(op.id, lambda o: o.cancel(T0), outbox_for)
    assert record.operation.status is OperationStatus.CANCELLED
    after = await repo.get_collection(collection.id, "alice")
    assert after.status is CollectionStatus.READY and after.active_operation_id is None
    assert await announced(pool) == 2  # the create's command and the cancel's event


async def test_completed_delete_removes_the_collection(repo) -> None:
    collection = await ready(repo)
    _, op, _ = await repo.start_operation(
        collection.id, "alice", OperationType.DELETE, None, "d1", "h", T0, []
    )
    assert (await repo.get_collection(collection.id, "alice")).status is CollectionStatus.DELETING
    with pytest.raises(FailedPrecondition) as caught:
        await repo.start_operation(
            collection.id, "alice", OperationType.APPEND, None, "a1", "h", T0, []
        )
    assert caught.value.reason == "COLLECTION_DELETING"
    done = await finish(repo, op.id)
    assert done.operation.status is OperationStatus.COMPLETED
    with pytest.raises(NotFound) as gone:
        await repo.get_collection(collection.id, "alice")
    assert gone.value.reason == "COLLECTION_NOT_FOUND"
    # The DELETE operation outlives its collection: clients poll it.
    assert (await repo.get_operation(op.id, "alice")).operation.finished
    # The name is free again.
    _, _, created = await create(repo, request_id="again")
    assert created


async def test_another_owner_sees_not_found(repo) -> None:
    collection, op, _ = await create(repo)
    for call, reason in (
        (repo.get_collection(collection.id, "mallory"), "COLLECTION_NOT_FOUND"),
        (repo.get_operation(op.id, "mallory"), "OPERATION_NOT_FOUND"),
        (
            repo.start_operation(
                collection.id, "mallory", OperationType.DELETE, None, "x", "h", T0, []
            ),
            "COLLECTION_NOT_FOUND",
        ),
        (repo.get_collection("not-a-uuid", "alice"), "COLLECTION_NOT_FOUND"),
    ):
        with pytest.raises(NotFound) as caught:
            await call
        assert caught.value.reason == reason
    assert (await repo.get_collection(collection.id, None)).id == collection.id  # admin
    assert (await repo.list_collections("mallory", 10))[0] == []


async def test_pagination_covers_every_row_once(repo) -> None:
    names = [f"c{i:02d}" for i in range(7)]
    for name in names:
        await create(repo, "alice", name)
    await create(repo, "bob", "theirs")
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page, token = await repo.list_collections("alice", 3, token)
        seen += [c.name for c in page]
        pages += 1
        if not token:
            break
    assert sorted(seen) == names and len(seen) == len(set(seen)) and pages == 3

    ops: list[str] = []
    token = ""
    while True:
        page, token = await repo.list_operations("alice", 2, token, types=[OperationType.INDEX])
        ops += [o.id for o in page]
        if not token:
            break
    assert len(ops) == len(set(ops)) == 7
    with pytest.raises(InvalidArgument) as caught:
        first, token = await repo.list_operations("alice", 2)
        await repo.list_operations("alice", 2, token, statuses=[OperationStatus.FAILED])
    assert caught.value.reason == "INVALID_PAGE_TOKEN"


async def test_stuck_operations(repo) -> None:
    _, old, _ = await create(repo, name="old")
    await repo.apply(old.id, lambda o: o.begin_step("create_collection", T0), no_events)
    later = T0 + timedelta(hours=1)
    _, fresh, _ = await repo.create_collection_with_operation(
        "alice", "fresh", CONFIG, "r-fresh", "h", [], later, command
    )
    _, done, _ = await create(repo, name="done")
    await finish(repo, done.id)
    stuck = await repo.stuck_operations(T0 + timedelta(minutes=30))
    assert [op.id for op in stuck] == [old.id]
    # The reaper fails it through apply, so the failure mapping holds.
    await repo.apply(old.id, lambda o: o.fail(ErrorType.STUCK, "silent", later), no_events)
    collection = await repo.get_collection(stuck[0].collection_id, "alice")
    assert collection.status is CollectionStatus.ERROR and collection.active_operation_id is None
    assert await repo.stuck_operations(T0 + timedelta(minutes=30)) == []
    assert fresh.id not in {op.id for op in await repo.stuck_operations(later)}
