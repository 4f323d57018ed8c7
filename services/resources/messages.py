"""Domain values ⇄ ``vectorops.resources.v1`` messages."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2

from kit.embedding_models import Quantization
from resources.adapters.resources_repository import Reservation
from resources.domain.quotas import LIMITS, CollectionUsage, Held, Quota, Usage, Violation
from resources.domain.usage_drift import CollectionDrift
from vectorops.common.v1 import config_pb2
from vectorops.resources.v1 import resource_service_pb2 as api
from vectorops.resources.v1 import resources_pb2 as pb

_QUANTIZATIONS = {
    config_pb2.QUANTIZATION_UNSPECIFIED: Quantization.FLOAT32,
    config_pb2.QUANTIZATION_FLOAT32: Quantization.FLOAT32,
    config_pb2.QUANTIZATION_FLOAT16: Quantization.FLOAT16,
    config_pb2.QUANTIZATION_INT8: Quantization.INT8,
}
_STATUSES = {
    "active": pb.RESERVATION_STATUS_ACTIVE,
    "released": pb.RESERVATION_STATUS_RELEASED,
    "expired": pb.RESERVATION_STATUS_EXPIRED,
}


def quantization(value: int) -> Quantization:
    return _QUANTIZATIONS.get(value, Quantization.FLOAT32)


def timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def quota_message(quota: Quota) -> pb.Quota:
    message = pb.Quota(
        owner_id=quota.owner_id,
        is_default=quota.is_default,
        update_time=timestamp(quota.updated_at),
    )
    for name in LIMITS:
        value = quota.limit(name)
        if value is not None:
            setattr(message, name, value)
    return message


def quota_values(message: pb.Quota, names: list[str]) -> dict[str, int | None]:
    """The new values of the named limits; one unset in the message becomes unlimited."""
    return {name: getattr(message, name) if message.HasField(name) else None for name in names}


def violation_message(violation: Violation) -> pb.QuotaViolation:
    return pb.QuotaViolation(
        limit=violation.limit,
        limit_value=violation.limit_value,
        current=violation.current,
        requested=violation.requested,
    )


def reservation_message(reservation: Reservation, now: datetime) -> pb.Reservation:
    status = reservation.status(now)
    ended = reservation.released_at if status == "released" else None
    if status == "expired":
        ended = reservation.expires_at
    return pb.Reservation(
        operation_id=reservation.operation_id,
        owner_id=reservation.owner_id,
        collection_id=reservation.collection_id,
        operation_type=reservation.operation_type,
        vectors=reservation.vectors,
        bytes=reservation.bytes,
        documents=reservation.documents,
        status=_STATUSES[status],
        create_time=timestamp(reservation.created_at),
        expire_time=timestamp(reservation.expires_at),
        end_time=timestamp(ended),
    )


def usage_message(usage: Usage, held: Held, collections: list[CollectionUsage]) -> pb.Usage:
    return pb.Usage(
        owner_id=usage.owner_id,
        collections=usage.collections,
        vectors=usage.vectors,
        stored_bytes=usage.stored_bytes,
        documents=usage.documents,
        active_operations=held.operations,
        reserved_vectors=held.vectors,
        reserved_bytes=held.bytes,
        collection_usage=[collection_usage_message(c) for c in collections],
        update_time=timestamp(usage.updated_at),
    )


def collection_usage_message(usage: CollectionUsage) -> pb.CollectionUsage:
    return pb.CollectionUsage(
        collection_id=usage.collection_id,
        vectors=usage.vectors,
        stored_bytes=usage.stored_bytes,
        documents=usage.documents,
    )


def drift_message(drift: CollectionDrift) -> api.CollectionUsageDrift:
    message = api.CollectionUsageDrift(collection_id=drift.collection_id)
    if drift.recorded is not None:
        message.recorded.CopyFrom(collection_usage_message(drift.recorded))
    if drift.measured is not None:
        message.measured.CopyFrom(collection_usage_message(drift.measured))
    return message
