"""The steps of a blue-green REINDEX: ``preflight``, ``staging``,
``reprocessing``, ``validation`` (here), ``switch`` and ``cleanup``
(``indexer.operations.reindex_switch``).

Nothing before the switch touches the live collection: the copy is built in a
staging collection beside it while it keeps serving. So a REINDEX that fails
or is cancelled before its switch deletes its staging collection at once
(``wind_up``) and the old collection goes on as if nothing happened. A
validation that does not pass is announced with every figure it measured, and
then fails the operation ``VALIDATION_FAILED`` (``verdict``).

Every step may run again from its start (a command is delivered at least
once): the reservation is idempotent per operation, the staging name recorded
first is reused, reprocessing skips the documents already recorded, and
validation measures again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from indexer.adapters.operation_journal import Outcome
from indexer.adapters.resources_client import ReservationStatus
from indexer.adapters.vector_store import Distance
from indexer.domain.reindex_plan import ReindexTarget, estimate_staging, physical_base
from indexer.domain.staging import parse_staging, staging_name
from indexer.domain.validation import Thresholds
from indexer.ingest_progress import IngestProgress, ProgressReporter
from indexer.metrics import (
    RESERVATIONS,
    STAGING_DISCARDED,
    VALIDATION_CHECK_FAILURES,
    VALIDATION_POINT_DEVIATION,
    VALIDATION_SCORE_DRIFT,
    VALIDATION_SECONDS,
    VALIDATION_TOPK_OVERLAP,
    VALIDATIONS,
)
from indexer.operations.base import (
    OperationOrder,
    OperationServices,
    StepCancelled,
    StepContext,
    StepOutput,
)
from indexer.operations.reindex_services import ReindexServices
from indexer.operations.reindex_switch import cleanup_step, switch_step
from indexer.reprocessing import (
    Reprocessor,
    StagingTarget,
    live_documents,
    staging_settings,
)
from indexer.validation import Side, Validator, checkpoint_of, validation_message
from kit.errors import DomainError, NotImplementedYet
from kit.logs import get_logger
from vectorops.events.v1 import operation_events_pb2 as events_pb2

log = get_logger(__name__)

# Steps before the switch: ending there leaves the live collection as it was,
# so the staging collection is of no use to anyone.
BEFORE_SWITCH = frozenset({"preflight", "staging", "reprocessing", "validation"})


class ValidationFailed(DomainError):
    """The staging collection did not pass validation: no switch."""


def _services(ctx: StepContext) -> ReindexServices:
    if ctx.services.reindex is None:
        raise NotImplementedYet(
            "this indexer is not set up to run REINDEX",
            reason="NOT_IMPLEMENTED",
            metadata={"method": "ReindexCommand"},
        )
    return ctx.services.reindex


def _target(ctx: StepContext) -> ReindexTarget:
    if ctx.order.reindex is None:
        raise RuntimeError(f"operation {ctx.order.operation_id} carries no reindex target")
    return ctx.order.reindex


def _staging(ctx: StepContext) -> str:
    return str(ctx.checkpoints["staging"]["staging_collection"])


# --- preflight -------------------------------------------------------------------------


async def preflight(ctx: StepContext) -> StepOutput:
    """Check the target config against the model registry and reserve quota for
    the staging copy. Nothing is written."""
    order, services, reindex = ctx.order, ctx.services, _services(ctx)
    target = _target(ctx)
    settings = staging_settings(target.config, services.registry)
    documents, vectors, stored = await services.repository.counts(order.collection_id)
    estimate = estimate_staging(documents, vectors, stored, order.collection.config, target.config)
    reservation = await reindex.resources.reserve(
        operation_id=order.operation_id,
        owner_id=order.owner_id,
        collection_id=order.collection_id,
        vectors=estimate.vectors,
        bytes=estimate.bytes,
        documents=documents,
    )
    if reservation.status is ReservationStatus.UNAVAILABLE:
        RESERVATIONS.labels("unavailable").inc()
        log.warning(
            "reindex.reservation_unavailable",
            operation_id=order.operation_id,
            why=reservation.note,
            vectors=estimate.vectors,
            bytes=estimate.bytes,
        )
    else:
        RESERVATIONS.labels("reserved").inc()
    ctx.figures.documents_total = documents
    reserved = reservation.bytes if reservation.status is not ReservationStatus.UNAVAILABLE else 0
    result = events_pb2.ReindexPreflightResult(
        dimension=settings.dimension,
        expected_vectors=estimate.vectors,
        reserved_bytes=reserved,
        documents_total=documents,
    )
    return StepOutput({"reservation": reservation.note, **_fields(result)}, result)


def _fields(result: events_pb2.ReindexPreflightResult) -> dict[str, int]:
    return {
        "dimension": result.dimension,
        "expected_vectors": result.expected_vectors,
        "reserved_bytes": result.reserved_bytes,
        "documents_total": result.documents_total,
    }


# --- staging ---------------------------------------------------------------------------


async def staging(ctx: StepContext) -> StepOutput:
    """Name the staging collection, record the name, then create it. A resumed
    run finds the name recorded and creates it again (idempotent)."""
    order, services, reindex = ctx.order, ctx.services, _services(ctx)
    settings = staging_settings(_target(ctx).config, services.registry)
    candidate = staging_name(physical_base(order.collection.physical_collection), datetime.now(UTC))
    name = await reindex.runs.record_staging(order.operation_id, order.collection_id, candidate)
    await services.store.create_collection(
        name, settings.dimension, Distance.COSINE, settings.quantization
    )
    parsed = parse_staging(name)
    created = parsed[1] if parsed is not None else datetime.now(UTC)
    created_time = Timestamp()
    created_time.FromDatetime(created)
    log.info("reindex.staging_created", operation_id=order.operation_id, staging=name)
    return StepOutput(
        {"staging_collection": name, "created_at": created.isoformat()},
        events_pb2.ReindexStagingResult(staging_collection=name, create_time=created_time),
    )


# --- reprocessing ----------------------------------------------------------------------

REPROCESSING_KEYS = ("documents_done", "documents_failed", "vectors_written", "bytes_written")


async def reprocessing(ctx: StepContext) -> StepOutput:
    """Every live document into staging with the target config; the documents
    this operation recorded already are skipped."""
    order, services, reindex = ctx.order, ctx.services, _services(ctx)
    runs = reindex.runs
    target = StagingTarget(
        operation_id=order.operation_id,
        collection_id=order.collection_id,
        staging_collection=_staging(ctx),
        settings=staging_settings(_target(ctx).config, services.registry),
    )
    documents = await live_documents(services.repository, order.collection_id)
    recorded = await runs.recorded_document_ids(order.operation_id)
    todo = [d for d in documents if d.document_id not in recorded]
    sources = {s.source_id: s for s in await services.repository.list_sources(order.collection_id)}
    done = await runs.totals(order.operation_id)
    figures = IngestProgress(
        documents_total=len(documents),
        documents_done=done.documents,
        documents_failed=done.documents_failed,
        documents_duplicate=done.documents_duplicate,
        vectors_written=done.vectors,
        bytes_written=done.bytes,
    )

    async def progress(report: IngestProgress) -> None:
        _show(ctx, report)
        await ctx.report()

    reporter = ProgressReporter(figures, progress, services.progress_interval_seconds)
    async with services.embed_for(order.operation_id, order.collection_id) as embed:
        reprocessor = Reprocessor(
            runs,
            services.store,
            embed,
            target,
            figures,
            reporter,
            reindex.limits,
            ctx.cancel.is_set,
            source_roots=services.source_roots,
            uploads=services.uploads,
        )
        completed = await reprocessor.run(todo, sources)
    await reporter.final()
    if not completed:
        ctx.check_cancelled()
        raise StepCancelled(f"reprocessing of {order.operation_id} stopped")
    totals = await runs.totals(order.operation_id)  # this run's and any earlier one's
    result = events_pb2.ReindexReprocessingResult(
        documents_done=totals.documents_done,
        documents_failed=totals.documents_failed,
        vectors_written=totals.vectors,
        bytes_written=totals.bytes,
    )
    ctx.figures.vectors, ctx.figures.bytes = totals.vectors, totals.bytes
    return StepOutput({key: getattr(result, key) for key in REPROCESSING_KEYS}, result)


def _show(ctx: StepContext, figures: IngestProgress) -> None:
    """The pipeline's tally as the operation's progress: ``documents_done`` counts
    the documents reprocessed, failures apart (``Progress``' meaning)."""
    shown = ctx.figures
    handled = figures.documents_done
    shown.documents_total = figures.documents_total
    shown.documents_done = handled - figures.documents_failed
    shown.documents_failed = figures.documents_failed
    shown.documents_duplicate = figures.documents_duplicate
    shown.vectors_written = shown.vectors = figures.vectors_written
    shown.bytes = figures.bytes_written
    shown.step_fraction = handled / max(figures.documents_total, 1)


# --- validation ------------------------------------------------------------------------


async def validation(ctx: StepContext) -> StepOutput:
    """Measure staging against the live collection. Whether it passed is in the
    checkpoint; ``verdict`` fails the operation after it is announced."""
    started = time.monotonic()
    order, services, reindex = ctx.order, ctx.services, _services(ctx)
    target = _target(ctx)
    thresholds: Thresholds = target.thresholds.or_defaults(reindex.default_thresholds)
    collection = order.collection
    store = services.store
    live_name = collection.alias_name
    if await store.get_alias(live_name) is None:  # not serving yet: probe what would
        live_name = collection.physical_collection
    validator = Validator(
        store,
        reindex.queries,
        probe_words=reindex.probe_words,
        scan_points=reindex.probe_scan_points,
        cancelled=ctx.cancel.is_set,
    )
    expected = (await reindex.runs.totals(order.operation_id)).vectors
    verdict = await validator.validate(
        Side.of(live_name, collection.config),
        Side.of(_staging(ctx), target.config),
        thresholds,
        expected,
        seed=order.operation_id,
    )
    checkpoint = checkpoint_of(verdict, datetime.now(UTC))
    _measure(verdict.passed, verdict.failed_checks(), checkpoint, time.monotonic() - started)
    log.info(
        "reindex.validated",
        operation_id=order.operation_id,
        passed=verdict.passed,
        failed_checks=verdict.failed_checks(),
        topk_overlap=verdict.topk_overlap,
        score_drift=verdict.score_drift,
        points=verdict.actual_point_count,
        expected=verdict.expected_point_count,
    )
    result = events_pb2.ReindexValidationResult(validation=validation_message(checkpoint))
    return StepOutput(checkpoint, result)


def _measure(passed: bool, failed: Sequence[str], figures: Mapping[str, Any], took: float) -> None:
    VALIDATION_SECONDS.observe(took)
    VALIDATIONS.labels("passed" if passed else "failed").inc()
    for name in failed:
        VALIDATION_CHECK_FAILURES.labels(name).inc()
    VALIDATION_TOPK_OVERLAP.observe(float(figures["topk_overlap"]))
    VALIDATION_SCORE_DRIFT.observe(float(figures["score_drift"]))
    VALIDATION_POINT_DEVIATION.observe(float(figures["point_count_deviation"]))


def verdict(step: str, checkpoint: Mapping[str, Any]) -> Exception | None:
    """The error that ends a REINDEX once ``step`` is announced: a validation
    that did not pass, with what failed; None to go on."""
    if step != "validation" or checkpoint.get("passed") is True:
        return None
    failed = [
        f"{c['name']} {float(c['measured']):.4g} (threshold {float(c['threshold']):.4g})"
        for c in checkpoint.get("checks") or ()
        if not c.get("passed")
    ]
    return ValidationFailed(
        "the staging collection did not pass validation: " + ", ".join(failed or ["unknown"]),
        reason="VALIDATION_FAILED",
    )


# --- the end of a REINDEX --------------------------------------------------------------


async def wind_up(
    services: OperationServices, order: OperationOrder, step: str | None, outcome: Outcome
) -> bool:
    """What a REINDEX leaves when it ends. Failed before its switch, or
    cancelled (the orchestrator accepts a cancel only before the switch): its
    staging collection is deleted at once. Its reservation is released, unless
    it completed: then the collection it retired holds that room until cleanup
    deletes it, and cleanup releases it (``CleanupLoop``).
    True when a staging collection was deleted. Never raises: the outcome must
    be announced whatever happens here."""
    reindex = services.reindex
    if reindex is None:
        return False
    deleted = False
    if outcome is Outcome.CANCELLED or (outcome is Outcome.FAILED and step in BEFORE_SWITCH):
        deleted = await discard_staging(services, reindex, order, str(outcome).lower())
    if outcome is Outcome.COMPLETED:
        return deleted
    try:
        await reindex.resources.release(order.operation_id)
    except Exception as error:  # noqa: BLE001 - an unreleased reservation expires
        log.warning("reindex.release_failed", operation_id=order.operation_id, error=str(error))
    return deleted


async def discard_staging(
    services: OperationServices, reindex: ReindexServices, order: OperationOrder, why: str
) -> bool:
    """Delete the operation's staging collection, unless it is what serves (the
    alias target or the live physical collection: then the switch happened and
    it is no staging any more). True when it is gone now."""
    try:
        record = await reindex.runs.staging_of(order.operation_id)
        if record is None:
            return False
        name = record.staging_collection
        copy = await services.repository.get_collection(order.collection_id)
        serving = {copy.physical_collection, order.collection.physical_collection}
        if name in serving or await services.store.get_alias(order.collection.alias_name) == name:
            log.error("reindex.staging_is_live", operation_id=order.operation_id, staging=name)
            return False
        await services.store.delete_collection(name)
        await reindex.runs.mark_staging_deleted(order.operation_id)
    except Exception as error:  # noqa: BLE001 - logged loudly; cleanup finds orphans later
        log.error("reindex.staging_not_deleted", operation_id=order.operation_id, error=str(error))
        return False
    STAGING_DISCARDED.labels(why).inc()
    log.info("reindex.staging_deleted", operation_id=order.operation_id, staging=name, why=why)
    return True


REINDEX_STEPS: Sequence = (
    ("preflight", preflight),
    ("staging", staging),
    ("reprocessing", reprocessing),
    ("validation", validation),
    ("switch", switch_step),
    ("cleanup", cleanup_step),
)
