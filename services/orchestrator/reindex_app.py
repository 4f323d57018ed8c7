"""Blue-green REINDEX, the application side: ``ReindexCollection`` starts the
operation (the indexer runs its six steps), and ``CompleteReindex`` is the
atomic switch the indexer asks for once validation passed.

Both go through the repository in one transaction each: the REINDEX operation
with its ReindexCommand's outbox row; the switch with its CollectionSwitched
and audit rows. The checks that depend on the collection's state run under its
row lock there (``check_reindex``, ``fence_switch``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import timedelta

from kit.auth import Principal, Role
from kit.embedding_models import ModelRegistry
from kit.errors import DomainError, PermissionDenied
from kit.logs import get_logger
from orchestrator import commands, metrics
from orchestrator.adapters.records import CollectionRecord, OperationRecord, request_hash
from orchestrator.adapters.repository import OrchestratorRepository
from orchestrator.admission import Admission, Planned
from orchestrator.application import Clock, owner_scope, utc_now
from orchestrator.config import OrchestratorSettings
from orchestrator.domain.collections import can_start
from orchestrator.domain.config import RequestedConfig, validate_config
from orchestrator.domain.fields import invalid_field, require
from orchestrator.domain.operations import OperationType
from orchestrator.domain.reindex import (
    CleanupDelay,
    Switch,
    SwitchRequest,
    Thresholds,
    check_reindex,
)
from orchestrator.switch_events import switch_rows
from vectorops.common.v1 import operation_pb2

log = get_logger(__name__)

ZERO_THRESHOLDS = Thresholds(0.0, 0.0, 0.0, 0, 0)


@dataclass(frozen=True)
class ReindexRequest:
    """A ReindexCollection request, as plain values."""

    collection_id: str
    config: RequestedConfig | None
    request_id: str
    expected_generation: int = 0
    thresholds: Thresholds = ZERO_THRESHOLDS  # overrides; 0 keeps the default


@dataclass(frozen=True)
class SwitchOutcome:
    """CompleteReindex's answer."""

    collection: CollectionRecord
    switch: Switch
    replayed: bool


@dataclass(frozen=True)
class ReindexPolicy:
    """The settings a reindex runs under."""

    thresholds: Thresholds
    cleanup_delay: CleanupDelay

    @classmethod
    def from_settings(cls, settings: OrchestratorSettings) -> ReindexPolicy:
        return cls(
            thresholds=Thresholds(
                point_count_tolerance=settings.orchestrator_reindex_point_count_tolerance,
                min_topk_overlap=settings.orchestrator_reindex_min_topk_overlap,
                max_score_drift=settings.orchestrator_reindex_max_score_drift,
                probe_query_count=settings.orchestrator_reindex_probe_query_count,
                top_k=settings.orchestrator_reindex_top_k,
            ),
            cleanup_delay=CleanupDelay(
                base=timedelta(seconds=settings.orchestrator_cleanup_base_delay_seconds),
                per_10k_vectors=timedelta(
                    seconds=settings.orchestrator_cleanup_per_10k_vectors_seconds
                ),
                cap=timedelta(seconds=settings.orchestrator_cleanup_max_delay_seconds),
            ),
        )


