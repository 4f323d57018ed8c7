"""A dispatcher that dies by SIGKILL after publishing N events of its batch, before
it can mark them sent: what a crashed orchestrator leaves behind.

Usage: outbox_crashing_dispatcher.py DSN NATS_URL SCHEMA N
"""

import asyncio
import os
import signal
import sys

import asyncpg

from kit.bus.jetstream import JetStream
from kit.outbox import OutboxDispatcher


class DyingJetStream(JetStream):
    def __init__(self, inner: JetStream, publishes_before_death: int) -> None:
        super().__init__(inner.nc, inner.js, "file", 1, inner.name)
        self._left = publishes_before_death

    async def publish(self, *args, **kwargs):
        ack = await super().publish(*args, **kwargs)
        self._left -= 1
        if self._left == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return ack


async def main(dsn: str, nats_url: str, schema: str, count: int) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    bus = await JetStream.connect(nats_url, name="crashing-dispatcher")
    await OutboxDispatcher(pool, DyingJetStream(bus, count), schema, batch_size=100).dispatch_once()
    raise SystemExit("the dispatcher should have died")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
