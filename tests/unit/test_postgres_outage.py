"""A background loop takes a Postgres connection that broke in the middle of a
call (asyncpg's InternalClientError, seen after a SIGKILLed Postgres came back)
for the outage it is: it logs it and goes on, instead of ending and taking its
service down with it."""

from __future__ import annotations

import asyncio

from asyncpg.exceptions import InternalClientError

from kit.db.outage import POSTGRES_OUTAGE, POSTGRES_UNAVAILABLE
from kit.outbox import OutboxDispatcher

BROKEN = InternalClientError("cannot switch to state 15; another operation (2) is in progress")


class _Listener:
    async def add_listener(self, *_args: object) -> None:
        pass

    async def remove_listener(self, *_args: object) -> None:
        pass


class _Pool:
    async def acquire(self) -> _Listener:
        return _Listener()

    async def release(self, _connection: object) -> None:
        pass


def test_a_connection_broken_mid_call_is_an_outage() -> None:
    assert isinstance(BROKEN, POSTGRES_OUTAGE)
    assert isinstance(BROKEN, POSTGRES_UNAVAILABLE)


async def test_outbox_dispatcher_goes_on_after_a_connection_broke_mid_call() -> None:
    stop = asyncio.Event()
    rounds: list[int] = []

    class Dispatcher(OutboxDispatcher):
        async def dispatch_once(self) -> int:
            rounds.append(len(rounds))
            if len(rounds) == 1:
                raise BROKEN
            stop.set()
            return 0

        async def observe_backlog(self) -> None:
            pass

    dispatcher = Dispatcher(_Pool(), bus=None, schema="outage", poll_seconds=0.01)
    await asyncio.wait_for(dispatcher.run(stop), 5)
    assert rounds == [0, 1]
