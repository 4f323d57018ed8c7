"""The fault matrix: each component of the stack (the five services, nats-server
and Postgres) is SIGKILLed during an APPEND and during a REINDEX, at a chosen
checkpoint, and restarted. Whatever the fault, the operation ends COMPLETED, or
FAILED with a reason, and afterwards:

* the collection is not PROCESSING (READY, or the failure mapping's status);
* every document has exactly the chunks its source gives, each ``chunk_index``
  once in the live collection (read through its alias), none missing, none twice;
* the audit log has the operation's start, each step and its end, in order;
* the resources service holds no reservation for the operation;
* after the (shortened) cleanup delay only the live physical collection is left.

A kill at ``cleanup`` may land once the operation has COMPLETED, while the
deletion it scheduled is still due (the step itself takes milliseconds).
Beside the matrix: an operation that ends while the resources service is down
still has its reservation given back once the service is back.

``make test`` kills each component once during an APPEND and once during a
REINDEX, the REINDEX checkpoint rotating so that all six are covered;
``make soak`` (``VECTOROPS_FAULT_MATRIX=full``) runs the cross product. The
stack is this module's own: it kills Postgres and NATS, which the session's
shared stack must keep. A table of the outcomes is printed at the end; with
``VECTOROPS_FAULT_MATRIX_LOGS=<folder>`` the services' logs are kept there.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
from api import HASH_MODEL, TERMINAL, Client, Resources, config, directory, request_id
from corpus import write_text_corpus
from terminal_tables import add_row

from indexer.adapters.edge_store import EdgeVectorStore
from indexer.adapters.tokenizers import tokenizer_for
from indexer.domain.chunking import chunk
from indexer.domain.reindex_plan import physical_base
from indexer.extraction import extract
from kit.config import ServiceName
from kit.operation_protocol import STEPS, OperationType
from vectorops.audit.v1 import audit_service_pb2
from vectorops.common.v1 import operation_pb2
from vectorops.indexer.v1 import indexer_pb2
from vectorops.orchestrator.v1 import collection_service_pb2, orchestrator_pb2

pytestmark = pytest.mark.integration

NATS = "nats-server"
POSTGRES = "postgres"
COMPONENTS = (
    ServiceName.ORCHESTRATOR.value,
    ServiceName.INDEXER.value,
    ServiceName.EMBEDDER.value,
    ServiceName.RESOURCES.value,
    ServiceName.AUDIT.value,
    NATS,
    POSTGRES,
)
REINDEX_STEPS = STEPS[OperationType.REINDEX]
APPEND = "APPEND"
REINDEX = "REINDEX"
FULL_MATRIX = os.environ.get("VECTOROPS_FAULT_MATRIX") == "full"
KEEP_LOGS = os.environ.get("VECTOROPS_FAULT_MATRIX_LOGS")  # a folder for the services' logs

# Sized so that each operation is still running when the kill lands, and short
# enough that the module stays within minutes on two cores.
BASE_DOCUMENTS = 3
APPEND_DOCUMENTS = 800
REINDEX_DOCUMENTS = 160
WORDS = 180
CHUNKING = (64, 8)
RECHUNKING = (48, 8)
OUTAGE_SECONDS = 1.0  # NATS and Postgres stay away this long: clients see them gone
END_DEADLINE = 180.0  # the reaper fails an operation gone silent well within it
TABLE = "fault matrix: component SIGKILLed x operation -> outcome, invariants"
HEADER = ("killed", "operation", "at step", "outcome", "collection", "chunks", "audit",
          "reservation", "staging")  # fmt: skip


@dataclass(frozen=True)
class Fault:
    component: str
    operation: str
    step: str  # the REINDEX checkpoint at which the kill lands; "ingest" for an APPEND

    @property
    def id(self) -> str:
        return f"{self.component}-{self.operation}-{self.step}"


def faults() -> list[Fault]:
    """Each component during an APPEND and a REINDEX; in ``make test`` the REINDEX
    checkpoint rotates with the component (seven components cover all six)."""
    found = []
    for number, component in enumerate(COMPONENTS):
        found.append(Fault(component, APPEND, "ingest"))
        steps = REINDEX_STEPS if FULL_MATRIX else (REINDEX_STEPS[number % len(REINDEX_STEPS)],)
        found += [Fault(component, REINDEX, step) for step in steps]
    return found


@pytest.fixture(scope="module")
def fault_stack(triton_host) -> Iterator[object]:
    """A stack of this module alone, with embedded Postgres and NATS it may kill."""
    from kit.stack.launcher import Stack, StackOptions

    folder = Path(tempfile.mkdtemp(prefix="vo-faults-"))
    folder.chmod(0o755)
    options = StackOptions.ephemeral(folder / "stack")
    options.extra_env = {
        "VECTOROPS_EMBEDDER_TRITON_URL": triton_host.url,
        # A killed indexer's command comes back to its restarted self within seconds.
        "VECTOROPS_INDEXER_COMMAND_ACK_WAIT_SECONDS": "5",
        "VECTOROPS_ORCHESTRATOR_CLEANUP_BASE_DELAY_SECONDS": "1",
        "VECTOROPS_ORCHESTRATOR_CLEANUP_PER_10K_VECTORS_SECONDS": "1",
        "VECTOROPS_INDEXER_CLEANUP_INTERVAL_SECONDS": "0.5",
        "VECTOROPS_INDEXER_CLEANUP_MIN_STAGING_AGE_SECONDS": "0",
        # Whatever a fault loses, the reaper ends it (FAILED STUCK) within the deadline.
        "VECTOROPS_ORCHESTRATOR_STUCK_AFTER_SECONDS": "60",
        "VECTOROPS_ORCHESTRATOR_REAPER_INTERVAL_SECONDS": "5",
    }
    running = Stack(options)
    running.start()
    try:
        yield running
        died = running.exited()
        assert not died, "\n".join(
            f"{instance.name} exited with {code}:\n{running.log_tail(instance)}"
            for instance, code in died.items()
        )
    finally:
        running.stop()
        if KEEP_LOGS:
            shutil.copytree(folder / "stack" / "logs", KEEP_LOGS, dirs_exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("fault", faults(), ids=lambda fault: fault.id)
def test_fault(fault_stack, fault: Fault) -> None:
    stack = fault_stack
    # An admin acting for an owner of this case alone: its usage is this case's.
    client = Client(stack, stack.tokens.clear["admin"])
    admin = Resources(stack, stack.tokens.clear["admin"])
    at_step, outcome = "-", "-"
    checks = dict.fromkeys(("collection", "chunks", "audit", "reservation", "staging"), "-")
    try:
        collection_id, operation_id, serving = _start_operation(stack, client, fault.operation)
        at_step = _wait_for_target(stack, client, operation_id, fault, serving)
        _crash_and_restart(stack, fault.component)
        final = _wait_until_ended(client, operation_id)
        outcome = _outcome(final)
        checks = {
            "collection": _check_collection(client, collection_id, final),
            "chunks": _check_chunks(stack, client, collection_id, final),
            "audit": _check_audit(admin, final),
            "reservation": _check_reservation(stack, admin, final),
            "staging": _check_staging(stack, client, collection_id),
        }
    except BaseException as error:
        outcome = f"ERROR {type(error).__name__}"
        raise
    finally:
        client.close()
        admin.close()
        row = (fault.component, fault.operation, at_step, outcome, *checks.values())
        add_row(TABLE, HEADER, row)
    assert final.status in (
        operation_pb2.OPERATION_STATUS_COMPLETED,
        operation_pb2.OPERATION_STATUS_FAILED,
    ), final
    if final.status == operation_pb2.OPERATION_STATUS_FAILED:
        assert final.error.type and final.error.message, final.error
    broken = {name: result for name, result in checks.items() if result != "ok"}
    assert not broken, broken


def _outcome(final) -> str:
    outcome = operation_pb2.OperationStatus.Name(final.status).removeprefix("OPERATION_STATUS_")
    if final.status == operation_pb2.OPERATION_STATUS_FAILED:
        outcome += f" {final.error.type}"
    return outcome


# -- the operation and the fault ------------------------------------------------------------


def _create_for_new_owner(client: Client, folder: Path) -> str:
    """An indexed collection of ``folder``, of an owner that has nothing else."""
    created = client.collections.CreateCollection(
        collection_service_pb2.CreateCollectionRequest(
            collection=orchestrator_pb2.Collection(
                name=f"faults-{uuid.uuid4().hex[:6]}", config=config(HASH_MODEL, *CHUNKING)
            ),
            sources=[directory(str(folder))],
            owner_id=f"faults-owner-{uuid.uuid4().hex[:8]}",
            request_id=request_id(),
        ),
        metadata=client.metadata,
        timeout=30,
    )
    client.finish(created.operation.id)
    return created.collection.id


def _start_operation(stack, client: Client, operation: str) -> tuple[str, str, str]:
    """A small indexed collection, then the APPEND of a large source or the REINDEX
    of a collection indexed from a large one. Returns the ids of the collection
    and of the operation, and the physical collection serving before it."""
    root = stack.options.roots()[0] / f"faults-{uuid.uuid4().hex[:8]}"
    if operation == APPEND:
        write_text_corpus(root / "small", BASE_DOCUMENTS, 40)
        write_text_corpus(root / "large", APPEND_DOCUMENTS, WORDS, seed=11)
        collection_id = _create_for_new_owner(client, root / "small")
        appended = client.add_source(collection_id, directory(str(root / "large")))
        return collection_id, appended.operation.id, client.get(collection_id).physical_collection
    write_text_corpus(root / "corpus", REINDEX_DOCUMENTS, WORDS, seed=13)
    collection_id = _create_for_new_owner(client, root / "corpus")
    serving = client.get(collection_id).physical_collection
    reindex = client.reindex(
        collection_id,
        config(HASH_MODEL, *RECHUNKING),
        # Random words rank unstably below the top hit: a low overlap bar.
        thresholds=operation_pb2.ValidationThresholds(min_topk_overlap=0.05),
    )
    return collection_id, reindex.id, serving


def _wait_for_target(stack, client: Client, operation_id: str, fault: Fault, retired: str) -> str:
    """Poll until the operation's persisted step reaches the fault's step (for an
    APPEND: some documents indexed); it must still be running. Returns the step.

    The cleanup step only schedules the deletion of the ``retired`` physical
    collection and is over in milliseconds; the cleanup it schedules runs after
    a delay. A kill in that window, the operation COMPLETED and the retired
    collection not yet deleted, counts as one during cleanup."""
    steps = REINDEX_STEPS if fault.operation == REINDEX else STEPS[OperationType.APPEND]
    target = steps.index(fault.step)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        operation = client.operation(operation_id)
        if operation.status in TERMINAL:
            pending = (stack.options.data_dir / "indexer/qdrant/collections" / retired).exists()
            if fault.step == "cleanup" and pending:
                assert operation.status == operation_pb2.OPERATION_STATUS_COMPLETED, operation
                return "cleanup (deletion due)"
            raise AssertionError(
                f"ended ({operation.status}, {operation.error}) before the kill at "
                f"{fault.step}; make the corpus larger"
            )
        step = operation.current_step
        if step in steps and steps.index(step) >= target:
            if fault.operation == REINDEX or operation.progress.documents_done >= 5:
                return step
        time.sleep(0.01)
    raise AssertionError(f"operation {operation_id} never reached {fault.step}")


def _crash_and_restart(stack, component: str) -> None:
    if component == NATS:
        stack.kill_nats()
        time.sleep(OUTAGE_SECONDS)
        stack.start_nats()
    elif component == POSTGRES:
        stack.kill_postgres()
        time.sleep(OUTAGE_SECONDS)
        stack.start_postgres()
    else:
        service = ServiceName(component)
        stack.kill(service)
        stack.start_service(service)


def _retrying(call: Callable[[], object]) -> object | None:
    """``call``'s answer, or None while a restarted component is still coming back."""
    try:
        return call()
    except grpc.RpcError as error:
        if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return None
        raise


