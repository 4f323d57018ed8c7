"""Checks of single request fields of the indexer's API.

Every refusal is INVALID_ARGUMENT with the field's path in the ErrorInfo
metadata and a ``BadRequest`` field violation, so a client can point at it.
"""

from __future__ import annotations

from kit.errors import FieldViolation, InvalidArgument


def invalid_field(field: str, why: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field} {why}",
        reason="INVALID_ARGUMENT",
        metadata={"field": field},
        field_violations=[FieldViolation(field=field, description=why)],
    )


def require(**fields: str) -> None:
    """REQUIRED fields must be set (a blank string counts as unset)."""
    for field, value in fields.items():
        if not value.strip():
            raise invalid_field(field, "is required")
