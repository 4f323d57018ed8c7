"""Dead letters: a message of an operation that exhausted its deliveries (or
that its consumer refused) fails the operation with ``RETRIES_EXHAUSTED``.

The durable consumer ``orchestrator-dead`` reads ``vo.dead.>`` from VO_DEAD.
Each dead letter's envelope carries the original message's operation id (see
``kit.bus.jetstream``), so nothing of the original needs parsing. The failure's
transaction also sends a cancel command, so a worker still at it stops.

Dead letters of the orchestrator's own consumers are logged, not acted on: an
event the state machine refused is no reason to fail a healthy operation (the
worker may just have repeated itself), and reacting to this consumer's own dead
letters could loop. An operation that really lost a step is reaped as STUCK.
"""

from __future__ import annotations

from collections.abc import Collection

from kit.bus.jetstream import Delivery
from kit.bus.topology import DEAD, ConsumerSpec
from kit.events import EnvelopeError, parse_envelope, unpack
from kit.logs import get_logger
from orchestrator.adapters.repository import OrchestratorRepository
from orchestrator.cancel_outbox import cancel_on_failure
from orchestrator.domain import step_events
from orchestrator.event_consumer import Clock, bus_outcome, utc_now
from vectorops.events.v1 import dead_letter_pb2

log = get_logger(__name__)

DEAD_DURABLE = "orchestrator-dead"
DEAD_LETTERS_FILTER = "vo.dead.>"


def dead_letters_consumer(durable: str = DEAD_DURABLE) -> ConsumerSpec:
    return ConsumerSpec(
        DEAD.name,
        durable,
        (DEAD_LETTERS_FILTER,),
        max_deliver=10,
        retry_delays_seconds=(1, 5, 15, 30, 60),
    )


class DeadLetterConsumer:
    """The handler of ``orchestrator-dead``."""

    def __init__(
        self,
        repository: OrchestratorRepository,
        own_consumers: Collection[str],
        clock: Clock = utc_now,
    ) -> None:
        self._repository = repository
        self._own_consumers = frozenset(own_consumers)
        self._clock = clock

    async def handle(self, delivery: Delivery) -> None:
        try:
            envelope = parse_envelope(delivery.data)
            dead = unpack(envelope, dead_letter_pb2.DeadLetter)
        except EnvelopeError as error:
            # Acked, not dead-lettered again: it stays in VO_DEAD for an operator.
            log.error(
                "orchestrator.dead_letter_unreadable", subject=delivery.subject, error=str(error)
            )
            return
        about = {
            "stream": dead.stream,
            "consumer": dead.consumer,
            "original_type": dead.original_type,
            "operation_id": envelope.operation_id,
        }
        if dead.consumer in self._own_consumers:
            log.error("orchestrator.own_event_dead_lettered", reason=dead.reason, **about)
            return
        if not envelope.operation_id:
            log.warning("orchestrator.dead_letter_without_operation", **about)
            return
        message = step_events.dead_letter_message(
            dead.stream,
            dead.consumer,
            dead.original_type or dead.subject,
            dead.deliveries,
            dead.reason,
        )
        with bus_outcome(envelope.type, envelope.operation_id):
            owner_id = envelope.owner_id
            if not owner_id:  # the original envelope lacked it
                owner_id = (
                    await self._repository.get_operation(envelope.operation_id, None)
                ).owner_id
            _, events = await self._repository.apply(
                envelope.operation_id,
                step_events.retries_exhausted(message, self._clock()),
                cancel_on_failure(owner_id),
            )
            if events:
                log.warning("orchestrator.operation_retries_exhausted", **about)
