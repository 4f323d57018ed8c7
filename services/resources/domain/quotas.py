"""Quotas and the admission check: does a reservation fit what an owner may use?

Pure: figures in, violations out. Usage and live reservations are read by the
repository under the owner's row lock, so the check sees a consistent picture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from kit.errors import FieldViolation, InvalidArgument

LIMITS = (
    "max_collections",
    "max_vectors",
    "max_stored_bytes",
    "max_documents_per_operation",
    "max_concurrent_operations",
)


@dataclass(frozen=True)
class Quota:
    """An owner's limits; ``None`` means unlimited."""

    owner_id: str
    max_collections: int | None = None
    max_vectors: int | None = None
    max_stored_bytes: int | None = None
    max_documents_per_operation: int | None = None
    max_concurrent_operations: int | None = None
    is_default: bool = False
    updated_at: datetime | None = None

    def limit(self, name: str) -> int | None:
        return getattr(self, name)

    def with_limits(self, values: Mapping[str, int | None]) -> Quota:
        return replace(self, **values)


def parse_update_mask(paths: Sequence[str]) -> list[str]:
    """The limits an update mask names; ``*`` names them all. Unknown names are refused."""
    if not paths:
        raise InvalidArgument(
            "update_mask must name at least one limit",
            reason="INVALID_ARGUMENT",
            field_violations=[FieldViolation("update_mask", "empty")],
        )
    if list(paths) == ["*"]:
        return list(LIMITS)
    unknown = [path for path in paths if path not in LIMITS]
    if unknown:
        raise InvalidArgument(
            f"update_mask names unknown limits: {', '.join(unknown)}",
            reason="INVALID_ARGUMENT",
            field_violations=[
                FieldViolation("update_mask", f"{path!r} is not one of {', '.join(LIMITS)}")
                for path in unknown
            ],
        )
    return list(dict.fromkeys(paths))


def check_limit_values(values: Mapping[str, int | None]) -> None:
    negative = [name for name, value in values.items() if value is not None and value < 0]
    if negative:
        raise InvalidArgument(
            "quota limits must not be negative",
            reason="INVALID_ARGUMENT",
            field_violations=[FieldViolation(f"quota.{name}", "negative") for name in negative],
        )


@dataclass(frozen=True)
class Usage:
    owner_id: str
    collections: int = 0
    vectors: int = 0
    stored_bytes: int = 0
    documents: int = 0
    updated_at: datetime | None = None


@dataclass(frozen=True)
class CollectionUsage:
    """One collection's share of its owner's usage."""

    collection_id: str
    vectors: int = 0
    stored_bytes: int = 0
    documents: int = 0


@dataclass(frozen=True)
class Held:
    """What the owner's other live (unreleased, unexpired) reservations hold."""

    operations: int = 0
    vectors: int = 0
    bytes: int = 0
    collections: int = 0  # INDEX operations under way: each makes a collection


@dataclass(frozen=True)
class Demand:
    """What one operation asks for."""

    vectors: int = 0
    bytes: int = 0
    documents: int = 0
    collections: int = 0
    operations: int = 1


@dataclass(frozen=True)
class Violation:
    limit: str
    limit_value: int
    current: int
    requested: int

    def describe(self) -> str:
        return (
            f"{self.limit}: limit {self.limit_value}, current {self.current} "
            f"(usage plus reservations), requested {self.requested}"
        )


def _over(limit: str, value: int | None, current: int, requested: int) -> list[Violation]:
    if value is None or requested <= 0 or current + requested <= value:
        return []
    return [Violation(limit, value, current, requested)]


def admission_violations(quota: Quota, usage: Usage, held: Held, demand: Demand) -> list[Violation]:
    """Every limit the demand would pass, given usage and the other live reservations."""
    return [
        *_over(
            "max_collections",
            quota.max_collections,
            usage.collections + held.collections,
            demand.collections,
        ),
        *_over("max_vectors", quota.max_vectors, usage.vectors + held.vectors, demand.vectors),
        *_over(
            "max_stored_bytes",
            quota.max_stored_bytes,
            usage.stored_bytes + held.bytes,
            demand.bytes,
        ),
        *_over(
            "max_documents_per_operation", quota.max_documents_per_operation, 0, demand.documents
        ),
        *_over(
            "max_concurrent_operations",
            quota.max_concurrent_operations,
            held.operations,
            demand.operations,
        ),
    ]
