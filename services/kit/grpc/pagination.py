"""AIP-158 pagination over an in-memory, stably ordered list.

The page token is opaque to clients: an offset, base64-encoded, so that a
server may change what it means without breaking them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import TypeVar

from kit.errors import InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def decode_token(token: str) -> int:
    try:
        kind, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        offset = int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        offset = -1
        kind = ""
    if kind != "o" or offset < 0:
        raise InvalidArgument(
            "page_token is not one this server issued",
            reason="INVALID_PAGE_TOKEN",
            metadata={"field": "page_token"},
        )
    return offset


def page_size(requested: int) -> int:
    """The page size to serve: the default for 0, at most the maximum; negative is invalid."""
    if requested < 0:
        raise InvalidArgument(
            "page_size must not be negative",
            reason="INVALID_ARGUMENT",
            metadata={"field": "page_size"},
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def page(items: Sequence[T], requested_size: int, page_token: str) -> tuple[list[T], str]:
    """One page of ``items`` and the token of the next ("" at the end)."""
    size = page_size(requested_size)
    start = decode_token(page_token) if page_token else 0
    end = start + size
    return list(items[start:end]), encode_token(end) if end < len(items) else ""
