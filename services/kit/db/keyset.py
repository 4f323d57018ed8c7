"""Keyset pagination for SQL lists (AIP-158), and ids that name nothing.

A page token is opaque to clients: the last row's sort key (as strings) and a
hash of the filters it was issued for, base64-encoded JSON. A token used with
other filters, or one we never issued, is INVALID_PAGE_TOKEN.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kit.errors import InvalidArgument, NotFound
from kit.grpc.pagination import page_size

__all__ = ["SortKey", "page_size", "uuid_or_not_found"]


@dataclass(frozen=True)
class SortKey:
    """The columns a list is ordered by, and how each is parsed back from a token."""

    columns: tuple[str, ...]
    parsers: tuple[Callable[[str], Any], ...]

    def after(self, token: str, filters: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The sort key a page starts after; None for the first page."""
        if not token:
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(token.encode()))
            key = payload["k"]
            if payload["f"] != _filters_hash(filters):
                raise ValueError("token issued for other filters")
            if not isinstance(key, list) or len(key) != len(self.parsers):
                raise ValueError("malformed key")
            return tuple(parse(part) for parse, part in zip(self.parsers, key, strict=True))
        except (binascii.Error, ValueError, KeyError, TypeError, AttributeError):
            raise InvalidArgument(
                "page_token is not one this server issued for these filters",
                reason="INVALID_PAGE_TOKEN",
                metadata={"field": "page_token"},
            ) from None

    def next_token(self, rows: Sequence[Any], size: int, filters: Mapping[str, Any]) -> str:
        """The token of the page after ``rows`` (fetched with ``size + 1``); "" at the end."""
        if len(rows) <= size:
            return ""
        last = rows[size - 1]
        key = [_as_text(last[column]) for column in self.columns]
        payload = {"k": key, "f": _filters_hash(filters)}
        return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def _as_text(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _filters_hash(filters: Mapping[str, Any]) -> str:
    encoded = json.dumps(filters, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def uuid_or_not_found(value: str, reason: str, name: str) -> uuid.UUID:
    """A malformed id cannot name anything: NOT_FOUND, like any unknown id."""
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise NotFound(
            f"{name} {value!r} not found", reason=reason, metadata={name: str(value)}
        ) from None
