"""What the cleanup loop decides for one retired physical collection, and the
record of every safety check behind the decision. Pure: the loop gathers the
facts (references, existence) and acts on the verdict.

The decision itself is ``kit.cleanup_rules.may_delete``; this module keeps each
check's own result next to it, so a kept (or deleted) collection can be
explained afterwards, and maps the decision onto the job's life: deleted,
gone (nothing to delete), skipped for good, or tried again later (a staging
collection too young to be judged dead).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from indexer.domain.staging import parse_staging
from kit.cleanup_rules import SYSTEM_PREFIX, CleanupReason, may_delete


class JobStatus(StrEnum):
    PENDING = "PENDING"  # due at ``not_before``; a deferred job stays here
    DELETED = "DELETED"
    GONE = "GONE"  # it did not exist any more: nothing to delete
    SKIPPED = "SKIPPED"  # a safety check keeps it for good


# Audit actions (protos/README.md, "Audit actions").
DELETE_ACTION = "cleanup.delete_collection"
SKIP_ACTION = "cleanup.skip_collection"


@dataclass(frozen=True)
class Verdict:
    reason: CleanupReason
    status: JobStatus  # what the job becomes once the verdict is carried out
    checks: dict[str, Any]  # each check's result, kept with the job
    retry_at: datetime | None = None  # a deferred job's next look

    @property
    def delete(self) -> bool:
        return self.reason is CleanupReason.OK

    @property
    def audit_action(self) -> str:
        return DELETE_ACTION if self.delete else SKIP_ACTION

    @property
    def skip_reason(self) -> str:
        """``CleanupSkip.reason``: the check that kept it, lower case."""
        return self.reason.value.lower()


def judge(
    name: str,
    references: Mapping[str, Sequence[str]],
    exists: bool,
    now: datetime,
    min_staging_age: timedelta,
) -> Verdict:
    """The verdict on deleting ``name`` now.

    ``references``: every name something still points at → what points at it
    (e.g. ``"live:<collection id>"``, ``"staging:<collection id>"``,
    ``"alias:<alias>"``). A staging collection's age comes from its name (after
    a crash the name may be the only record of it).
    """
    parsed = parse_staging(name)
    created = parsed[1] if parsed is not None else None
    allowed, reason = may_delete(name, set(references), created, now, exists, min_staging_age)
    age = (now - created).total_seconds() if created is not None else None
    checks: dict[str, Any] = {
        "system_collection": {"passed": bool(name) and not name.startswith(SYSTEM_PREFIX)},
        "still_referenced": {
            "passed": name not in references,
            "referenced_by": list(references.get(name, ())),
        },
        "staging_age": {
            "passed": created is None or now - created >= min_staging_age,
            "is_staging": created is not None,
            "created_at": created.isoformat() if created is not None else None,
            "age_seconds": age,
            "min_age_seconds": min_staging_age.total_seconds(),
        },
        "exists": {"passed": exists},
        "decision": reason.value,
        "checked_at": now.isoformat(),
    }
    if allowed:
        return Verdict(reason, JobStatus.DELETED, checks)
    if reason is CleanupReason.STAGING_TOO_YOUNG and created is not None:
        # Not given up: judged again once it is old enough.
        return Verdict(reason, JobStatus.PENDING, checks, retry_at=created + min_staging_age)
    if reason is CleanupReason.NOT_FOUND:
        return Verdict(reason, JobStatus.GONE, checks)
    return Verdict(reason, JobStatus.SKIPPED, checks)
