"""OperationService and google.longrunning.Operations against the real
orchestrator in-process (real Postgres, real nats-server): reading and
scoping, cancelling through the domain (status mapping, cancel command),
WatchOperation following changes made through ``repository.apply`` to a
terminal state, and the LRO mapping of every outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2 as lro
from google.protobuf import duration_pb2, empty_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2
from orchestrator_harness import (
    ADMIN,
    ALICE,
    BOB,
    Orchestrator,
    collection,
    directory_source,
    eventually,
    refused,
    running_orchestrator,
)

from kit.bus import subjects
from kit.events import unpack
from kit.stack.nats import NatsServer
from orchestrator.domain.operations import ErrorType, Progress
from orchestrator.watch import APPLICATION_NAME
from vectorops.common.v1 import operation_pb2
from vectorops.events.v1 import commands_pb2
from vectorops.orchestrator.v1 import collection_service_pb2 as collections_api
from vectorops.orchestrator.v1 import operation_service_pb2 as api
from vectorops.orchestrator.v1 import orchestrator_pb2

T0 = datetime(2024, 5, 1, tzinfo=UTC)
STATUS = operation_pb2.OperationStatus


@pytest.fixture(scope="module")
def private_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server of this module's own: the commands published here must not
    reach the session stack's indexer."""
    server = NatsServer(tmp_path_factory.mktemp("nats"), port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def orch(
    database: str, private_nats: NatsServer, tmp_path: Path
) -> AsyncIterator[Orchestrator]:
    # A long poll, so a watch that sees a change promptly proves the notification.
    async with running_orchestrator(
        database,
        private_nats.url,
        tmp_path,
        orchestrator_watch_poll_seconds=60,
        orchestrator_watch_min_interval_seconds=0,
        orchestrator_wait_max_seconds=5,
    ) as running:
        yield running


async def create(orch: Orchestrator, name: str = "docs", metadata=ALICE, sources=()):
    request = collections_api.CreateCollectionRequest(
        collection=collection(name), sources=list(sources), request_id=f"create-{name}"
    )
    return await orch.collections.CreateCollection(request, metadata=metadata)


async def append(orch: Orchestrator, collection_id: str, folder: str = "more") -> str:
    """A READY collection's new APPEND operation id."""
    request = collections_api.AddSourceRequest(
        collection_id=collection_id,
        source=directory_source(orch.directory(folder)),
        request_id=f"add-{folder}",
    )
    return (await orch.collections.AddSource(request, metadata=ALICE)).operation.id


async def status_of(orch: Orchestrator, collection_id: str) -> str:
    return (await orch.app.repository.get_collection(collection_id, None)).status.value


def cancel(
    operation_id: str, request_id: str = "c", reason: str = ""
) -> api.CancelOperationRequest:
    return api.CancelOperationRequest(
        operation_id=operation_id, request_id=request_id, reason=reason
    )


# --- GetOperation / ListOperations -------------------------------------------------------


async def test_get_operation_is_scoped_to_the_owner(orch) -> None:
    created = await create(orch)
    get = api.GetOperationRequest(operation_id=created.operation.id)
    op = (await orch.operations.GetOperation(get, metadata=ALICE)).operation
    assert op == created.operation
    refusal = await refused(orch.operations.GetOperation(get, metadata=BOB))
    assert refusal.code is grpc.StatusCode.NOT_FOUND
    assert refusal.metadata == {"operation_id": created.operation.id}
    assert refusal.reason == "OPERATION_NOT_FOUND"
    assert (await orch.operations.GetOperation(get, metadata=ADMIN)).operation.id == op.id
    missing = await refused(orch.operations.GetOperation(api.GetOperationRequest(), metadata=ALICE))
    assert (missing.reason, missing.metadata) == ("INVALID_ARGUMENT", {"field": "operation_id"})


async def test_operation_carries_progress_steps_times_and_resources(orch) -> None:
    created = await create(orch)
    op_id = created.operation.id
    await orch.apply(op_id, lambda op: op.complete_step("create_collection", {"ok": 1}, T0))
    await orch.apply(op_id, lambda op: op.begin_step("ingest", T0 + timedelta(seconds=1)))
    progress = Progress(documents_total=10, documents_done=4, vectors_written=40, percent=40.0)
    await orch.apply(op_id, lambda op: op.record_progress(progress, T0 + timedelta(seconds=2)))
    op = (
        await orch.operations.GetOperation(
            api.GetOperationRequest(operation_id=op_id), metadata=ALICE
        )
    ).operation
    assert op.status == STATUS.Value("OPERATION_STATUS_PROCESSING")
    assert (op.current_step, op.last_checkpoint) == ("ingest", "create_collection")
    assert (op.progress.documents_done, op.progress.vectors_written) == (4, 40)
    assert (op.progress.percent, op.progress.step) == (40.0, "ingest")
    assert op.start_time.ToDatetime(tzinfo=UTC) == T0
    assert op.update_time.ToDatetime(tzinfo=UTC) == T0 + timedelta(seconds=2)
    assert not op.HasField("end_time") and not op.done
    assert op.config.embedding_model == "vectorops/hash-bow-384"


async def test_list_operations_filters_and_pages(orch) -> None:
    first = await create(orch, "a")
    await orch.finish(first.operation.id, T0)
    appended = await append(orch, first.collection.id)
    second = await create(orch, "b")
    await create(orch, "theirs", metadata=BOB)

    async def ids(metadata=ALICE, **fields) -> list[str]:
        found, token = [], ""
        while True:
            page = await orch.operations.ListOperations(
                api.ListOperationsRequest(page_size=1, page_token=token, **fields),
                metadata=metadata,
            )
            found += [op.id for op in page.operations]
            token = page.next_page_token
            if not token:
                return found

    assert await ids() == [second.operation.id, appended, first.operation.id]  # newest first
    assert await ids(collection_id=first.collection.id) == [appended, first.operation.id]
    assert await ids(types=[operation_pb2.OPERATION_TYPE_APPEND]) == [appended]
    assert await ids(statuses=[STATUS.Value("OPERATION_STATUS_COMPLETED")]) == [first.operation.id]
    assert await ids(collection_id=first.collection.id, metadata=BOB) == []
    assert len(await ids(metadata=ADMIN)) == 4

    created_at = (await orch.app.repository.get_operation(appended, None)).operation.created_at
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(created_at)
    assert await ids(create_time_after=stamp) == [second.operation.id, appended]
    assert await ids(create_time_before=stamp) == [first.operation.id]

    page = await orch.operations.ListOperations(
        api.ListOperationsRequest(page_size=1), metadata=ALICE
    )
    other = api.ListOperationsRequest(
        page_size=1, page_token=page.next_page_token, types=[operation_pb2.OPERATION_TYPE_INDEX]
    )
    refusal = await refused(orch.operations.ListOperations(other, metadata=ALICE))
    assert refusal.reason == "INVALID_PAGE_TOKEN"


# --- CancelOperation ------------------------------------------------------------------------


async def test_cancel_of_an_append_that_changed_nothing_restores_the_collection(orch) -> None:
    created = await create(orch)
    await orch.finish(created.operation.id, T0)
    op_id = await append(orch, created.collection.id)
    await orch.apply(op_id, lambda op: op.begin_step("scan", T0))  # scanning only reads
    assert await status_of(orch, created.collection.id) == "PROCESSING"

    cancelled = await orch.operations.CancelOperation(
        cancel(op_id, reason="mistake, see /home/alice/notes"), metadata=ALICE
    )
    op = cancelled.operation
    assert op.status == STATUS.Value("OPERATION_STATUS_CANCELLED") and op.done
    assert (op.error.type, op.error.step) == ("CANCELLED", "scan")
    assert await status_of(orch, created.collection.id) == "READY"
    [envelope] = await orch.outbox(subjects.CANCEL)
    command = unpack(envelope, commands_pb2.CancelOperationCommand)
    assert (command.operation_id, command.collection_id) == (op_id, created.collection.id)
    assert "/home/alice" not in command.reason and "mistake" in command.reason
    assert (envelope.owner_id, envelope.actor.principal_id) == ("alice", "alice")

    # A repeat changes and sends nothing.
    again = await orch.operations.CancelOperation(cancel(op_id, "c2"), metadata=ALICE)
    assert again.operation == op
    assert len(await orch.outbox(subjects.CANCEL)) == 1


async def test_cancel_after_changes_takes_the_failure_mapping(orch) -> None:
    created = await create(orch)
    await orch.finish(created.operation.id, T0)
    op_id = await append(orch, created.collection.id)
    await orch.apply(op_id, lambda op: op.complete_step("scan", {"files": 2}, T0))
    await orch.apply(op_id, lambda op: op.begin_step("ingest", T0))  # writes points
    await orch.operations.CancelOperation(cancel(op_id), metadata=ALICE)
    collection_now = await orch.app.repository.get_collection(created.collection.id, None)
    assert collection_now.status.value == "PARTIALLY_READY"
    assert collection_now.active_operation_id is None


async def test_cancel_of_a_pending_index_leaves_the_collection_pending(orch) -> None:
    created = await create(orch)
    await orch.operations.CancelOperation(cancel(created.operation.id), metadata=ALICE)
    assert await status_of(orch, created.collection.id) == "PENDING"
    # The collection is idle again: another operation may start.
    await append(orch, created.collection.id)


async def test_finished_operations_are_not_cancellable(orch) -> None:
    created = await create(orch)
    await orch.finish(created.operation.id, T0)
    refusal = await refused(
        orch.operations.CancelOperation(cancel(created.operation.id), metadata=ALICE)
    )
    assert refusal.code is grpc.StatusCode.FAILED_PRECONDITION
    assert refusal.reason == "OPERATION_NOT_CANCELLABLE"
    assert refusal.metadata == {"operation_id": created.operation.id, "status": "COMPLETED"}
    assert await orch.outbox(subjects.CANCEL) == []


async def test_cancel_needs_a_request_id_and_the_owner(orch) -> None:
    created = await create(orch)
    refusal = await refused(
        orch.operations.CancelOperation(cancel(created.operation.id, ""), metadata=ALICE)
    )
    assert refusal.metadata == {"field": "request_id"}
    refusal = await refused(
        orch.operations.CancelOperation(cancel(created.operation.id), metadata=BOB)
    )
    assert refusal.reason == "OPERATION_NOT_FOUND"
    assert await status_of(orch, created.collection.id) == "PENDING"
    assert await orch.outbox(subjects.CANCEL) == []


# --- WatchOperation ---------------------------------------------------------------------------


async def next_message(stream, seconds: float = 10.0):
    return await asyncio.wait_for(stream.read(), timeout=seconds)


async def test_watch_streams_every_change_and_ends_at_a_terminal_state(orch) -> None:
    created = await create(orch)
    op_id = created.operation.id
    stream = orch.operations.WatchOperation(
        api.WatchOperationRequest(operation_id=op_id), metadata=ALICE
    )
    first = (await next_message(stream)).operation
    assert first.status == STATUS.Value("OPERATION_STATUS_PENDING")

    await orch.apply(op_id, lambda op: op.begin_step("create_collection", T0))
    started = (await next_message(stream)).operation
    assert started.status == STATUS.Value("OPERATION_STATUS_PROCESSING")
    assert started.current_step == "create_collection"

    progress = Progress(documents_total=3, documents_done=1, percent=33.0)
    await orch.apply(op_id, lambda op: op.record_progress(progress, T0))
    assert (await next_message(stream)).operation.progress.documents_done == 1

    await orch.finish(op_id, T0)
    received = [(await next_message(stream)).operation]
    while not received[-1].done:
        received.append((await next_message(stream)).operation)
    assert received[-1].status == STATUS.Value("OPERATION_STATUS_COMPLETED")
    assert await next_message(stream) is grpc.aio.EOF
    assert await stream.code() is grpc.StatusCode.OK


async def test_watch_of_a_finished_operation_sends_it_once_and_ends(orch) -> None:
    created = await create(orch)
    await orch.operations.CancelOperation(cancel(created.operation.id), metadata=ALICE)
    stream = orch.operations.WatchOperation(
        api.WatchOperationRequest(operation_id=created.operation.id), metadata=ALICE
    )
    messages = [message async for message in stream]
    assert [m.operation.status for m in messages] == [STATUS.Value("OPERATION_STATUS_CANCELLED")]


async def test_watch_refuses_another_owners_operation(orch) -> None:
    created = await create(orch)
    stream = orch.operations.WatchOperation(
        api.WatchOperationRequest(operation_id=created.operation.id), metadata=BOB
    )

    async def drain():
        return [message async for message in stream]

    refusal = await refused(drain())
    assert refusal.reason == "OPERATION_NOT_FOUND"
    assert orch.app.watcher.waiting == 0


async def test_a_cancelled_watch_stops_waiting(orch) -> None:
    created = await create(orch)
    stream = orch.operations.WatchOperation(
        api.WatchOperationRequest(operation_id=created.operation.id), metadata=ALICE
    )
    await next_message(stream)
    assert orch.app.watcher.waiting == 1
    stream.cancel()

    async def released():
        return orch.app.watcher.waiting == 0

    await eventually(released)


async def test_watch_survives_a_dropped_listen_connection(orch) -> None:
    created = await create(orch)
    op_id = created.operation.id
    stream = orch.operations.WatchOperation(
        api.WatchOperationRequest(operation_id=op_id), metadata=ALICE
    )
    await next_message(stream)
    killed = await orch.pool.fetchval(
        # This test's database only: the session's stack shares the server.
        """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
           WHERE application_name = $1 AND datname = current_database()""",
        APPLICATION_NAME,
    )
    assert killed == 1

    async def reconnected():
        return orch.app.watcher.connections == 2

    await eventually(reconnected, seconds=15)
    await orch.apply(op_id, lambda op: op.begin_step("create_collection", T0))
    # The reconnect re-reads (nothing new, so nothing is sent), then the new
    # LISTEN hears this change well before the 60 s poll would.
    changed = (await next_message(stream)).operation
    assert changed.current_step == "create_collection"
    stream.cancel()


# --- google.longrunning.Operations --------------------------------------------------------------


def unpack_any(holder, kind):
    found = kind()
    assert holder.Unpack(found), f"not a {kind.DESCRIPTOR.full_name}"
    return found


async def test_longrunning_maps_a_running_and_a_completed_operation(orch) -> None:
    created = await create(orch)
    name = f"operations/{created.operation.id}"
    running = await orch.longrunning.GetOperation(
        lro.GetOperationRequest(name=name), metadata=ALICE
    )
    assert running.name == name and not running.done
    assert unpack_any(running.metadata, orchestrator_pb2.Operation).id == created.operation.id
    assert running.WhichOneof("result") is None

    await orch.finish(created.operation.id, T0)
    done = await orch.longrunning.GetOperation(lro.GetOperationRequest(name=name), metadata=ALICE)
    assert done.done
    result = unpack_any(done.response, orchestrator_pb2.Collection)
    assert result.id == created.collection.id
    assert result.status == operation_pb2.COLLECTION_STATUS_READY

    refusal = await refused(
        orch.longrunning.GetOperation(lro.GetOperationRequest(name=name), metadata=BOB)
    )
    assert refusal.reason == "OPERATION_NOT_FOUND"
    refusal = await refused(
        orch.longrunning.GetOperation(
            lro.GetOperationRequest(name=created.operation.id), metadata=ALICE
        )
    )
    assert (refusal.reason, refusal.metadata) == ("INVALID_ARGUMENT", {"field": "name"})


async def test_longrunning_maps_failure_cancel_and_delete(orch) -> None:
    failed = await create(orch, "failed")
    await orch.apply(
        failed.operation.id,
        lambda op: op.fail(
            ErrorType.EMBEDDER_UNAVAILABLE, "triton is down", T0, "create_collection"
        ),
    )
    cancelled = await create(orch, "cancelled")
    await orch.longrunning.CancelOperation(
        lro.CancelOperationRequest(name=f"operations/{cancelled.operation.id}"), metadata=ALICE
    )
    deleted = await create(orch, "deleted")
    await orch.finish(deleted.operation.id, T0)
    deleting = await orch.collections.DeleteCollection(
        collections_api.DeleteCollectionRequest(
            collection_id=deleted.collection.id, request_id="d"
        ),
        metadata=ALICE,
    )
    await orch.finish(deleting.operation.id, T0)

    async def get(op_id: str) -> lro.Operation:
        request = lro.GetOperationRequest(name=f"operations/{op_id}")
        return await orch.longrunning.GetOperation(request, metadata=ALICE)

    failure = await get(failed.operation.id)
    assert failure.done and failure.error.code == code_pb2.UNAVAILABLE
    assert failure.error.message == "triton is down"
    info = unpack_any(failure.error.details[0], error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("EMBEDDER_UNAVAILABLE", "vectorops.dev")
    assert info.metadata["operation_id"] == failed.operation.id

    stopped = await get(cancelled.operation.id)
    assert stopped.done and stopped.error.code == code_pb2.CANCELLED
    assert unpack_any(stopped.error.details[0], error_details_pb2.ErrorInfo).reason == "CANCELLED"
    assert unpack_any(stopped.metadata, orchestrator_pb2.Operation).status == STATUS.Value(
        "OPERATION_STATUS_CANCELLED"
    )

    gone = await get(deleting.operation.id)
    assert gone.done
    unpack_any(gone.response, empty_pb2.Empty)


async def test_longrunning_list_takes_the_documented_filter(orch) -> None:
    first = await create(orch, "a")
    await orch.finish(first.operation.id, T0)
    appended = await append(orch, first.collection.id)
    await create(orch, "b")

    async def names(text: str) -> list[str]:
        request = lro.ListOperationsRequest(name="operations", filter=text)
        listed = await orch.longrunning.ListOperations(request, metadata=ALICE)
        return [op.name for op in listed.operations]

    assert len(await names("")) == 3
    assert await names(f'collection_id="{first.collection.id}" AND type=APPEND') == [
        f"operations/{appended}"
    ]
    assert await names("status=COMPLETED") == [f"operations/{first.operation.id}"]
    assert await names("type=REINDEX AND status=PROCESSING") == []
    for bad in ("type=SOMETHING", "colour=red", "type=INDEX OR type=APPEND"):
        refusal = await refused(
            orch.longrunning.ListOperations(lro.ListOperationsRequest(filter=bad), metadata=ALICE)
        )
        assert (refusal.code, refusal.metadata) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            {"field": "filter"},
        )


async def test_longrunning_delete_is_unimplemented(orch) -> None:
    created = await create(orch)
    request = lro.DeleteOperationRequest(name=f"operations/{created.operation.id}")
    refusal = await refused(orch.longrunning.DeleteOperation(request, metadata=ALICE))
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.UNIMPLEMENTED, "NOT_IMPLEMENTED")
    assert refusal.metadata == {"method": "google.longrunning.Operations/DeleteOperation"}


async def test_longrunning_wait_returns_at_the_end_or_the_timeout(orch) -> None:
    created = await create(orch)
    name = f"operations/{created.operation.id}"
    short = lro.WaitOperationRequest(name=name, timeout=duration_pb2.Duration(nanos=200_000_000))
    timed_out = await orch.longrunning.WaitOperation(short, metadata=ALICE)
    assert not timed_out.done

    long = lro.WaitOperationRequest(name=name, timeout=duration_pb2.Duration(seconds=30))
    waiting = asyncio.ensure_future(orch.longrunning.WaitOperation(long, metadata=ALICE))

    async def listening():
        return orch.app.watcher.waiting == 1

    await eventually(listening)
    assert not waiting.done()
    await orch.finish(created.operation.id, T0)
    # Woken by the change, well before the server's 5 s cap on any wait.
    finished = await asyncio.wait_for(waiting, timeout=3)
    assert finished.done and finished.HasField("response")
