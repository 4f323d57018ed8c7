"""Each service's in-memory view of the active run-time tokens.

Authentication must not wait on Postgres, so every service keeps the active
tokens in a dict keyed by digest and reloads it when told to: a LISTEN on
``CHANGE_CHANNEL`` (NOTIFY'd at the commit of each create and revoke) wakes
it at once, and it also reloads every ``refresh_seconds`` in case a
notification was lost with its connection. Expiry is checked at lookup time,
so an expired token is refused without waiting for a reload. If Postgres is
unreachable the last view is kept (and the failure logged) rather than
locking everyone out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from kit.auth import Principal
from kit.db.outage import POSTGRES_OUTAGE
from kit.db.pool import close_quietly
from kit.logs import get_logger
from kit.tokens import CHANGE_CHANNEL, store
from kit.tokens.records import StoredToken, TokenState

log = get_logger(__name__)

APPLICATION_NAME = "token-cache"  # how the LISTEN connection shows in pg_stat_activity
DEFAULT_REFRESH_SECONDS = 1.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TokenCache:
    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        *,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._pool = pool
        self._dsn = dsn
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._by_digest: dict[bytes, StoredToken] = {}
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0  # for tests and logs

    def principal_for(self, presented_digest: bytes) -> Principal | None:
        """The principal of an active token with this SHA-256 digest, else None."""
        token = self._by_digest.get(presented_digest)
        if token is None or token.state(self._clock()) is not TokenState.ACTIVE:
            return None
        return token.principal

    async def start(self) -> None:
        """Load once (a failure here stops the service: it could not honour any
        run-time token), then keep the view fresh until ``stop``."""
        await self._listen()
        await self.reload()
        self._task = asyncio.create_task(self._keep_fresh(), name="token-cache")

    async def stop(self) -> None:
        self._stopping.set()
        self._changed.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._unlisten()

    async def reload(self) -> None:
        active = await store.active(self._pool)
        self._by_digest = {bytes.fromhex(entry.sha256): entry.token for entry in active}
        self.reloads += 1

    async def _keep_fresh(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=self._refresh_seconds)
            # Cleared before reading: a change committed during the read wakes us again.
            self._changed.clear()
            try:
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
                await self.reload()
            except POSTGRES_OUTAGE as error:
                log.warning("tokens.reload_failed", error=str(error))
                await self._unlisten()

    async def _listen(self) -> None:
        conn = await asyncpg.connect(
            self._dsn, server_settings={"application_name": APPLICATION_NAME}
        )
        try:
            await conn.add_listener(CHANGE_CHANNEL, self._on_change)
        except BaseException:
            conn.terminate()
            raise
        self._listener = conn

    async def _unlisten(self) -> None:
        conn, self._listener = self._listener, None
        await close_quietly(conn)

    def _on_change(self, *_args: object) -> None:
        self._changed.set()
