"""The audit record of a usage reconciliation, as an outbox row for
``vo.audit.usage.reconcile``: who asked, the usage before and after, and the
collections that drifted (ids, at most ``MAX_LISTED``; the count is whole)."""

from __future__ import annotations

from kit.audit_records import SUCCESS, AuditRow, audit_row
from kit.auth import Principal
from resources.domain.quotas import Usage
from resources.domain.usage_drift import Reconciliation

SERVICE = "resources"
USAGE_RECONCILE = "usage.reconcile"
MAX_LISTED = 100  # an audit record stays small however many collections drifted


def _totals(usage: Usage) -> dict[str, int]:
    return {
        "collections": usage.collections,
        "vectors": usage.vectors,
        "stored_bytes": usage.stored_bytes,
        "documents": usage.documents,
    }


def usage_reconciled(
    actor: Principal, owner_id: str, request_id: str, reconciliation: Reconciliation
) -> AuditRow:
    drifted = [drift.collection_id for drift in reconciliation.drifted]
    return audit_row(
        USAGE_RECONCILE,
        service=SERVICE,
        outcome=SUCCESS,
        details={
            "before": _totals(reconciliation.before),
            "after": _totals(reconciliation.after),
            "drifted_collections": len(drifted),
            "drifted_collection_ids": drifted[:MAX_LISTED],
        },
        request_id=request_id,
        owner_id=owner_id,
        actor=actor,
    )
