"""When an old physical collection may go: the delay after a reindex switch and
the safety checks before a deletion (DESIGN.md, "Blue-green REINDEX", step 6).

Shared because both sides need them: the orchestrator computes the delay in
the switch transaction, the indexer runs the checks before it deletes. Pure
functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Set
from datetime import datetime, timedelta
from enum import StrEnum

SYSTEM_PREFIX = "_"
"""Names starting with this are system collections: never deleted by cleanup."""

CLEANUP_BASE_DELAY = timedelta(minutes=5)
CLEANUP_DELAY_PER_BLOCK = timedelta(minutes=1)
CLEANUP_BLOCK_VECTORS = 10_000
CLEANUP_MAX_DELAY = timedelta(minutes=30)
MIN_STAGING_AGE = timedelta(hours=1)


def cleanup_delay(
    vector_count: int,
    base: timedelta = CLEANUP_BASE_DELAY,
    per_block: timedelta = CLEANUP_DELAY_PER_BLOCK,
    cap: timedelta = CLEANUP_MAX_DELAY,
) -> timedelta:
    """How long old physical collections wait before deletion: 5 min + 1 min per
    full 10k vectors, at most 30 min (the design's figures; "per 10k" counts
    whole blocks). The delay lets searches already routed to the old collection
    finish. Overridable so tests can shorten it."""
    if vector_count < 0:
        raise ValueError("vector_count must be >= 0")
    return min(base + per_block * (vector_count // CLEANUP_BLOCK_VECTORS), cap)


class CleanupReason(StrEnum):
    OK = "OK"
    EMPTY_NAME = "EMPTY_NAME"
    SYSTEM_COLLECTION = "SYSTEM_COLLECTION"
    STILL_REFERENCED = "STILL_REFERENCED"
    STAGING_TOO_YOUNG = "STAGING_TOO_YOUNG"
    NOT_FOUND = "NOT_FOUND"


def may_delete(
    name: str,
    referenced: Set[str],
    staging_created_at: datetime | None,
    now: datetime,
    exists: bool,
    min_staging_age: timedelta = MIN_STAGING_AGE,
) -> tuple[bool, CleanupReason]:
    """Whether a physical collection may be deleted, and why (or why not).

    ``referenced``: every name Postgres still points at (live physical, staging,
    alias targets). ``staging_created_at``: when set, the collection is a staging
    one of that age; a young staging collection may belong to a reindex that is
    still running. A creation time in the future (clock skew) counts as young.
    A failed reindex dropping its *own* staging at once is not this path: the
    caller knows that one is dead and passes ``staging_created_at=None``.
    """
    if not name:
        return False, CleanupReason.EMPTY_NAME
    if name.startswith(SYSTEM_PREFIX):
        return False, CleanupReason.SYSTEM_COLLECTION
    if name in referenced:
        return False, CleanupReason.STILL_REFERENCED
    if staging_created_at is not None and now - staging_created_at < min_staging_age:
        return False, CleanupReason.STAGING_TOO_YOUNG
    if not exists:
        return False, CleanupReason.NOT_FOUND
    return True, CleanupReason.OK
