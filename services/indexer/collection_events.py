"""The indexer's consumer of the orchestrator's collection events:
``indexer-collection-events`` on VO_EVENTS, filter ``vo.evt.collection.>``.

``CollectionSwitched`` is the orchestrator's switch told a second way (the
first is the CompleteReindex answer): should this process have died between
the call and the alias move, the event moves the alias and switches the copy,
exactly as the switch step would (``CollectionSwitcher``: idempotent, and an
older generation than the copy's is ignored). It is also recorded as the
switch's answer, so a switch step still waiting for one can go on.
``CollectionStatusChanged`` needs nothing here: search decides liveness by
the alias.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC

from indexer.adapters.reindex_switches import CopyChange, SwitchTarget
from indexer.collection_switch import CollectionSwitcher
from kit.bus import subjects
from kit.bus.jetstream import Delivery, JetStream, Reject
from kit.bus.topology import EVENTS, ConsumerSpec
from kit.events import EnvelopeError, parse_envelope, unpack
from kit.logs import get_logger
from vectorops.events.v1 import collection_events_pb2 as events_pb2

log = get_logger(__name__)

DURABLE = "indexer-collection-events"
_SWITCHED = events_pb2.CollectionSwitched.DESCRIPTOR.full_name
_STATUS = events_pb2.CollectionStatusChanged.DESCRIPTOR.full_name


def consumer_spec(ack_wait_seconds: float = 30, max_deliver: int = 10) -> ConsumerSpec:
    return ConsumerSpec(
        stream=EVENTS.name,
        durable=DURABLE,
        filter_subjects=(subjects.COLLECTION_EVENTS_FILTER,),
        max_deliver=max_deliver,
        ack_wait_seconds=ack_wait_seconds,
    )


class CollectionEventConsumer:
    def __init__(self, switcher: CollectionSwitcher, spec: ConsumerSpec | None = None) -> None:
        self._switcher = switcher
        self.spec = spec or consumer_spec()

    async def run(self, bus: JetStream, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, one event at a time (in stream order)."""
        await bus.consume(self.spec, self.handle, concurrency=1, stop=stop)

    async def handle(self, delivery: Delivery) -> None:
        try:
            envelope = parse_envelope(delivery.data)
            if envelope.type == _SWITCHED:
                event = unpack(envelope, events_pb2.CollectionSwitched)
                for name in ("collection_id", "operation_id"):
                    _uuid(getattr(event, name), name)
                await self.switched(event)
            elif envelope.type == _STATUS:
                log.debug("collection.status_ignored", collection_id=envelope.collection_id)
            else:
                log.warning("collection.event_unknown", type=envelope.type)
        except EnvelopeError as error:
            raise Reject(str(error)) from error

    async def switched(self, event: events_pb2.CollectionSwitched) -> CopyChange:
        if event.HasField("cleanup_not_before"):
            # An answer for a switch step still waiting on the orchestrator (a
            # no-op when this indexer did not ask, or already has the answer).
            await self._switcher.switches.record_answer(
                event.operation_id,
                event.generation,
                list(event.retired_collections),
                event.cleanup_not_before.ToDatetime(tzinfo=UTC),
            )
        applied = await self._switcher.apply(
            SwitchTarget(
                collection_id=event.collection_id,
                operation_id=event.operation_id,
                generation=event.generation,
                alias_name=event.alias_name,
                physical_collection=event.physical_collection,
                config=None,  # the one recorded with the switch request
            ),
            why="event",
        )
        if applied.change in (CopyChange.STALE, CopyChange.UNKNOWN):
            log.info(
                "collection.switch_event_ignored",
                collection_id=event.collection_id,
                generation=event.generation,
                change=applied.change.value,
            )
        return applied.change


def _uuid(value: str, name: str) -> None:
    try:
        uuid.UUID(value)
    except ValueError:
        raise EnvelopeError(f"CollectionSwitched whose {name} is not a UUID") from None
