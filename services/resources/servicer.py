"""``vectorops.resources.v1.ResourceService``: who may ask, then messages ⇄ the repository.

A user reads their own quota and usage; an admin or a service any owner's.
SetQuota and ReconcileUsage need the admin role, Reserve and Release the
service role. A quota change and every refused reservation are audited
(``quota_audit``), and so is every reconciliation (``usage_audit``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import grpc

from kit.auth import Principal, Role
from kit.errors import FieldViolation, InvalidArgument, ResourceExhausted, Unavailable
from kit.grpc.interceptors import current_principal
from kit.grpc.request_times import request_duration, request_time
from kit.logs import get_logger
from resources import messages, metrics, quota_audit, usage_audit
from resources.adapters.indexer_usage import IndexerUsageClient
from resources.adapters.resources_repository import ReservationRequest, ResourcesRepository
from resources.domain.estimates import EstimateInput, estimate
from resources.domain.headroom import Floors, Headroom, shortfalls
from resources.domain.quotas import Demand, check_limit_values, parse_update_mask
from vectorops.common.v1 import operation_pb2
from vectorops.resources.v1 import resource_service_pb2 as api
from vectorops.resources.v1 import resource_service_pb2_grpc

Context = grpc.aio.ServicerContext

log = get_logger(__name__)


def _require(**fields: str) -> None:
    missing = [name for name, value in fields.items() if not value]
    if missing:
        raise InvalidArgument(
            f"missing required fields: {', '.join(missing)}",
            reason="INVALID_ARGUMENT",
            field_violations=[FieldViolation(name, "required") for name in missing],
        )


def _readable_owner(principal: Principal, owner_id: str) -> str:
    """The owner the caller asks about; a user may only ask about themself."""
    owner = owner_id or principal.id
    if owner != principal.id:
        principal.require(Role.ADMIN, Role.SERVICE)
    return owner


# Estimates are int64 on the wire and BIGINT in Postgres.
_INT64_MAX = 2**63 - 1


def _countable(*figures: int) -> None:
    """Refuse inputs whose estimate is past what int64 holds (absurd document
    counts or dimensions), instead of failing where the number is stored."""
    if any(figure > _INT64_MAX for figure in figures):
        raise InvalidArgument(
            "the estimate is too large to count: check document_count and dimension",
            reason="INVALID_ARGUMENT",
            field_violations=[FieldViolation("document_count", "too large to estimate")],
        )


def _collections_needed(operation_type: int) -> int:
    return 1 if operation_type == operation_pb2.OPERATION_TYPE_INDEX else 0


NO_FLOORS = Floors()


def _unmeasured() -> Headroom:
    return Headroom(free_disk_bytes=None, free_memory_bytes=None)


class ResourceServicer(resource_service_pb2_grpc.ResourceServiceServicer):
    def __init__(
        self,
        repository: ResourcesRepository,
        reservation_ttl: timedelta,
        headroom: Callable[[], Headroom] = _unmeasured,
        floors: Floors = NO_FLOORS,
        indexer_usage: IndexerUsageClient | None = None,
    ) -> None:
        self._repository = repository
        self._ttl = reservation_ttl
        self._headroom = headroom
        self._floors = floors
        self._indexer_usage = indexer_usage

    async def GetQuota(
        self, request: api.GetQuotaRequest, context: Context
    ) -> api.GetQuotaResponse:
        owner = _readable_owner(current_principal(), request.owner_id)
        return api.GetQuotaResponse(
            quota=messages.quota_message(await self._repository.quota(owner))
        )

    async def SetQuota(
        self, request: api.SetQuotaRequest, context: Context
    ) -> api.SetQuotaResponse:
        principal = current_principal()
        principal.require(Role.ADMIN)
        _require(**{"quota.owner_id": request.quota.owner_id, "request_id": request.request_id})
        names = parse_update_mask(list(request.update_mask.paths))
        values = messages.quota_values(request.quota, names)
        check_limit_values(values)
        owner = request.quota.owner_id
        audit = quota_audit.quota_set(principal, owner, request.request_id, values)
        quota = await self._repository.set_quota(owner, values, audit)
        return api.SetQuotaResponse(quota=messages.quota_message(quota))

    async def Estimate(
        self, request: api.EstimateRequest, context: Context
    ) -> api.EstimateResponse:
        owner = _readable_owner(current_principal(), request.owner_id)
        figures = estimate(
            EstimateInput(
                documents=request.document_count,
                dimension=request.dimension,
                quantization=messages.quantization(request.quantization),
                total_document_bytes=request.total_document_bytes,
                chunk_tokens=request.chunk_size,
                overlap_tokens=request.chunk_overlap,
            )
        )
        _countable(figures.vectors, figures.bytes, figures.documents)
        violations = await self._repository.check(
            owner,
            Demand(
                vectors=figures.vectors,
                bytes=figures.bytes,
                documents=figures.documents,
                collections=_collections_needed(request.operation_type),
            ),
        )
        return api.EstimateResponse(
            estimated_vectors=figures.vectors,
            estimated_bytes=figures.bytes,
            estimated_documents=figures.documents,
            method=figures.method,
            within_quota=not violations,
            violations=[messages.violation_message(v) for v in violations],
        )

    async def Reserve(self, request: api.ReserveRequest, context: Context) -> api.ReserveResponse:
        principal = current_principal()
        principal.require(Role.SERVICE)
        _require(
            operation_id=request.operation_id,
            owner_id=request.owner_id,
            request_id=request.request_id,
        )
        negative = [
            FieldViolation(name, "must not be negative")
            for name in ("vectors", "bytes", "documents")
            if getattr(request, name) < 0
        ]
        if negative:
            raise InvalidArgument(
                "reserved amounts must not be negative",
                reason="INVALID_ARGUMENT",
                field_violations=negative,
            )
        ttl = request_duration(request, "ttl")
        if ttl is None:
            ttl = self._ttl
        if ttl <= timedelta(0):
            raise InvalidArgument(
                "ttl must be positive",
                reason="INVALID_ARGUMENT",
                field_violations=[FieldViolation("ttl", "must be positive")],
            )
        demand = Demand(
            vectors=request.vectors,
            bytes=request.bytes,
            documents=request.documents,
            collections=_collections_needed(request.operation_type),
        )
        short = shortfalls(self._headroom(), self._floors, demand)
        try:
            reservation, replayed = await self._repository.reserve(
                ReservationRequest(
                    operation_id=request.operation_id,
                    owner_id=request.owner_id,
                    collection_id=request.collection_id,
                    operation_type=request.operation_type,
                    demand=demand,
                    expires_at=request_time(request, "expire_time"),
                    ttl=ttl,
                ),
                short,
            )
        except ResourceExhausted as refusal:
            metrics.count_refusal(refusal)
            log.info(
                "resources.reserve_refused",
                operation_id=request.operation_id,
                owner_id=request.owner_id,
                reason=refusal.reason,
            )
            await self._repository.record_refusal(
                quota_audit.quota_refused(
                    principal,
                    request.owner_id,
                    request.request_id,
                    refusal,
                    operation_id=request.operation_id,
                    collection_id=request.collection_id,
                    requested={
                        "vectors": request.vectors,
                        "bytes": request.bytes,
                        "documents": request.documents,
                    },
                )
            )
            raise
        log.info(
            "resources.reserved",
            operation_id=request.operation_id,
            owner_id=request.owner_id,
            vectors=reservation.vectors,
            bytes=reservation.bytes,
            replayed=replayed,
        )
        now = await self._repository.now()
        return api.ReserveResponse(
            reservation=messages.reservation_message(reservation, now), replayed=replayed
        )

    async def Release(self, request: api.ReleaseRequest, context: Context) -> api.ReleaseResponse:
        current_principal().require(Role.SERVICE)
        _require(operation_id=request.operation_id, request_id=request.request_id)
        reservation = await self._repository.release(
            request.operation_id, keep_room=request.keep_room
        )
        log.info(
            "resources.released",
            operation_id=request.operation_id,
            held=reservation is not None,
            keep_room=request.keep_room,
        )
        if reservation is None:
            return api.ReleaseResponse()
        now = await self._repository.now()
        return api.ReleaseResponse(reservation=messages.reservation_message(reservation, now))

    async def GetUsage(
        self, request: api.GetUsageRequest, context: Context
    ) -> api.GetUsageResponse:
        owner = _readable_owner(current_principal(), request.owner_id)
        usage, held = await self._repository.usage(owner)
        collections = (
            await self._repository.collection_usage(owner) if request.include_collections else []
        )
        quota = await self._repository.quota(owner)
        return api.GetUsageResponse(
            usage=messages.usage_message(usage, held, collections),
            quota=messages.quota_message(quota),
        )

    async def ReconcileUsage(
        self, request: api.ReconcileUsageRequest, context: Context
    ) -> api.ReconcileUsageResponse:
        principal = current_principal()
        principal.require(Role.ADMIN)
        _require(owner_id=request.owner_id, request_id=request.request_id)
        if self._indexer_usage is None:
            raise Unavailable(
                "no indexer is configured to measure usage",
                reason="BACKEND_UNAVAILABLE",
                metadata={"backend": "indexer"},
            )
        owner = request.owner_id
        # Measured before the transaction: an unreachable indexer changes nothing.
        measured = await self._indexer_usage.collections(owner)
        reconciliation = await self._repository.replace_usage(
            owner,
            measured,
            lambda done: usage_audit.usage_reconciled(principal, owner, request.request_id, done),
        )
        _, held = await self._repository.usage(owner)
        return api.ReconcileUsageResponse(
            usage_before=messages.usage_message(
                reconciliation.before, held, reconciliation.recorded
            ),
            usage_after=messages.usage_message(reconciliation.after, held, reconciliation.measured),
            drifted_collections=[messages.drift_message(d) for d in reconciliation.drifted],
        )
