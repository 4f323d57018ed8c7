"""Cancels: heard by every indexer instance, obeyed by the one running the operation.

``CancelOperationCommand`` travels on ``vo.evt.ctl.cancel`` (stream VO_EVENTS),
not on the work-queue command stream, because it must reach whichever instance
holds the operation. Each instance reads it through its own ordered, ephemeral
consumer that starts ``lookback_seconds`` in the past, so a restarted instance
still learns the recent cancels. Every cancel is written to the indexer's
database (a command that arrives later is dropped) and signalled to the
operation if it runs here, which stops at its next safe point.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg
from nats.js import api

from indexer.adapters.operation_journal import OperationJournal
from kit.bus import subjects
from kit.bus.jetstream import JetStream
from kit.bus.topology import EVENTS
from kit.events import EnvelopeError, parse_envelope, unpack
from kit.logs import get_logger
from vectorops.events.v1 import commands_pb2

log = get_logger(__name__)

DEFAULT_LOOKBACK_SECONDS = 3600.0


class Cancellations:
    """The operations running here, each with the event a cancel sets."""

    def __init__(self, journal: OperationJournal) -> None:
        self._journal = journal
        self._running: dict[str, asyncio.Event] = {}

    def watch(self, operation_id: str) -> asyncio.Event:
        """The event a cancel of ``operation_id`` sets, while it runs here. Check
        ``is_cancelled`` *after* this: a cancel recorded before is seen there, one
        recorded after sets the event."""
        return self._running.setdefault(operation_id, asyncio.Event())

    def forget(self, operation_id: str) -> None:
        self._running.pop(operation_id, None)

    async def is_cancelled(self, operation_id: str) -> bool:
        return await self._journal.is_cancelled(operation_id)

    async def cancel(self, operation_id: str, collection_id: str = "", reason: str = "") -> None:
        self._signal(operation_id)  # at once: the operation need not wait for the write
        await self._journal.record_cancel(operation_id, collection_id, reason)
        # Again: an operation that started watching while the row was being written
        # may have checked the table before the row was there.
        self._signal(operation_id)

    def _signal(self, operation_id: str) -> None:
        event = self._running.get(operation_id)
        if event is not None and not event.is_set():
            log.info("operation.cancel_heard", operation_id=operation_id)
            event.set()


class CancelListener:
    def __init__(
        self,
        bus: JetStream,
        cancellations: Cancellations,
        *,
        lookback_seconds: float = DEFAULT_LOOKBACK_SECONDS,
    ) -> None:
        self._bus = bus
        self._cancellations = cancellations
        self._lookback = timedelta(seconds=lookback_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until ``stop`` is set."""
        start = datetime.now(UTC) - self._lookback
        subscription = await self._bus.js.subscribe(
            subjects.CANCEL,
            stream=EVENTS.name,
            cb=self._on_message,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.BY_START_TIME,
            config=api.ConsumerConfig(opt_start_time=start),
        )
        try:
            await stop.wait()
        finally:
            try:
                await subscription.unsubscribe()
            except Exception as error:  # noqa: BLE001 - the connection may be gone already
                log.warning("cancel_listener.unsubscribe_failed", error=str(error))

    async def _on_message(self, msg: Msg) -> None:
        try:
            command = unpack(parse_envelope(msg.data), commands_pb2.CancelOperationCommand)
        except EnvelopeError as error:
            log.warning("cancel_listener.unreadable", error=str(error))
            return
        try:
            await self._cancellations.cancel(
                command.operation_id, command.collection_id, command.reason
            )
        except Exception as error:  # noqa: BLE001 - one bad cancel must not stop the listener
            # The running operation was signalled; only the record for a later
            # delivery of its command is lost.
            log.error(
                "cancel_listener.record_failed",
                operation_id=command.operation_id,
                error=str(error),
            )
