"""AuditService: maps messages to the repository and the chain verifier. Admins see
every event; anyone else only events whose owner is them. VerifyChain is admin only."""

from __future__ import annotations

from google.protobuf import json_format, timestamp_pb2

from audit import metrics
from audit.adapters.audit_repository import AuditFilter, AuditRepository, StoredRow
from audit.domain.chain import ChainVerifier
from kit.auth import Principal, Role
from kit.db.keyset import SortKey, page_size, uuid_or_not_found
from kit.errors import InvalidArgument, NotFound, PermissionDenied
from kit.grpc.interceptors import current_principal
from kit.grpc.request_times import request_time
from vectorops.audit.v1 import audit_pb2, audit_service_pb2
from vectorops.common.v1 import audit_pb2 as common_audit_pb2
from vectorops.common.v1 import principal_pb2

_BY_SEQUENCE = SortKey(("sequence",), (int,))
NOT_FOUND_REASON = "AUDIT_EVENT_NOT_FOUND"


def _timestamp(value) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def to_message(row: StoredRow) -> audit_pb2.AuditEvent:
    content = row.entry.content
    event = audit_pb2.AuditEvent(
        sequence=content.sequence,
        id=content.event_id,
        event_time=_timestamp(content.occurred_at),
        record_time=_timestamp(row.stored_at),
        principal_id=content.principal,
        role=principal_pb2.Role.Value(content.role),
        owner_id=content.owner_id,
        action=content.action,
        collection_id=content.collection_id,
        operation_id=content.operation_id,
        outcome=common_audit_pb2.AuditOutcome.Value(content.outcome),
        service=content.service,
        request_id=content.request_id,
        trace_id=content.trace_id,
        prev_hash=row.entry.previous_hash,
        hash=row.entry.content_hash,
    )
    json_format.ParseDict(dict(content.details), event.details)
    return event


def _visible_owner(principal: Principal, requested: str) -> str:
    """The owner filter a caller may use: admins any, others only themselves."""
    if principal.is_admin:
        return requested
    if requested and requested != principal.id:
        raise PermissionDenied(
            "you may only read audit events about your own resources",
            reason="PERMISSION_DENIED",
            metadata={"owner_id": requested},
        )
    return principal.id


def _time(request, name: str):
    return request_time(request, name)


def _filters(request, owner_id: str) -> AuditFilter:
    outcome = ""
    if request.outcome:
        if request.outcome not in common_audit_pb2.AuditOutcome.values():
            raise InvalidArgument(
                f"unknown outcome {request.outcome}",
                reason="INVALID_ARGUMENT",
                metadata={"field": "outcome"},
            )
        outcome = common_audit_pb2.AuditOutcome.Name(request.outcome)
    return AuditFilter(
        owner_id=owner_id,
        principal=request.principal_id,
        collection_id=request.collection_id,
        operation_id=request.operation_id,
        action=request.action,
        outcome=outcome,
        start_time=_time(request, "start_time"),
        end_time=_time(request, "end_time"),
    )


class AuditServicer:
    def __init__(self, repository: AuditRepository) -> None:
        self._repository = repository

    async def ListAuditEvents(self, request, context):
        principal = current_principal()
        size = page_size(request.page_size)
        filters = _filters(request, _visible_owner(principal, request.owner_id))
        token_filters = {**filters.__dict__, "descending": request.descending}
        after = _BY_SEQUENCE.after(request.page_token, token_filters)
        rows = await self._repository.list(
            filters,
            after=None if after is None else after[0],
            limit=size + 1,
            descending=request.descending,
        )
        token = _BY_SEQUENCE.next_token(
            [{"sequence": row.entry.content.sequence} for row in rows], size, token_filters
        )
        return audit_service_pb2.ListAuditEventsResponse(
            events=[to_message(row) for row in rows[:size]], next_page_token=token
        )

    async def GetAuditEvent(self, request, context):
        principal = current_principal()
        event_id = uuid_or_not_found(request.event_id, NOT_FOUND_REASON, "event_id")
        row = await self._repository.get(event_id)
        # Someone else's event is as absent as a missing one: no existence oracle.
        if row is None or not (principal.is_admin or row.entry.content.owner_id == principal.id):
            raise NotFound(
                f"audit event {request.event_id!r} not found",
                reason=NOT_FOUND_REASON,
                metadata={"event_id": request.event_id},
            )
        return audit_service_pb2.GetAuditEventResponse(event=to_message(row))

    async def VerifyChain(self, request, context):
        current_principal().require(Role.ADMIN)
        if request.start_sequence < 0 or request.end_sequence < 0:
            raise InvalidArgument(
                "start_sequence and end_sequence must not be negative",
                reason="INVALID_ARGUMENT",
                metadata={"field": "start_sequence"},
            )
        start = request.start_sequence or 1
        end = request.end_sequence or None
        previous = await self._repository.hash_before(start)
        verifier = ChainVerifier(after_sequence=start - 1, after_hash=previous)
        async for entry in self._repository.walk(start, end):
            if not verifier.feed(entry):
                break
        report = verifier.report()
        metrics.CHAIN_CHECKS.labels("rpc", "ok" if report.ok else "broken").inc()
        response = audit_service_pb2.VerifyChainResponse(
            ok=report.ok,
            events_checked=report.checked,
            last_sequence=report.last_sequence,
            last_hash=report.last_hash,
        )
        if report.broken is not None:
            response.first_broken_sequence = report.broken.sequence
            response.failure = report.broken.failure
        return response
