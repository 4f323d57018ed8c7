"""What the orchestrator's application services share: who may see what, the
clock, and the hash that binds a ``request_id`` to one request.

The application layer sits between the servicers (which only map messages)
and the repository: it validates a request, decides whose rows the caller
may touch, and builds the outbox rows a change announces.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from kit.auth import Principal
from kit.errors import PermissionDenied

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def owner_scope(principal: Principal) -> str | None:
    """The owner whose rows the caller may read and change; None for an admin,
    who may act on every owner's. Another owner's rows then answer NOT_FOUND,
    so ids do not leak."""
    return None if principal.is_admin else principal.id


def owner_for_create(principal: Principal, requested: str) -> str:
    """Whom a new collection belongs to: the caller, unless an admin names
    someone else. A user naming another owner is refused, not ignored, so a
    client that meant it learns it cannot."""
    requested = requested.strip()
    if not requested or requested == principal.id:
        return principal.id
    if principal.is_admin:
        return requested
    raise PermissionDenied(
        "only an admin may create a collection for another owner",
        reason="PERMISSION_DENIED",
        metadata={"required_role": "admin"},
    )
