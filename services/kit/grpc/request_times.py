"""A request's ``Timestamp`` and ``Duration`` fields as Python values, or an
``INVALID_ARGUMENT`` naming the field: protobuf lets a client send seconds and
nanos that no datetime or timedelta can hold (nanos below zero, a year past
9999, ±2^63 seconds), and converting them raises deep in a servicer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message

from kit.errors import FieldViolation, InvalidArgument


def request_time(message: Message, field: str) -> datetime | None:
    """``message.<field>`` (a Timestamp) as an aware UTC datetime; None when unset."""
    if not message.HasField(field):
        return None
    try:
        return getattr(message, field).ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as error:
        raise _invalid(field, "is not a valid timestamp") from error


def request_duration(message: Message, field: str) -> timedelta | None:
    """``message.<field>`` (a Duration) as a timedelta; None when unset."""
    if not message.HasField(field):
        return None
    try:
        return getattr(message, field).ToTimedelta()
    except (ValueError, OverflowError) as error:
        raise _invalid(field, "is not a valid duration") from error


def _invalid(field: str, problem: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field} {problem}",
        reason="INVALID_ARGUMENT",
        metadata={"field": field},
        field_violations=[FieldViolation(field, problem)],
    )
