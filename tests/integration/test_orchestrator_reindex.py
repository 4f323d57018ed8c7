"""Blue-green REINDEX, the orchestrator's side, against the real orchestrator
in-process (real Postgres, real nats-server): ReindexCollection (what it
writes and sends, every refusal with nothing half-written, idempotent retry)
and the atomic switch CompleteReindex (service role only, fenced, exactly
once under concurrent repeats, with its outbox and audit rows), with the
indexer's step events applied as the event consumer applies them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from indexer_events import operation_failed, step_completed
from nats.js.errors import NotFoundError
from orchestrator_harness import (
    ADMIN,
    ALICE,
    BOB,
    SERVICE,
    Orchestrator,
    collection,
    config,
    eventually,
    refused,
    running_orchestrator,
)
from prometheus_client import REGISTRY

from kit.bus import subjects
from kit.bus.jetstream import Delivery
from kit.events import new_envelope, parse_envelope, unpack
from kit.stack.nats import NatsServer
from orchestrator.domain.operations import CollectionStatus, OperationStatus
from orchestrator.event_consumer import OperationEventConsumer
from orchestrator.messages import config_message
from vectorops.common.v1 import audit_pb2, config_pb2, operation_pb2, principal_pb2
from vectorops.events.v1 import audit_record_pb2, collection_events_pb2, commands_pb2
from vectorops.orchestrator.v1 import collection_service_pb2 as api
from vectorops.orchestrator.v1 import operation_service_pb2 as ops_api
from vectorops.orchestrator.v1 import reindex_control_service_pb2 as control

NEW_CONFIG = {"chunk_size": 100, "chunk_overlap": 10}
STAMP = "20250501T000000Z"
OLD_VECTORS = 25_000  # the live collection's size: cleanup waits 60 s + 2 × 30 s
CLEANUP = {
    "orchestrator_cleanup_base_delay_seconds": 60,
    "orchestrator_cleanup_per_10k_vectors_seconds": 30,
    "orchestrator_cleanup_max_delay_seconds": 600,
}


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
    async with running_orchestrator(database, private_nats.url, tmp_path, **CLEANUP) as running:
        yield running


# --- arranging: collections and the indexer's step events ----------------------------------


def now() -> datetime:
    return datetime.now(UTC)


async def report(
    orch: Orchestrator,
    operation_id: str,
    step: str,
    state: dict[str, Any],
    checked: operation_pb2.ValidationResult | None = None,
) -> None:
    """The indexer's StepCompleted (with the validation step's result), handed
    to the orchestrator's event consumer as the bus would deliver it."""
    record = await orch.app.repository.get_operation(operation_id, None)
    subject, payload, _ = step_completed(record, step, state)
    if checked is not None:
        payload.reindex_validation.validation.CopyFrom(checked)
    await deliver(orch, subject, payload)


async def deliver(orch: Orchestrator, subject: str, payload: Any) -> None:
    envelope = new_envelope(
        payload,
        producer="indexer",
        operation_id=payload.operation_id,
        collection_id=payload.collection_id,
        owner_id="alice",
    )
    delivery = Delivery(subject, envelope.SerializeToString(), {}, 1, False, None)
    await OperationEventConsumer(orch.app.repository).handle(delivery)


async def ready(orch: Orchestrator, name: str = "docs") -> api.CreateCollectionResponse:
    """A READY collection of OLD_VECTORS vectors (its INDEX reported as the
    indexer does, finalize figures included)."""
    request = api.CreateCollectionRequest(collection=collection(name), request_id=f"create-{name}")
    created = await orch.collections.CreateCollection(request, metadata=ALICE)
    op_id = created.operation.id
    await report(orch, op_id, "create_collection", {})
    await report(orch, op_id, "ingest", {})
    figures = {
        "document_count": 40,
        "vector_count": OLD_VECTORS,
        "stored_bytes": 1 << 20,
        "source_document_counts": {},
    }
    await report(orch, op_id, "finalize", figures)
    return created


def reindex_request(collection_id: str, request_id: str = "reindex-1", **fields: Any):
    fields.setdefault("config", config(**NEW_CONFIG))
    return api.ReindexCollectionRequest(
        collection_id=collection_id, request_id=request_id, **fields
    )


