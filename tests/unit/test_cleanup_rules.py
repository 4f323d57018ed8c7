"""Cleanup safety (kit.cleanup_rules): the size-scaled delay before old physical
collections go, and the checks each deletion must pass: never a system
collection, never one still referenced, never a young staging collection, only
one that exists; and the indexer's verdicts on a cleanup job built on them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from indexer.domain.cleanup import JobStatus, judge
from kit.cleanup_rules import SYSTEM_PREFIX, CleanupReason, cleanup_delay, may_delete

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("vectors", "minutes"),
    [
        (0, 5),
        (9_999, 5),
        (10_000, 6),
        (19_999, 6),
        (100_000, 15),
        (250_000, 30),
        (259_999, 30),
        (10_000_000, 30),
    ],
)
def test_cleanup_delay(vectors: int, minutes: int) -> None:
    assert cleanup_delay(vectors) == timedelta(minutes=minutes)


def test_cleanup_delay_is_configurable_and_refuses_negative() -> None:
    short = cleanup_delay(50_000, base=timedelta(0), per_block=timedelta(0), cap=timedelta(0))
    assert short == timedelta(0)
    assert cleanup_delay(50_000, base=timedelta(seconds=1), per_block=timedelta(seconds=1)) == (
        timedelta(seconds=6)
    )
    with pytest.raises(ValueError):
        cleanup_delay(-1)


NOW = T0 + timedelta(days=1)
OLD = NOW - timedelta(hours=2)


@pytest.mark.parametrize(
    ("name", "referenced", "created", "exists", "verdict"),
    [
        ("phys_a_v1", set(), None, True, (True, CleanupReason.OK)),
        ("phys_a_staging_x", set(), OLD, True, (True, CleanupReason.OK)),
        ("phys_a_staging_x", set(), NOW - timedelta(hours=1), True, (True, CleanupReason.OK)),
        ("_system", set(), None, True, (False, CleanupReason.SYSTEM_COLLECTION)),
        ("_system", {"_system"}, None, False, (False, CleanupReason.SYSTEM_COLLECTION)),
        ("phys_a_v1", {"phys_a_v1"}, None, True, (False, CleanupReason.STILL_REFERENCED)),
        (
            "phys_a_staging_x",
            set(),
            NOW - timedelta(minutes=59),
            True,
            (False, CleanupReason.STAGING_TOO_YOUNG),
        ),
        (
            "phys_a_staging_x",
            set(),
            NOW + timedelta(minutes=5),  # clock skew: treated as young
            True,
            (False, CleanupReason.STAGING_TOO_YOUNG),
        ),
        ("phys_a_v1", set(), None, False, (False, CleanupReason.NOT_FOUND)),
        ("", set(), None, True, (False, CleanupReason.EMPTY_NAME)),
    ],
)
def test_may_delete(
    name: str,
    referenced: set[str],
    created: datetime | None,
    exists: bool,
    verdict: tuple[bool, CleanupReason],
) -> None:
    assert may_delete(name, referenced, created, NOW, exists) == verdict


def test_may_delete_min_age_is_configurable() -> None:
    young = NOW - timedelta(minutes=2)
    allowed = may_delete("s", set(), young, NOW, True, min_staging_age=timedelta(minutes=1))
    assert allowed == (True, CleanupReason.OK)


# --- the cleanup loop's verdicts (indexer.domain.cleanup.judge) ---------------------

MIN_AGE = timedelta(hours=1)
STAMP_OLD = (NOW - timedelta(hours=3)).strftime("%Y%m%dT%H%M%SZ")
STAMP_YOUNG = (NOW - timedelta(minutes=10)).strftime("%Y%m%dT%H%M%SZ")


def test_a_collection_that_passes_every_check_is_deleted_with_each_check_recorded() -> None:
    verdict = judge("phys_a_v1", {"phys_b": ["live:b"]}, True, NOW, MIN_AGE)
    assert verdict.delete and verdict.status is JobStatus.DELETED
    assert verdict.audit_action == "cleanup.delete_collection"
    checks = verdict.checks
    assert checks["decision"] == "OK"
    for name in ("system_collection", "still_referenced", "staging_age", "exists"):
        assert checks[name]["passed"] is True, name
    assert checks["staging_age"]["is_staging"] is False


@pytest.mark.parametrize(
    ("name", "references", "exists", "reason", "status"),
    [
        ("_system", {}, True, CleanupReason.SYSTEM_COLLECTION, JobStatus.SKIPPED),
        (
            "phys_a",
            {"phys_a": ["live:c1"]},
            True,
            CleanupReason.STILL_REFERENCED,
            JobStatus.SKIPPED,
        ),
        (
            "phys_a",
            {"phys_a": ["alias:docs"]},
            True,
            CleanupReason.STILL_REFERENCED,
            JobStatus.SKIPPED,
        ),
        ("phys_a", {}, False, CleanupReason.NOT_FOUND, JobStatus.GONE),
        (f"p_staging_{STAMP_OLD}", {}, True, CleanupReason.OK, JobStatus.DELETED),
    ],
)
def test_each_refusal_maps_to_a_final_job_status(
    name: str,
    references: dict[str, list[str]],
    exists: bool,
    reason: CleanupReason,
    status: JobStatus,
) -> None:
    verdict = judge(name, references, exists, NOW, MIN_AGE)
    assert (verdict.reason, verdict.status, verdict.retry_at) == (reason, status, None)
    assert verdict.checks["decision"] == reason.value
    if not verdict.delete:
        assert verdict.audit_action == "cleanup.skip_collection"
        assert verdict.skip_reason == reason.value.lower()
    if reason is CleanupReason.STILL_REFERENCED:
        assert verdict.checks["still_referenced"] == {
            "passed": False,
            "referenced_by": references[name],
        }


def test_a_young_staging_collection_is_retried_once_old_enough() -> None:
    name = f"p_staging_{STAMP_YOUNG}"
    verdict = judge(name, {}, True, NOW, MIN_AGE)
    assert verdict.reason is CleanupReason.STAGING_TOO_YOUNG
    assert verdict.status is JobStatus.PENDING  # not given up
    created = NOW - timedelta(minutes=10)
    assert verdict.retry_at == created + MIN_AGE
    age = verdict.checks["staging_age"]
    assert age["passed"] is False and age["is_staging"] is True
    assert age["age_seconds"] == 600 and age["min_age_seconds"] == 3600
    later = judge(name, {}, True, verdict.retry_at, MIN_AGE)
    assert later.delete


def test_the_system_prefix_is_the_vector_stores() -> None:
    from indexer.adapters.vector_store import SYSTEM_PREFIX as STORE_PREFIX

    assert SYSTEM_PREFIX == STORE_PREFIX
