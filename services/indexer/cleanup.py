"""The cleanup loop: deletes the physical collections a reindex switch retired,
once due and only after the safety checks (DESIGN.md, step 6).

Every ``indexer_cleanup_interval_seconds`` it takes the due jobs one by one and
judges each (``indexer.domain.cleanup.judge``) against what is still
referenced *now*: any collection copy's live or staging collection, and any
alias target in the vector store. Then:

- all checks pass → delete it; job DELETED, audited ``cleanup.delete_collection``;
- it does not exist → job GONE (nothing to delete), audited as a skip;
- a system collection, or still referenced → job SKIPPED for good, audited;
- a staging collection younger than ``indexer_cleanup_min_staging_age_seconds``
  → tried again once it is old enough (audited once, not at every look).

Each decision keeps its checks' results with the job. The vector store being
unreachable is no decision: the job is tried again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from google.protobuf import struct_pb2
from prometheus_client import Counter

from indexer.adapters.cleanup_jobs import CleanupJob, CleanupJobs, Decision
from indexer.adapters.vector_store import VectorStore
from indexer.domain.cleanup import JobStatus, Verdict, judge
from kit.auth import Principal, Role
from kit.bus.subjects import audit_subject
from kit.events import new_envelope
from kit.logs import get_logger
from kit.sanitise import sanitise, sanitise_data
from vectorops.common.v1 import audit_pb2
from vectorops.events.v1 import audit_record_pb2, envelope_pb2

log = get_logger(__name__)

CLEANUP_DECISIONS = Counter(
    "vectorops_cleanup_decisions_total",
    "Retired physical collections judged by the cleanup loop, by decision "
    "(OK = deleted, or the safety check that kept it).",
    ["decision"],
)
CLEANUP_ERRORS = Counter(
    "vectorops_cleanup_errors_total",
    "Cleanup attempts that failed (e.g. the vector store unreachable) and are retried.",
)

SERVICE = "indexer"
_ACTOR = Principal(SERVICE, Role.SERVICE)
# Event ids of audit records: one per job and decision, so a record is written once.
_AUDIT_NAMESPACE = uuid.UUID("5d0c43a4-51a3-4c55-9d54-4a0fb6a1c6c1")
_MAX_RETRY_DELAY = timedelta(minutes=5)


def _now() -> datetime:
    return datetime.now(UTC)


class CleanupLoop:
    def __init__(
        self,
        jobs: CleanupJobs,
        store: VectorStore,
        *,
        interval_seconds: float,
        min_staging_age: timedelta,
        release: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        """``release(operation_id)`` gives back the quota reservation of the
        REINDEX whose retired collection a job settled."""
        self._jobs = jobs
        self._store = store
        self._interval = interval_seconds
        self._min_staging_age = min_staging_age
        self._release = release

    async def run(self, stop: asyncio.Event) -> None:
        """Look for due jobs every interval until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception as error:  # noqa: BLE001 - e.g. Postgres away: try next time
                log.warning("cleanup.pass_failed", error=str(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def run_once(self, now: datetime | None = None) -> list[Decision]:
        """Judge every job due at ``now`` (default: the current time)."""
        at = now or _now()
        decisions: list[Decision] = []
        while True:
            decision = await self._jobs.take_due(at, lambda job, refs: self._decide(job, refs, at))
            if decision is None:
                return decisions
            decisions.append(decision)

    async def _decide(
        self, job: CleanupJob, references: Mapping[str, Sequence[str]], now: datetime
    ) -> Decision:
        name = job.collection_name
        try:
            everything = {key: list(value) for key, value in references.items()}
            for alias, target in (await self._store.list_aliases()).items():
                everything.setdefault(target, []).append(f"alias:{alias}")
            exists = await self._store.collection_exists(name)
            verdict = judge(name, everything, exists, now, self._min_staging_age)
            if verdict.delete:
                await self._store.delete_collection(name)
        except Exception as error:  # noqa: BLE001 - the store away: the job waits
            CLEANUP_ERRORS.inc()
            delay = min(
                timedelta(seconds=self._interval) * 2 ** min(job.attempts, 10), _MAX_RETRY_DELAY
            )
            log.warning("cleanup.attempt_failed", collection=name, error=str(error))
            return Decision(
                None, error=sanitise(f"{type(error).__name__}: {error}"), retry_at=now + delay
            )
        CLEANUP_DECISIONS.labels(verdict.reason.value).inc()
        log.info(
            "cleanup.decided",
            collection=name,
            collection_id=job.collection_id,
            operation_id=job.operation_id,
            decision=verdict.reason.value,
            status=verdict.status.value,
        )
        if verdict.status is not JobStatus.PENDING:
            await self._release_room_of(job)
        if verdict.status is JobStatus.PENDING and job.reason == verdict.reason.value:
            return Decision(verdict)  # deferred again for the same reason: audited already
        return Decision(verdict, audit_record(job, verdict), audit_subject(verdict.audit_action))

    async def _release_room_of(self, job: CleanupJob) -> None:
        """The retired collection is settled (deleted, gone, or kept for good):
        the REINDEX that retired it no longer needs its room. Idempotent, best
        effort: a reservation that is not released expires."""
        if self._release is None:
            return
        try:
            await self._release(job.operation_id)
        except Exception as error:  # noqa: BLE001 - see the docstring
            log.warning("cleanup.release_failed", operation_id=job.operation_id, error=str(error))


def audit_record(job: CleanupJob, verdict: Verdict) -> envelope_pb2.Envelope:
    """The ``AuditRecord`` envelope of a decision; its event id is derived from
    the job and the decision, so the same decision is never audited twice."""
    details = struct_pb2.Struct()
    details.update(
        sanitise_data(
            {
                "collection": job.collection_name,
                "status": verdict.status.value,
                "retry_at": verdict.retry_at.isoformat() if verdict.retry_at else None,
                "checks": verdict.checks,
            }
        )
    )
    record = audit_record_pb2.AuditRecord(
        action=verdict.audit_action,
        outcome=audit_pb2.AUDIT_OUTCOME_SUCCESS,
        service=SERVICE,
        reason="" if verdict.delete else verdict.reason.value,
        details=details,
    )
    envelope = new_envelope(
        record,
        producer=SERVICE,
        operation_id=job.operation_id,
        collection_id=job.collection_id,
        owner_id=job.owner_id,
        actor=_ACTOR,
    )
    key = f"{job.operation_id}:{job.collection_name}:{verdict.reason.value}"
    envelope.event_id = str(uuid.uuid5(_AUDIT_NAMESPACE, key))
    return envelope
