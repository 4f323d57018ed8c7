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
from collections.abc import Mapping, Sequence
from typing import Any

from kit.errors import InvalidArgument, NotFound
from kit.grpc.pagination import page_size

__all__ = ["decode_token", "encode_token", "invalid_token", "page_size", "uuid_or_not_found"]


def _filters_hash(filters: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def encode_token(key: Sequence[str], filters: Mapping[str, Any]) -> str:
    payload = {"k": list(key), "f": _filters_hash(filters)}
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def decode_token(token: str, filters: Mapping[str, Any], width: int) -> list[str] | None:
    """The sort key of ``width`` strings a token carries; None for the first page."""
    if not token:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode()))
        key = payload["k"]
        if payload["f"] != _filters_hash(filters):
            raise ValueError("token issued for other filters")
        if (
            not isinstance(key, list)
            or len(key) != width
            or not all(isinstance(part, str) for part in key)
        ):
            raise ValueError("malformed key")
        return key
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise invalid_token() from None


def invalid_token() -> InvalidArgument:
    """For a token whose key decodes but does not parse back into the sort columns."""
    return InvalidArgument(
        "page_token is not one this server issued for these filters",
        reason="INVALID_PAGE_TOKEN",
        metadata={"field": "page_token"},
    )


def uuid_or_not_found(value: str, reason: str, name: str) -> uuid.UUID:
    """A malformed id cannot name anything: NOT_FOUND, like any unknown id."""
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise NotFound(
            f"{name} {value!r} not found", reason=reason, metadata={name: str(value)}
        ) from None
