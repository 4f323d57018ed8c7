"""Which Postgres failures are an outage rather than a bug.

A consumer hands a message back for redelivery (``Retry``) on these and the
reaper tries again at its next round; anything else is a defect and surfaces.
"""

from __future__ import annotations

import asyncpg
from asyncpg.exceptions import InternalClientError

POSTGRES_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,  # no connection from the pool in time
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # the connection closed under us
    InternalClientError,  # the connection broke mid-call (a SIGKILLed server)
    asyncpg.OperatorInterventionError,  # shutting down, starting up
    asyncpg.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.TransactionRollbackError,  # serialization failure, deadlock: try again
)