class ReindexApp:
    def __init__(
        self,
        repository: OrchestratorRepository,
        policy: ReindexPolicy,
        admission: Admission,
        registry: ModelRegistry | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._repo = repository
        self._policy = policy
        self._admission = admission
        self._registry = registry or ModelRegistry()
        self._now = clock

    async def reindex(self, principal: Principal, request: ReindexRequest) -> OperationRecord:
        """A REINDEX operation to ``request.config``; the collection goes
        PROCESSING and keeps serving from its live physical collection. A
        retry of the same request returns the first operation."""
        require(request.request_id, "request_id")
        require(request.collection_id, "collection_id")
        if request.config is None:
            raise invalid_field("config", "is required")
        if request.expected_generation < 0:
            raise invalid_field("expected_generation", "must be >= 0")
        target = validate_config(request.config, self._registry, field="config")
        thresholds = self._policy.thresholds.overridden_by(request.thresholds)
        fingerprint = request_hash(
            "reindex",
            request.collection_id,
            target,
            request.expected_generation,
            asdict(thresholds),
        )

        def admit(live: CollectionRecord) -> None:
            check_reindex(
                live.id,
                live.status,
                live.generation,
                live.config,
                target,
                request.expected_generation,
            )

        def start(operation_id: str | None):
            return self._repo.start_operation(
                request.collection_id,
                owner_scope(principal),
                OperationType.REINDEX,
                target,
                request.request_id,
                fingerprint,
                self._now(),
                lambda live, op: [
                    commands.reindex_command(live, op, principal, thresholds_message(thresholds))
                ],
                created_by=principal.id,
                admit=admit,
                operation_id=operation_id,
            )

        scope = owner_scope(principal)
        if await self._repo.request_seen(scope or "", request.request_id):
            _, op, _ = await start(None)  # a retry: the first result, no new admission
            return op
        # The checks run again under the row lock; here they keep a collection
        # that could not be reindexed anyway from being refused for quota instead.
        live = await self._repo.get_collection(request.collection_id, scope)
        can_start(live.status, live.active_operation_id, live.id)
        admit(live)
        planned = Planned(OperationType.REINDEX, live.owner_id, target, live.id, live=live)
        _, op, _ = await self._admission.start(planned, start)
        return op

    async def complete(self, principal: Principal, request: SwitchRequest) -> SwitchOutcome:
        """The switch (service role only). Counted by outcome; a refusal is
        raised as the domain's error (the servicer's interceptor maps it)."""
        started = time.perf_counter()
        try:
            _require_service(principal)
            _check_switch_request(request)
            collection, switch, replayed = await self._repo.complete_reindex(
                request,
                self._now(),
                self._policy.cleanup_delay,
                lambda collection, op, switch: switch_rows(
                    collection, op, switch, principal, request.request_id
                ),
            )
        except DomainError as refused:
            metrics.count_switch(metrics.refusal_outcome(refused.reason))
            raise
        if replayed:
            metrics.count_switch(metrics.REPLAYED)
        else:
            metrics.count_switch(metrics.SWITCHED, time.perf_counter() - started)
            log.info(
                "orchestrator.reindex_switched",
                operation_id=request.operation_id,
                collection_id=collection.id,
                generation=switch.to_generation,
                physical_collection=switch.physical_collection,
                retired=list(switch.retired_collections),
            )
        return SwitchOutcome(collection, switch, replayed)


def thresholds_message(thresholds: Thresholds) -> operation_pb2.ValidationThresholds:
    return operation_pb2.ValidationThresholds(**asdict(thresholds))


def thresholds_from(message: operation_pb2.ValidationThresholds) -> Thresholds:
    return Thresholds(
        point_count_tolerance=message.point_count_tolerance,
        min_topk_overlap=message.min_topk_overlap,
        max_score_drift=message.max_score_drift,
        probe_query_count=message.probe_query_count,
        top_k=message.top_k,
    )


def _require_service(principal: Principal) -> None:
    if principal.role is not Role.SERVICE:
        raise PermissionDenied(
            "CompleteReindex is internal: only a vectorops service may call it",
            reason="PERMISSION_DENIED",
            metadata={"required_role": Role.SERVICE.value},
        )


def _check_switch_request(request: SwitchRequest) -> None:
    require(request.operation_id, "operation_id")
    require(request.collection_id, "collection_id")
    require(request.staging_collection, "staging_collection")
    require(request.request_id, "request_id")
    if request.expected_generation < 1:
        raise invalid_field("expected_generation", "must be the generation the reindex began at")
    if not request.validation:
        raise invalid_field("validation", "is required")
    for name in ("vector_count", "document_count", "stored_bytes"):
        if getattr(request, name) < 0:
            raise invalid_field(name, "must be >= 0")
