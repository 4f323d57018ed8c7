"""Channels for the calls one service makes to another: the same message size
limits as the servers, keepalive, and the service-role bearer token on every
call."""

from __future__ import annotations

import grpc

_CLIENT_OPTIONS = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
)


def service_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=_CLIENT_OPTIONS)


def bearer(token: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``token`` (none when no token is configured)."""
    return (("authorization", f"Bearer {token}"),) if token else ()
