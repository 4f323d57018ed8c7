"""The audit records of quotas, as outbox rows for ``vo.audit.<action>``:
``quota.set`` (an admin changed an owner's limits; written in the quota's own
transaction) and ``quota.refused`` (a reservation was refused, for the quota
or for the system's headroom: DENIED, with the reason and the figures)."""

from __future__ import annotations

from collections.abc import Mapping

from kit.audit_records import DENIED, SUCCESS, AuditRow, audit_row
from kit.auth import Principal
from kit.errors import DomainError

SERVICE = "resources"
QUOTA_SET = "quota.set"
QUOTA_REFUSED = "quota.refused"


def quota_set(
    actor: Principal, owner_id: str, request_id: str, changed: Mapping[str, int | None]
) -> AuditRow:
    """``changed``: the limits the update mask named, with their new values (None: unlimited)."""
    return audit_row(
        QUOTA_SET,
        service=SERVICE,
        outcome=SUCCESS,
        details={"limits": dict(changed)},
        request_id=request_id,
        owner_id=owner_id,
        actor=actor,
    )


def quota_refused(
    actor: Principal,
    owner_id: str,
    request_id: str,
    refusal: DomainError,
    *,
    operation_id: str = "",
    collection_id: str = "",
    requested: Mapping[str, int] | None = None,
) -> AuditRow:
    """A refused reservation: ``refusal`` is the error the caller got."""
    return audit_row(
        QUOTA_REFUSED,
        service=SERVICE,
        outcome=DENIED,
        details={
            "message": refusal.message,
            "metadata": dict(refusal.metadata),
            "violations": [v.description for v in refusal.quota_violations],
            "requested": dict(requested or {}),
        },
        reason=refusal.reason,
        request_id=request_id,
        operation_id=operation_id,
        collection_id=collection_id,
        owner_id=owner_id,
        actor=actor,
    )
