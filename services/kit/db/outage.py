"""Postgres failures that are an outage, not a bug: the server went away or is
restarting, or a connection broke under us. A background loop logs them and
tries again at its next round instead of ending (and taking the service down)
(``POSTGRES_OUTAGE``, which takes any Postgres error for one). Where a bug must
still surface (an RPC, an operation's step, a consumed message) only the
narrower ``POSTGRES_UNAVAILABLE`` counts: the caller is told to try again.

``InternalClientError`` is asyncpg's answer on a connection the server dropped
in the middle of a call ("another operation is in progress"): seen after a
SIGKILLed Postgres restarts (tests/e2e/test_fault_matrix.py).
"""

from __future__ import annotations

import asyncpg
from asyncpg.exceptions import InternalClientError

POSTGRES_OUTAGE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,  # no connection from the pool in time
    asyncpg.PostgresError,
    asyncpg.InterfaceError,  # the connection closed under us
    InternalClientError,  # the connection broke mid-call
)

# The server is gone, restarting or out of connections, or a connection broke.
POSTGRES_CONNECTION_LOST: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # the connection closed under us
    InternalClientError,  # the connection broke mid-call (a SIGKILLed server)
    asyncpg.OperatorInterventionError,  # shutting down, starting up
    asyncpg.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.TransactionRollbackError,  # serialization failure, deadlock: try again
)

POSTGRES_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,  # no connection from the pool in time
    *POSTGRES_CONNECTION_LOST,
)
