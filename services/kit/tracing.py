"""Trace ids: one id per client request, carried by every envelope, gRPC call
and log line of the work it causes, so one grep follows an operation across
the services.

A request's trace id comes from the W3C ``traceparent`` header (its trace-id
part), else from an ``x-trace-id`` header, else is made here; either way it is
32 lowercase hex digits. While work runs, the id is bound in the structlog
context (``kit.logs``), which is also where ``current_trace_id`` reads it: the
log context is the one trace context, so what is logged and what is sent agree.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

import structlog

TRACEPARENT = "traceparent"
TRACE_ID_HEADER = "x-trace-id"

_HEX32 = re.compile(r"[0-9a-f]{32}")
_ZERO_TRACE = "0" * 32
# version-traceid-parentid-flags; a later version may append fields after the flags.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def new_trace_id() -> str:
    return secrets.token_hex(16)


def trace_id_from_traceparent(value: str | None) -> str | None:
    """The trace-id part of a valid ``traceparent``; None when it is not one
    (malformed, version ff, or an all-zero trace or parent id, as the W3C
    Trace Context spec says to ignore)."""
    match = _TRACEPARENT.fullmatch((value or "").strip())
    if match is None:
        return None
    version, trace_id, parent_id, _flags, extra = match.groups()
    if version == "ff" or (version == "00" and extra):
        return None
    if trace_id == _ZERO_TRACE or parent_id == "0" * 16:
        return None
    return trace_id


def valid_trace_id(value: str | None) -> str | None:
    """``value`` when it is a usable trace id (32 lowercase hex, not all zero)."""
    value = (value or "").strip()
    return value if _HEX32.fullmatch(value) and value != _ZERO_TRACE else None


def incoming_trace_id(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """The trace id of a call with ``metadata``: ``traceparent``'s, else
    ``x-trace-id``'s, else a fresh one (a bad header never fails the call)."""
    headers = {key.lower(): value for key, value in metadata if isinstance(value, str)}
    return (
        trace_id_from_traceparent(headers.get(TRACEPARENT))
        or valid_trace_id(headers.get(TRACE_ID_HEADER))
        or new_trace_id()
    )


def current_trace_id() -> str:
    """The trace id bound for the work running now ("" when none is)."""
    return str(structlog.contextvars.get_contextvars().get("trace_id") or "")


def traceparent(trace_id: str) -> str:
    """A ``traceparent`` header for an outgoing call in trace ``trace_id``
    (a fresh parent id: each call is its own span, sampled)."""
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"