def _wait_until_ended(client: Client, operation_id: str):
    deadline = time.monotonic() + END_DEADLINE
    while time.monotonic() < deadline:
        operation = _retrying(lambda: client.operation(operation_id))
        if operation is not None and operation.status in TERMINAL:
            return operation
        time.sleep(0.2)
    raise AssertionError(f"operation {operation_id} stuck: {client.operation(operation_id)}")


def _eventually(check: Callable[[], str], seconds: float) -> str:
    """Poll ``check`` (``"ok"`` or what is wrong) until it says ok or time is up."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result == "ok" or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


# -- the invariants: each returns "ok" or what is wrong -------------------------------------


def _check_collection(client: Client, collection_id: str, final) -> str:
    collection = client.get(collection_id)
    expected = operation_pb2.COLLECTION_STATUS_READY
    if final.status == operation_pb2.OPERATION_STATUS_FAILED:
        expected = (
            operation_pb2.COLLECTION_STATUS_DEGRADED
            if final.type == operation_pb2.OPERATION_TYPE_REINDEX
            else operation_pb2.COLLECTION_STATUS_PARTIALLY_READY
        )
    status = operation_pb2.CollectionStatus.Name(collection.status)
    if collection.status != expected or collection.active_operation_id:
        return f"{status}, active {collection.active_operation_id or '-'}"
    return "ok"


def _expected_chunks(collection, document) -> int:
    """What chunking the document's source file with the collection's config gives."""
    folder = next(s.directory.path for s in collection.sources if s.id == document.source_id)
    data = (Path(folder) / document.path).read_bytes()
    settings = collection.config
    sections = extract(data, document.path).sections
    tokenizer = tokenizer_for(settings.embedding_model)
    return len(chunk(sections, tokenizer, settings.chunk_size, settings.chunk_overlap))


def _check_chunks(stack, client: Client, collection_id: str, final) -> str:
    """Each indexed document has exactly its chunks; all are indexed unless it failed."""
    collection = client.get(collection_id)
    documents = client.list_documents(collection_id)
    completed = [d for d in documents if d.status == indexer_pb2.DOCUMENT_STATUS_COMPLETED]
    on_disk = sum(len(list(Path(s.directory.path).iterdir())) for s in collection.sources)
    problems = []
    if final.status == operation_pb2.OPERATION_STATUS_COMPLETED and len(completed) != on_disk:
        problems.append(f"{len(completed)} of {on_disk} documents indexed")
    wrong = [d.path for d in completed if d.chunk_count != _expected_chunks(collection, d)]
    if wrong:
        problems.append(f"chunk_count differs from chunking for {wrong[:3]}")
    listed = sum(d.chunk_count for d in completed)
    if collection.vector_count != listed:
        problems.append(f"vector_count {collection.vector_count} != {listed} chunks listed")
    points = _stored_chunks(stack, collection)
    by_document = {d.id: d.chunk_count for d in completed}
    for document_id, indexes in points.items():
        count = Counter(indexes)
        if sorted(count) != list(range(by_document.get(document_id, 0))) or max(count.values()) > 1:
            problems.append(f"document {document_id[:8]} has chunks {sorted(indexes)[:8]}...")
            break
    missing = set(by_document) - set(points)
    if missing:
        problems.append(f"{len(missing)} documents without points")
    return "; ".join(problems) or "ok"


def _stored_chunks(stack, collection) -> dict[str, list[int]]:
    """Each document's chunk indexes in the live collection, read through its alias.

    The indexer holds its store open, so a copy of the alias file and the live
    collection's files is opened instead (nothing writes to it once the
    operation has ended)."""
    store_dir = stack.options.data_dir / "indexer" / "qdrant"
    with tempfile.TemporaryDirectory(prefix="vo-faults-store-") as copy:
        root = Path(copy)
        (root / "collections").mkdir()
        shutil.copy(store_dir / "aliases.json", root / "aliases.json")
        physical = collection.physical_collection
        shutil.copytree(store_dir / "collections" / physical, root / "collections" / physical)

        async def scroll() -> dict[str, list[int]]:
            found: dict[str, list[int]] = {}
            async with EdgeVectorStore(root) as store:
                resolved = await store.resolve(collection.alias_name)
                assert resolved == physical, f"alias points at {resolved}, not {physical}"
                offset = None
                while True:
                    page = await store.scroll(collection.alias_name, limit=512, offset=offset)
                    for point in page.points:
                        payload = point.payload or {}
                        found.setdefault(payload["document_id"], []).append(
                            int(payload["chunk_index"])
                        )
                    offset = page.next_offset
                    if offset is None:
                        return found

        return asyncio.run(scroll())


def _check_audit(admin: Resources, final) -> str:
    """start, each step reached, end: in order, each once."""
    steps = STEPS[
        OperationType(operation_pb2.OperationType.Name(final.type).removeprefix("OPERATION_TYPE_"))
    ]
    end = (
        "operation.complete"
        if final.status == operation_pb2.OPERATION_STATUS_COMPLETED
        else "operation.fail"
    )

    def trail() -> str:
        events = admin.audit.ListAuditEvents(
            audit_service_pb2.ListAuditEventsRequest(operation_id=final.id, page_size=100),
            metadata=admin.metadata,
            timeout=30,
        ).events
        seen = [
            (e.action, e.details["step"] if e.action == "operation.step" else "")
            for e in events
            if e.action.startswith("operation.")
        ]
        recorded = [step for action, step in seen if action == "operation.step"]
        expected = (
            [("operation.start", "")]
            + [("operation.step", step) for step in steps[: len(recorded)]]
            + [(end, "")]
        )
        if final.status == operation_pb2.OPERATION_STATUS_COMPLETED and len(recorded) != len(steps):
            return f"steps {recorded}"
        return "ok" if seen == expected else f"{[a.split('.')[1] + ':' + s for a, s in seen]}"

    return _eventually(trail, 60)


def _check_reservation(stack, admin: Resources, final) -> str:
    async def held() -> int:
        connection = await asyncpg.connect(stack.postgres_dsn)
        try:
            return await connection.fetchval(
                "SELECT count(*) FROM resources.reservations "
                "WHERE operation_id = $1 AND released_at IS NULL",
                final.id,
            )
        finally:
            await connection.close()

    def check() -> str:
        usage = admin.usage(final.owner_id)
        rows = asyncio.run(held())
        if rows or usage.active_operations or usage.reserved_vectors:
            return f"{rows} held, usage {usage.active_operations} ops"
        return "ok"

    return _eventually(check, 30)


def _check_staging(stack, client: Client, collection_id: str) -> str:
    """Only the live physical collection is left once the cleanup delay passed."""
    collection = client.get(collection_id)
    base = physical_base(collection.physical_collection)
    folder = stack.options.data_dir / "indexer" / "qdrant" / "collections"

    def check() -> str:
        mine = sorted(
            entry.name
            for entry in folder.iterdir()
            if entry.name == base or entry.name.startswith(f"{base}_staging_")
        )
        return "ok" if mine == [collection.physical_collection] else f"left {mine}"

    return _eventually(check, 30)


def test_reservation_is_given_back_when_resources_was_down_at_the_end(fault_stack) -> None:
    """An operation that ends while the resources service is down has its
    reservation released once the service is back (retried), not a day later
    when it would expire."""
    stack = fault_stack
    client = Client(stack, stack.tokens.clear["admin"])
    admin = Resources(stack, stack.tokens.clear["admin"])
    try:
        _, operation_id, serving = _start_operation(stack, client, APPEND)
        fault = Fault(ServiceName.RESOURCES.value, APPEND, "ingest")
        _wait_for_target(stack, client, operation_id, fault, serving)
        stack.kill(ServiceName.RESOURCES)
        try:
            final = _wait_until_ended(client, operation_id)
            time.sleep(1.0)  # the orchestrator's first release finds nobody
        finally:
            stack.start_service(ServiceName.RESOURCES)
        assert final.status == operation_pb2.OPERATION_STATUS_COMPLETED, final
        assert _check_reservation(stack, admin, final) == "ok"
    finally:
        client.close()
        admin.close()