async def start_reindex(orch: Orchestrator, collection_id: str, **fields: Any) -> str:
    response = await orch.collections.ReindexCollection(
        reindex_request(collection_id, **fields), metadata=ALICE
    )
    return response.operation.id


async def staged(orch: Orchestrator, collection_id: str, through: str = "validation") -> tuple:
    """A REINDEX reported by the indexer up to and including ``through``;
    returns (operation id, staging collection, live physical collection)."""
    live = await orch.app.repository.get_collection(collection_id, None)
    op_id = await start_reindex(orch, collection_id, request_id=f"staged-{uuid.uuid4()}")
    staging = f"{live.physical_collection}_staging_{STAMP}"
    states = {
        "preflight": {"dimension": 384, "expected_vectors": 100, "reservation": "unavailable"},
        "staging": {"staging_collection": staging, "created_at": "2025-05-01T00:00:00Z"},
        "reprocessing": {"documents_done": 40, "documents_failed": 0, "vectors_written": 100},
        "validation": {"passed": True, "topk_overlap": 0.9},
    }
    for step, state in states.items():
        await report(orch, op_id, step, state, validation() if step == "validation" else None)
        if step == through:
            break
    return op_id, staging, live.physical_collection


def validation(passed: bool = True) -> operation_pb2.ValidationResult:
    return operation_pb2.ValidationResult(
        passed=passed,
        checks=[
            operation_pb2.ValidationCheck(
                name="point_count",
                passed=passed,
                measured=0.0,
                threshold=0.0,
                comparison=operation_pb2.COMPARISON_LESS_OR_EQUAL,
            )
        ],
        expected_point_count=100,
        actual_point_count=100,
        probe_query_count=20,
    )


def complete_request(
    op_id: str, collection_id: str, staging: str, generation: int = 1, **fields: Any
) -> control.CompleteReindexRequest:
    fields.setdefault("validation", validation())
    return control.CompleteReindexRequest(
        operation_id=op_id,
        collection_id=collection_id,
        expected_generation=generation,
        staging_collection=staging,
        vector_count=100,
        document_count=40,
        stored_bytes=51_200,
        request_id=f"{op_id}:switch",
        **fields,
    )


async def state(orch: Orchestrator, collection_id: str, op_id: str) -> tuple:
    """Everything a refused call must leave as it was."""
    repository = orch.app.repository
    return (
        await repository.get_collection(collection_id, None),
        await repository.get_operation(op_id, None),
        await orch.count("outbox"),
    )


def switches(outcome: str) -> float:
    return REGISTRY.get_sample_value("vectorops_reindex_switches_total", {"outcome": outcome}) or 0


def switch_latencies() -> float:
    return REGISTRY.get_sample_value("vectorops_reindex_switch_duration_seconds_count") or 0


# --- ReindexCollection ---------------------------------------------------------------------


async def test_reindex_starts_an_operation_that_sends_its_command_and_keeps_serving(orch) -> None:
    created = await ready(orch)
    collection_id = created.collection.id
    live = await orch.app.repository.get_collection(collection_id, None)
    thresholds = operation_pb2.ValidationThresholds(top_k=5, max_score_drift=0.5)
    response = await orch.collections.ReindexCollection(
        reindex_request(collection_id, expected_generation=1, thresholds=thresholds),
        metadata=ALICE,
    )
    op = response.operation
    target = config(
        dimension=384,
        quantization=config_pb2.QUANTIZATION_FLOAT32,
        chunk_size=100,
        chunk_overlap=10,
    )
    assert op.type == operation_pb2.OPERATION_TYPE_REINDEX
    assert op.status == operation_pb2.OPERATION_STATUS_PENDING and op.request_id == "reindex-1"
    assert op.config == target and op.previous_config == created.collection.config

    got = await orch.collections.GetCollection(
        api.GetCollectionRequest(collection_id=collection_id), metadata=ALICE
    )
    assert got.collection.status == operation_pb2.COLLECTION_STATUS_PROCESSING
    assert got.collection.searchable and got.collection.active_operation_id == op.id
    assert got.collection.config == created.collection.config  # live until the switch

    [envelope] = await orch.outbox(subjects.command_subject("REINDEX"))
    assert envelope.operation_id == op.id and envelope.owner_id == "alice"
    assert envelope.actor.principal_id == "alice"
    command = unpack(envelope, commands_pb2.ReindexCommand)
    assert command.operation_id == op.id
    snapshot = command.collection
    assert (snapshot.collection_id, snapshot.generation) == (collection_id, 1)
    assert snapshot.physical_collection == live.physical_collection
    assert snapshot.alias_name == live.alias_name and snapshot.config == config_message(live.config)
    assert command.target_config == target
    # Defaults from the settings, with the request's non-zero fields instead.
    assert command.thresholds == operation_pb2.ValidationThresholds(
        point_count_tolerance=0.0,
        min_topk_overlap=0.6,
        max_score_drift=0.5,
        probe_query_count=20,
        top_k=5,
    )

    async def published() -> bool:
        try:
            raw = await orch.bus.js.get_last_msg("VO_COMMANDS", subjects.command_subject("REINDEX"))
        except NotFoundError:  # the outbox has not published it yet
            return False
        return unpack(parse_envelope(raw.data), commands_pb2.ReindexCommand).operation_id == op.id

    await eventually(published)


