"""The asyncpg pool of a service, bound to the service's own schema."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from kit.logs import get_logger

log = get_logger(__name__)


async def connect_pool(
    dsn: str,
    schema: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    attempts: int = 30,
    delay_seconds: float = 0.5,
) -> asyncpg.Pool:
    """A pool whose connections see the service's schema first on the search path.

    Retries the first connection for a while: in a fresh stack Postgres may still be starting.
    """
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            return await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                server_settings={"search_path": f"{schema},public", "application_name": schema},
            )
        except (OSError, asyncpg.PostgresError) as error:
            last_error = error
            log.warning("postgres.connect_retry", attempt=attempt, error=str(error))
            await asyncio.sleep(delay_seconds)
    raise ConnectionError(f"could not connect to Postgres after {attempts} attempts: {last_error}")


async def close_quietly(conn: asyncpg.Connection | None) -> None:
    """Close a dedicated connection (a LISTEN one) that may already be broken:
    politely if it answers within two seconds, else by terminating it."""
    if conn is None or conn.is_closed():
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), timeout=2)
    if not conn.is_closed():
        conn.terminate()
