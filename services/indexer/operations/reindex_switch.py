"""The last two steps of a blue-green REINDEX: ``switch`` and ``cleanup``.

``switch`` asks the orchestrator to make the staging collection live
(``CompleteReindex``: one Postgres transaction there, fenced by the generation
the reindex started from), then applies the answer here: the alias first, then
the collection copy and the documents' figures (``CollectionSwitcher``). The
request is recorded before the call and the answer after it, so a resumed run
switches nothing twice and needs no second call; a repeated call is answered
with the first result anyway. While the orchestrator is unreachable, or has
not yet seen validation pass (its copy of the event may be in flight), the call
is tried again with backoff until ``deadline_seconds``; the CollectionSwitched
event, recorded by its consumer, is an answer too.

``cleanup`` schedules the deletion of the retired physical collections (one
cleanup job each, due at the switch's ``cleanup_not_before``) and completes:
the REINDEX is done once the deletions are *scheduled*. The cleanup loop
deletes them later, after the safety checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter

from indexer.adapters.orchestrator_client import SwitchAnswer, SwitchRequest
from indexer.adapters.reindex_switches import SwitchRecord, SwitchTarget
from indexer.metrics import SWITCH_SECONDS
from indexer.operations.base import StepCancelled, StepContext, StepOutput
from indexer.operations.switch_services import SwitchServices
from kit.errors import DeadlineExceeded, FailedPrecondition, Unavailable
from kit.logs import get_logger
from vectorops.common.v1 import operation_pb2
from vectorops.events.v1 import operation_events_pb2 as events_pb2

log = get_logger(__name__)

SWITCH_CALLS = Counter(
    "vectorops_reindex_switch_calls_total",
    "CompleteReindex calls the switch step made, by outcome: switched, replayed, "
    "retried (orchestrator unreachable or validation not seen yet) or refused.",
    ["outcome"],
)

# Refusals that may pass by themselves: the orchestrator has not yet applied the
# validation checkpoint (its event is in flight).
_NOT_YET = "VALIDATION_NOT_PASSED"
_FIRST_DELAY_SECONDS = 0.1
_MAX_DELAY_SECONDS = 2.0


def _services(ctx: StepContext) -> SwitchServices:
    services = ctx.services.reindex_switch
    if services is None:
        raise RuntimeError("this indexer has no switch services configured")
    return services


# --- switch --------------------------------------------------------------------------


async def switch_step(ctx: StepContext) -> StepOutput:
    with SWITCH_SECONDS.time():
        return await _switch(ctx)


async def _switch(ctx: StepContext) -> StepOutput:
    services = _services(ctx)
    order = ctx.order
    staging = str(ctx.checkpoints["staging"]["staging_collection"])
    from_generation = order.collection.generation
    switches = services.switcher.switches
    record = await switches.record_request(
        order.operation_id,
        order.collection_id,
        staging,
        from_generation,
        _target_config(ctx),
    )
    config: Mapping[str, Any] = record.config
    if not record.answered:  # else a resumed run: the orchestrator has switched already
        answer = await _complete(ctx, services, staging)
        if answer.physical_collection != staging:
            raise FailedPrecondition(
                f"the orchestrator switched to {answer.physical_collection}, not {staging}",
                reason="STAGING_MISMATCH",
                metadata={"operation_id": order.operation_id},
            )
        answered = await switches.record_answer(
            order.operation_id,
            answer.generation,
            answer.retired_collections,
            answer.cleanup_not_before,
        )
        assert answered is not None  # its request was recorded above
        record = answered
        config = answer.config or config
    assert record.generation is not None and record.cleanup_not_before is not None
    applied = await services.switcher.apply(
        SwitchTarget(
            collection_id=order.collection_id,
            operation_id=order.operation_id,
            generation=record.generation,
            alias_name=order.collection.alias_name,
            physical_collection=staging,
            config=config,
        )
    )
    not_before = Timestamp()
    not_before.FromDatetime(record.cleanup_not_before)
    return StepOutput(
        # The orchestrator's own switch checkpoint, key for key.
        {
            "from_generation": from_generation,
            "to_generation": record.generation,
            "physical_collection": staging,
        },
        events_pb2.ReindexSwitchResult(
            generation=record.generation,
            physical_collection=staging,
            retired_collections=list(record.retired_collections),
            cleanup_not_before=not_before,
            alias_moved=applied.alias_at_target,
        ),
    )


def _target_config(ctx: StepContext) -> Mapping[str, Any]:
    target = ctx.order.reindex
    if target is None:
        raise RuntimeError(f"operation {ctx.order.operation_id} carries no reindex target")
    return target.config


async def _complete(ctx: StepContext, services: SwitchServices, staging: str) -> SwitchAnswer:
    """CompleteReindex, tried again while the outcome may still change."""
    request = await _request(ctx, services, staging)
    switches = services.switcher.switches
    deadline = time.monotonic() + services.deadline_seconds
    delay = _FIRST_DELAY_SECONDS
    while True:
        # A cancel the orchestrator accepted means it never switched: stop here.
        ctx.check_cancelled()
        try:
            answer = await services.control.complete_reindex(request)
        except (Unavailable, DeadlineExceeded) as error:
            last: Exception = error
        except FailedPrecondition as error:
            if error.reason == "OPERATION_NOT_ACTIVE" and ctx.cancel.is_set():
                raise StepCancelled(str(error)) from error
            if error.reason != _NOT_YET:
                SWITCH_CALLS.labels("refused").inc()
                raise
            last = error
        else:
            SWITCH_CALLS.labels("replayed" if answer.replayed else "switched").inc()
            return answer
        SWITCH_CALLS.labels("retried").inc()
        # The CollectionSwitched consumer may have heard the answer meanwhile.
        heard = await switches.get(request.operation_id)
        if heard is not None and heard.answered:
            return _answer_of(heard, staging)
        if time.monotonic() + delay > deadline:
            raise _gave_up(services.deadline_seconds, last) from last
        log.info("reindex.switch_retry", operation_id=request.operation_id, why=str(last))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.cancel.wait(), delay)
        delay = min(delay * 2, _MAX_DELAY_SECONDS)


async def _request(ctx: StepContext, services: SwitchServices, staging: str) -> SwitchRequest:
    order = ctx.order
    figures = await services.switcher.switches.staged_figures(order.operation_id)
    return SwitchRequest(
        operation_id=order.operation_id,
        collection_id=order.collection_id,
        expected_generation=order.collection.generation,
        staging_collection=staging,
        validation=await _validation(ctx, services),
        vector_count=await ctx.services.store.count(staging),
        document_count=figures.documents,
        stored_bytes=figures.bytes,
    )


async def _validation(ctx: StepContext, services: SwitchServices) -> operation_pb2.ValidationResult:
    """The validation step's full result as it announced it, or (should that
    announcement hold none) what its checkpoint says."""
    steps = await services.journal.completed_steps(ctx.order.operation_id)
    recorded = steps.get("validation")
    if recorded is not None:
        announced = events_pb2.StepCompleted.FromString(recorded.step_completed)
        if announced.HasField("reindex_validation"):
            return announced.reindex_validation.validation
    passed = ctx.checkpoints.get("validation", {}).get("passed") is True
    return operation_pb2.ValidationResult(passed=passed)


def _answer_of(record: SwitchRecord, staging: str) -> SwitchAnswer:
    assert record.generation is not None and record.cleanup_not_before is not None
    return SwitchAnswer(
        replayed=True,
        generation=record.generation,
        physical_collection=staging,
        retired_collections=record.retired_collections,
        cleanup_not_before=record.cleanup_not_before,
        config=None,
    )


def _gave_up(seconds: float, last: Exception) -> Exception:
    """A final error (never the transient BACKEND_UNAVAILABLE): the operation fails."""
    if isinstance(last, FailedPrecondition):
        return FailedPrecondition(
            f"the orchestrator did not see validation pass within {seconds:g} s",
            reason=_NOT_YET,
            metadata=dict(last.metadata),
        )
    return Unavailable(
        f"the orchestrator did not confirm the switch within {seconds:g} s: {last}",
        reason="ORCHESTRATOR_UNAVAILABLE",
    )


# --- cleanup -------------------------------------------------------------------------


async def cleanup_step(ctx: StepContext) -> StepOutput:
    services = _services(ctx)
    order = ctx.order
    record = await services.switcher.switches.get(order.operation_id)
    if record is None or not record.answered or record.cleanup_not_before is None:
        raise RuntimeError(f"operation {order.operation_id} has no recorded switch to clean up")
    retired = list(record.retired_collections)
    await services.cleanup_jobs.schedule(
        order.operation_id, order.collection_id, order.owner_id, retired, record.cleanup_not_before
    )
    delete_after = Timestamp()
    delete_after.FromDatetime(record.cleanup_not_before)
    log.info(
        "reindex.cleanup_scheduled",
        operation_id=order.operation_id,
        collections=retired,
        delete_after=record.cleanup_not_before.isoformat(),
    )
    return StepOutput(
        {"scheduled_collections": retired, "delete_after": record.cleanup_not_before.isoformat()},
        events_pb2.ReindexCleanupResult(scheduled_collections=retired, delete_after=delete_after),
    )