async def test_a_retried_reindex_returns_the_first_operation(orch) -> None:
    collection_id = (await ready(orch)).collection.id
    first = await start_reindex(orch, collection_id)
    again = await start_reindex(orch, collection_id)
    assert again == first
    assert len(await orch.outbox(subjects.command_subject("REINDEX"))) == 1
    other = reindex_request(collection_id, config=config(chunk_size=50))
    refusal = await refused(orch.collections.ReindexCollection(other, metadata=ALICE))
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")


async def test_the_live_config_again_is_refused_and_nothing_is_written(orch) -> None:
    created = await ready(orch)
    collection_id = created.collection.id
    before = await state(orch, collection_id, created.operation.id)
    for same in (config(), created.collection.config):
        request = reindex_request(collection_id, request_id=f"same-{same.chunk_size}", config=same)
        refusal = await refused(orch.collections.ReindexCollection(request, metadata=ALICE))
        assert (refusal.code, refusal.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "CONFIG_UNCHANGED",
        )
        assert refusal.metadata == {"collection_id": collection_id}
    assert await state(orch, collection_id, created.operation.id) == before
    assert await orch.count("operations") == 1


async def test_a_stale_expected_generation_is_refused(orch) -> None:
    created = await ready(orch)
    collection_id = created.collection.id
    before = await state(orch, collection_id, created.operation.id)
    request = reindex_request(collection_id, expected_generation=4)
    refusal = await refused(orch.collections.ReindexCollection(request, metadata=ALICE))
    assert (refusal.code, refusal.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "STALE_GENERATION",
    )
    assert refusal.metadata == {
        "collection_id": collection_id,
        "expected_generation": "4",
        "actual_generation": "1",
    }
    assert await state(orch, collection_id, created.operation.id) == before


async def test_a_second_operation_is_refused_while_one_runs(orch) -> None:
    collection_id = (await ready(orch)).collection.id
    running = await start_reindex(orch, collection_id)
    request = reindex_request(collection_id, request_id="second", config=config(chunk_size=64))
    refusal = await refused(orch.collections.ReindexCollection(request, metadata=ALICE))
    assert (refusal.code, refusal.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "OPERATION_IN_PROGRESS",
    )
    assert refusal.metadata == {"collection_id": collection_id, "active_operation_id": running}


@pytest.mark.parametrize(
    ("fields", "reason", "field"),
    [
        ({"config": config("no/such-model")}, "UNKNOWN_MODEL", None),
        ({"config": config(dimension=12)}, "DIMENSION_MISMATCH", None),
        (
            {"config": config(chunk_size=10, chunk_overlap=10)},
            "INVALID_CONFIG",
            "config.chunk_overlap",
        ),
        ({"config": config(chunk_size=100_000)}, "INVALID_CONFIG", "config.chunk_size"),
        ({"config": None}, "INVALID_ARGUMENT", "config"),
        ({"request_id": ""}, "INVALID_ARGUMENT", "request_id"),
        (
            {"thresholds": operation_pb2.ValidationThresholds(min_topk_overlap=1.5)},
            "INVALID_ARGUMENT",
            "thresholds.min_topk_overlap",
        ),
    ],
)
async def test_bad_requests_are_invalid_arguments(orch, fields, reason, field) -> None:
    created = await ready(orch)
    collection_id = created.collection.id
    before = await state(orch, collection_id, created.operation.id)
    request = reindex_request(collection_id, **{k: v for k, v in fields.items() if v is not None})
    if fields.get("config", "") is None:
        request.ClearField("config")
    refusal = await refused(orch.collections.ReindexCollection(request, metadata=ALICE))
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    if field is not None:
        assert refusal.metadata == {"field": field}
    assert await state(orch, collection_id, created.operation.id) == before


