"""Postgres failures that are an outage, not a bug: the server went away or is
restarting, or a connection broke under us. A background loop logs them and
tries again at its next round instead of ending (and taking the service down).

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
