"""The durable ``resources-usage`` consumer: usage deltas from VO_USAGE, each
envelope applied once however often it is delivered."""

from __future__ import annotations

from kit.bus.jetstream import Delivery, Reject
from kit.bus.subjects import USAGE_FILTER
from kit.bus.topology import USAGE, ConsumerSpec
from kit.events import EnvelopeError, parse_envelope, unpack
from kit.logs import get_logger
from resources.adapters.resources_repository import ResourcesRepository, UsageChange
from vectorops.events.v1 import usage_pb2

log = get_logger(__name__)

USAGE_CONSUMER = ConsumerSpec(
    stream=USAGE.name, durable="resources-usage", filter_subjects=(USAGE_FILTER,)
)
DELTA_TYPE = usage_pb2.UsageDelta.DESCRIPTOR.full_name


class UsageConsumer:
    def __init__(self, repository: ResourcesRepository) -> None:
        self._repository = repository

    async def handle(self, delivery: Delivery) -> None:
        try:
            envelope = parse_envelope(delivery.data)
        except EnvelopeError as error:
            raise Reject(str(error)) from error
        if envelope.type != DELTA_TYPE:
            # Snapshots (drift repair) are not applied yet: acknowledged, not retried.
            log.debug("usage.ignored", type=envelope.type, subject=delivery.subject)
            return
        delta = unpack(envelope, usage_pb2.UsageDelta)
        if not delta.owner_id:
            raise Reject(f"usage delta {envelope.event_id} names no owner")
        applied = await self._repository.apply_usage(
            UsageChange(
                event_id=envelope.event_id,
                owner_id=delta.owner_id,
                collection_id=delta.collection_id,
                collections=delta.collections_delta,
                vectors=delta.vectors_delta,
                bytes=delta.bytes_delta,
                documents=delta.documents_delta,
            )
        )
        log.info(
            "usage.delta", event_id=envelope.event_id, owner_id=delta.owner_id, applied=applied
        )