async def test_a_collection_with_nothing_live_is_not_reindexed(orch) -> None:
    # An INDEX cancelled before it ran leaves the collection PENDING, a failed one ERROR.
    for name, end in (("never", "cancel"), ("broken", "fail")):
        request = api.CreateCollectionRequest(collection=collection(name), request_id=name)
        created = await orch.collections.CreateCollection(request, metadata=ALICE)
        op_id = created.operation.id
        if end == "cancel":
            await orch.apply(op_id, lambda op: op.cancel(now()))
        else:
            await orch.apply(op_id, lambda op: op.fail("HANDLER_ERROR", "boom", now()))
        status = (await orch.app.repository.get_collection(created.collection.id, None)).status
        refusal = await refused(
            orch.collections.ReindexCollection(
                reindex_request(created.collection.id, request_id=f"r-{name}"), metadata=ALICE
            )
        )
        assert (refusal.code, refusal.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "COLLECTION_NOT_SEARCHABLE",
        )
        assert refusal.metadata == {"collection_id": created.collection.id, "status": status.value}
        assert status in (CollectionStatus.PENDING, CollectionStatus.ERROR)


async def test_another_owners_collection_is_not_found(orch) -> None:
    collection_id = (await ready(orch)).collection.id
    request = reindex_request(collection_id)
    refusal = await refused(orch.collections.ReindexCollection(request, metadata=BOB))
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.NOT_FOUND, "COLLECTION_NOT_FOUND")


# --- the staging collection ------------------------------------------------------------------


async def test_the_staging_checkpoint_records_and_a_failure_clears_the_staging_collection(
    orch,
) -> None:
    collection_id = (await ready(orch)).collection.id
    op_id, staging, physical = await staged(orch, collection_id, through="reprocessing")
    seen = await orch.app.repository.get_collection(collection_id, None)
    assert seen.staging_collection == staging and seen.physical_collection == physical

    # Validation fails: its figures are kept with the operation, then it fails.
    await report(orch, op_id, "validation", {"passed": False}, validation(passed=False))
    record = await orch.app.repository.get_operation(op_id, None)
    why = "top-k overlap 0.2 < 0.6"
    await deliver(orch, *operation_failed(record, "VALIDATION_FAILED", why, "validation")[:2])
    got = await orch.operations.GetOperation(
        ops_api.GetOperationRequest(operation_id=op_id), metadata=ALICE
    )
    failed = got.operation
    assert failed.status == operation_pb2.OPERATION_STATUS_FAILED
    assert (failed.error.type, failed.error.step) == ("VALIDATION_FAILED", "validation")
    assert failed.validation == validation(passed=False)
    assert failed.staging_collection == staging
    after = await orch.app.repository.get_collection(collection_id, None)
    assert after.status is CollectionStatus.DEGRADED and after.active_operation_id is None
    assert after.staging_collection is None
    # The old collection goes on serving, unchanged.
    assert (after.physical_collection, after.generation) == (physical, 1)
    assert after.config == seen.config and after.old_physical_collections == ()

    refusal = await refused(
        orch.reindex_control.CompleteReindex(
            complete_request(op_id, collection_id, staging), metadata=SERVICE
        )
    )
    assert (refusal.code, refusal.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "OPERATION_NOT_ACTIVE",
    )
    assert refusal.metadata == {"operation_id": op_id, "status": "FAILED"}
    # A DEGRADED collection may be reindexed again.
    assert await start_reindex(orch, collection_id, request_id="retry") != op_id


