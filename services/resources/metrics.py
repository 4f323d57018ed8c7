"""The resources service's Prometheus metrics: quota usage against limits per
owner, and refused reservations.

The ``owner`` label is bounded by the tenants that hold a quota row or usage
(a few per team, not per request); ``resource`` and ``limit`` are the fixed
sets below.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from kit.errors import ResourceExhausted
from resources.domain.quotas import LIMITS

# usage column → the limit that bounds it
LIMITED_USAGE = {
    "collections": "max_collections",
    "vectors": "max_vectors",
    "stored_bytes": "max_stored_bytes",
}
HEADROOM_RESOURCES = ("disk", "memory")

QUOTA_USAGE = Gauge(
    "vectorops_quota_usage",
    "What an owner uses of a limited resource (collections, vectors, stored_bytes), as "
    "last polled.",
    ["owner", "resource"],
)
QUOTA_LIMIT = Gauge(
    "vectorops_quota_limit",
    "An owner's effective limit on a resource (absent when unlimited), as last polled.",
    ["owner", "resource"],
)
REFUSALS = Counter(
    "vectorops_quota_refusals_total",
    "Reservations refused, by reason (QUOTA_EXCEEDED, INSUFFICIENT_HEADROOM) and the first "
    "limit or system resource they would pass.",
    ["reason", "limit"],
)

# Every refusal series exists from the start: a rate over it is 0, not absent.
for _limit in LIMITS:
    REFUSALS.labels("QUOTA_EXCEEDED", _limit)
for _resource in HEADROOM_RESOURCES:
    REFUSALS.labels("INSUFFICIENT_HEADROOM", _resource)


def count_refusal(refusal: ResourceExhausted) -> None:
    limit = refusal.metadata.get("limit") or refusal.metadata.get("resource") or ""
    if limit not in LIMITS and limit not in HEADROOM_RESOURCES:
        limit = "other"
    REFUSALS.labels(refusal.reason, limit).inc()
