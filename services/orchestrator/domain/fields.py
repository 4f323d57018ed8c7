"""Checks of single request fields: REQUIRED ones and collection names.

Every refusal is INVALID_ARGUMENT with the field's path in the ErrorInfo
metadata and a ``BadRequest`` field violation, so a client can point at it.
"""

from __future__ import annotations

from kit.errors import FieldViolation, InvalidArgument

MAX_NAME_CHARS = 128


def invalid_field(field: str, why: str, reason: str = "INVALID_ARGUMENT") -> InvalidArgument:
    return InvalidArgument(
        f"{field} {why}",
        reason=reason,
        metadata={"field": field},
        field_violations=[FieldViolation(field=field, description=why)],
    )


def require(value: object, field: str) -> None:
    """A REQUIRED field must be set (a blank string counts as unset)."""
    if isinstance(value, str):
        value = value.strip()
    if not value:
        raise invalid_field(field, "is required")


def validate_name(name: str, field: str = "collection.name") -> str:
    """A collection name: 1-128 printable characters, not blank. Unique per
    owner, which only the repository can check."""
    require(name, field)
    if len(name) > MAX_NAME_CHARS:
        raise invalid_field(field, f"must be at most {MAX_NAME_CHARS} characters")
    if not name.isprintable():
        raise invalid_field(field, "must hold printable characters only")
    return name