async def test_a_cancel_before_the_switch_restores_the_collection(orch) -> None:
    collection_id = (await ready(orch)).collection.id
    op_id, staging, _ = await staged(orch, collection_id)
    cancelled = await orch.operations.CancelOperation(
        ops_api.CancelOperationRequest(operation_id=op_id, request_id="c1"), metadata=ALICE
    )
    assert cancelled.operation.status == operation_pb2.OPERATION_STATUS_CANCELLED
    after = await orch.app.repository.get_collection(collection_id, None)
    assert after.status is CollectionStatus.READY and after.staging_collection is None
    refusal = await refused(
        orch.reindex_control.CompleteReindex(
            complete_request(op_id, collection_id, staging), metadata=SERVICE
        )
    )
    assert refusal.reason == "OPERATION_NOT_ACTIVE"
    assert refusal.metadata == {"operation_id": op_id, "status": "CANCELLED"}


# --- CompleteReindex -----------------------------------------------------------------------


@pytest.mark.parametrize("caller", ["alice", "admin"])
async def test_complete_reindex_is_for_services_only(orch, caller: str) -> None:
    collection_id = (await ready(orch)).collection.id
    op_id, staging, _ = await staged(orch, collection_id)
    before = await state(orch, collection_id, op_id)
    denied = switches("permission_denied")
    refusal = await refused(
        orch.reindex_control.CompleteReindex(
            complete_request(op_id, collection_id, staging),
            metadata={"alice": ALICE, "admin": ADMIN}[caller],
        )
    )
    assert (refusal.code, refusal.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    assert refusal.metadata == {"required_role": "service"}
    assert await state(orch, collection_id, op_id) == before
    assert switches("permission_denied") == denied + 1


async def test_before_the_validation_checkpoint_the_switch_is_not_passed(orch) -> None:
    collection_id = (await ready(orch)).collection.id
    # The staging checkpoint may not have arrived either: still the retryable answer.
    for through in ("preflight", "reprocessing"):
        op_id, staging, _ = await staged(orch, collection_id, through=through)
        before = await state(orch, collection_id, op_id)
        refusal = await refused(
            orch.reindex_control.CompleteReindex(
                complete_request(op_id, collection_id, staging), metadata=SERVICE
            )
        )
        assert (refusal.code, refusal.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "VALIDATION_NOT_PASSED",
        )
        assert refusal.metadata == {"operation_id": op_id}
        assert await state(orch, collection_id, op_id) == before
        await orch.apply(op_id, lambda op: op.cancel(now()))
    # A validation result that did not pass is refused the same way.
    op_id, staging, _ = await staged(orch, collection_id)
    failing = complete_request(op_id, collection_id, staging, validation=validation(False))
    refusal = await refused(orch.reindex_control.CompleteReindex(failing, metadata=SERVICE))
    assert refusal.reason == "VALIDATION_NOT_PASSED"


async def test_the_switch_happens_once_with_its_outbox_and_audit_rows(orch) -> None:
    collection_id = (await ready(orch)).collection.id
    op_id, staging, old_physical = await staged(orch, collection_id)
    switched_before, latencies_before = switches("switched"), switch_latencies()

    called_at = now()
    response = await orch.reindex_control.CompleteReindex(
        complete_request(op_id, collection_id, staging), metadata=SERVICE
    )
    answered_at = now()
    assert response.switched and not response.replayed
    assert (response.generation, response.physical_collection) == (2, staging)
    assert list(response.retired_collections) == [old_physical]
    delay = timedelta(seconds=60 + 2 * 30)  # CLEANUP for OLD_VECTORS
    cleanup_at = response.cleanup_not_before.ToDatetime(tzinfo=UTC)
    assert called_at + delay <= cleanup_at <= answered_at + delay
    assert response.collection.physical_collection == staging
    assert response.collection.config.chunk_size == 100
    assert switches("switched") == switched_before + 1
    assert switch_latencies() == latencies_before + 1

    # The collection row: the staging collection is live, at the next generation.
    seen = await orch.app.repository.get_collection(collection_id, None)
    assert (seen.physical_collection, seen.staging_collection, seen.generation) == (
        staging,
        None,
        2,
    )
    assert seen.config["chunk_size"] == 100 and seen.config["chunk_overlap"] == 10
    assert (seen.vector_count, seen.document_count, seen.stored_bytes) == (100, 40, 51_200)
    assert seen.old_physical_collections == (old_physical,)
    assert seen.status is CollectionStatus.PROCESSING and seen.active_operation_id == op_id

    # The operation: the switch step done with the agreed checkpoint, and the result kept.
    record = await orch.app.repository.get_operation(op_id, None)
    assert record.operation.checkpoint("switch") == {
        "from_generation": 1,
        "to_generation": 2,
        "physical_collection": staging,
    }
    assert record.operation.status is OperationStatus.PROCESSING
    assert record.result is not None and record.result["validation"]["passed"] is True
    got = await orch.operations.GetOperation(
        ops_api.GetOperationRequest(operation_id=op_id), metadata=ALICE
    )
    assert got.operation.validation == validation()
    assert got.operation.staging_collection == staging
    assert got.operation.last_checkpoint == "switch"

    # Outbox: CollectionSwitched for the indexers and the audit record, once.
    [announced] = await orch.outbox(subjects.COLLECTION_SWITCHED)
    event = unpack(announced, collection_events_pb2.CollectionSwitched)
    assert (event.collection_id, event.operation_id, event.generation) == (collection_id, op_id, 2)
    assert event.alias_name == seen.alias_name and event.physical_collection == staging
    assert list(event.retired_collections) == [old_physical]
    assert event.cleanup_not_before == response.cleanup_not_before
    assert announced.owner_id == "alice"
    [audited] = await orch.outbox(subjects.audit_subject("reindex.switch"))
    assert audited.actor.principal_id == "indexer"
    assert audited.actor.role == principal_pb2.ROLE_SERVICE
    assert (audited.operation_id, audited.collection_id) == (op_id, collection_id)
    audit = unpack(audited, audit_record_pb2.AuditRecord)
    assert audit.action == "reindex.switch" and audit.service == "orchestrator"
    assert audit.outcome == audit_pb2.AUDIT_OUTCOME_SUCCESS
    assert audit.request_id == f"{op_id}:switch"
    assert dict(audit.details) == {
        "from_generation": 1,
        "to_generation": 2,
        "old_physical_collections": [old_physical],
        "new_physical_collection": staging,
        "validation_passed": True,
    }

    # After the switch the REINDEX can no longer be cancelled.
    refusal = await refused(
        orch.operations.CancelOperation(
            ops_api.CancelOperationRequest(operation_id=op_id, request_id="late"), metadata=ALICE
        )
    )
    assert (refusal.code, refusal.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "OPERATION_NOT_CANCELLABLE",
    )

    # The indexer's own report of the switch repeats the checkpoint: no change.
    echoed = {"from_generation": 1.0, "to_generation": 2.0, "physical_collection": staging}
    unchanged = await orch.app.repository.get_operation(op_id, None)
    await report(orch, op_id, "switch", echoed)
    assert await orch.app.repository.get_operation(op_id, None) == unchanged

    # Cleanup scheduled: the REINDEX completes, the collection is READY and
    # keeps the retired name until the indexer has deleted it.
    await report(orch, op_id, "cleanup", {"scheduled_collections": [old_physical]})
    done = await orch.app.repository.get_collection(collection_id, None)
    assert done.status is CollectionStatus.READY and done.active_operation_id is None
    assert done.old_physical_collections == (old_physical,) and done.generation == 2
    completed = await orch.app.repository.get_operation(op_id, None)
    assert completed.operation.status is OperationStatus.COMPLETED

    # A repeat even now answers the first result.
    again = await orch.reindex_control.CompleteReindex(
        complete_request(op_id, collection_id, staging), metadata=SERVICE
    )
    assert again.replayed and again.generation == 2 and again.physical_collection == staging
    assert len(await orch.outbox(subjects.COLLECTION_SWITCHED)) == 1


async def test_a_repeated_call_is_replayed_without_a_second_switch(orch) -> None:
    collection_id = (await ready(orch)).collection.id
    op_id, staging, old_physical = await staged(orch, collection_id)
    first = await orch.reindex_control.CompleteReindex(
        complete_request(op_id, collection_id, staging), metadata=SERVICE
    )
    after_first = await state(orch, collection_id, op_id)
    replayed = switches("replayed")
    second = await orch.reindex_control.CompleteReindex(
        complete_request(op_id, collection_id, staging), metadata=SERVICE
    )
    assert second.switched and second.replayed and not first.replayed
    for name in ("generation", "physical_collection", "retired_collections", "cleanup_not_before"):
        assert getattr(second, name) == getattr(first, name)
    assert await state(orch, collection_id, op_id) == after_first
    assert switches("replayed") == replayed + 1
    # A repeat naming another staging collection is not the same switch.
    refusal = await refused(
        orch.reindex_control.CompleteReindex(
            complete_request(op_id, collection_id, f"{old_physical}_staging_other"),
            metadata=SERVICE,
        )
    )
    assert refusal.reason == "STAGING_MISMATCH"
    # Nor is a call at the new generation (it was never this switch's fencing token).
    refusal = await refused(
        orch.reindex_control.CompleteReindex(
            complete_request(op_id, collection_id, staging, generation=2), metadata=SERVICE
        )
    )
    assert refusal.reason == "STALE_GENERATION"
    assert await state(orch, collection_id, op_id) == after_first


async def test_a_stale_generation_or_another_staging_changes_nothing(orch) -> None:
    collection_id = (await ready(orch)).collection.id
    op_id, staging, _ = await staged(orch, collection_id)
    before = await state(orch, collection_id, op_id)
    refusal = await refused(
        orch.reindex_control.CompleteReindex(
            complete_request(op_id, collection_id, staging, generation=7), metadata=SERVICE
        )
    )
    assert (refusal.code, refusal.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "STALE_GENERATION",
    )
    assert refusal.metadata == {
        "collection_id": collection_id,
        "expected_generation": "7",
        "actual_generation": "1",
    }
    refusal = await refused(
        orch.reindex_control.CompleteReindex(
            complete_request(op_id, collection_id, "vo_elsewhere_staging_1"), metadata=SERVICE
        )
    )
    assert (refusal.reason, refusal.metadata) == ("STAGING_MISMATCH", {"operation_id": op_id})
    assert await state(orch, collection_id, op_id) == before


async def test_unknown_or_foreign_operations_are_not_found(orch) -> None:
    first = (await ready(orch, "first")).collection.id
    second = (await ready(orch, "second")).collection.id
    op_id, staging, _ = await staged(orch, first)
    cases = [
        (complete_request(op_id, second, staging), "OPERATION_NOT_FOUND"),
        (complete_request(str(uuid.uuid4()), first, staging), "OPERATION_NOT_FOUND"),
        (complete_request(op_id, str(uuid.uuid4()), staging), "COLLECTION_NOT_FOUND"),
    ]
    for request, reason in cases:
        refusal = await refused(orch.reindex_control.CompleteReindex(request, metadata=SERVICE))
        assert (refusal.code, refusal.reason) == (grpc.StatusCode.NOT_FOUND, reason)
    missing = complete_request(op_id, first, staging)
    missing.ClearField("validation")
    refusal = await refused(orch.reindex_control.CompleteReindex(missing, metadata=SERVICE))
    assert (refusal.reason, refusal.metadata) == ("INVALID_ARGUMENT", {"field": "validation"})


async def test_concurrent_repeats_switch_exactly_once(orch) -> None:
    collection_id = (await ready(orch)).collection.id
    op_id, staging, old_physical = await staged(orch, collection_id)
    calls = [
        orch.reindex_control.CompleteReindex(
            complete_request(op_id, collection_id, staging), metadata=SERVICE
        )
        for _ in range(2)
    ]
    answers = await asyncio.gather(*calls)
    assert sorted(answer.replayed for answer in answers) == [False, True]
    assert {answer.generation for answer in answers} == {2}
    assert len({answer.cleanup_not_before.ToJsonString() for answer in answers}) == 1
    seen = await orch.app.repository.get_collection(collection_id, None)
    assert seen.generation == 2 and seen.old_physical_collections == (old_physical,)
    assert len(await orch.outbox(subjects.COLLECTION_SWITCHED)) == 1
    assert len(await orch.outbox(subjects.audit_subject("reindex.switch"))) == 1
