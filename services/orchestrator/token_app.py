"""The token application: admins create, list and revoke run-time bearer
tokens (``kit.tokens``), each change audited in its own transaction.

Audit details carry the token's id as ``credential_id``: the sanitiser drops
every key containing "token" (by design), and neither the token nor its
digest is ever put in a record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from kit.audit_records import AuditRow, audit_event_id, audit_row
from kit.auth import Principal, Role
from kit.errors import FieldViolation, InvalidArgument
from kit.outbox import enqueue_event
from kit.tokens import store
from kit.tokens.records import NewToken, StoredToken
from kit.tokens.store import Created, Revoked

SERVICE = "orchestrator"
CREATE = "token.create"
REVOKE = "token.revoke"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TokenRequest:
    principal_id: str
    role: str  # "user" | "admin" | "service", "" when unset
    description: str
    ttl: timedelta | None
    request_id: str


def token_audit(action: str, token: StoredToken, actor: Principal, request_id: str) -> AuditRow:
    details = {
        "credential_id": token.id,
        "principal_id": token.principal_id,
        "role": token.role.value,
        "description": token.description,
        "expires_at": token.expires_at.isoformat() if token.expires_at else "",
    }
    return audit_row(
        action,
        service=SERVICE,
        details=details,
        request_id=request_id,
        owner_id=token.principal_id,
        actor=actor,
        event_id=audit_event_id(token.id, action),
    )


class TokenApp:
    def __init__(
        self, pool: asyncpg.Pool, schema: str, clock: Callable[[], datetime] = _utc_now
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._clock = clock

    def now(self) -> datetime:
        return self._clock()

    async def create(self, caller: Principal, request: TokenRequest) -> Created:
        caller.require(Role.ADMIN)
        new = NewToken.validated(
            request.principal_id,
            request.role,
            request.description,
            request.ttl,
            request.request_id,
        )
        async with self._pool.acquire() as conn, conn.transaction():
            created = await store.create(conn, new, caller.id, self._clock())
            if not created.replayed:
                row = token_audit(CREATE, created.token, caller, new.request_id)
                await enqueue_event(conn, self._schema, *row)
        return created

    async def list(
        self, caller: Principal, principal_id: str, page_size: int, page_token: str
    ) -> tuple[list[StoredToken], str]:
        caller.require(Role.ADMIN)
        return await store.list_page(self._pool, principal_id, page_size, page_token)

    async def revoke(self, caller: Principal, token_id: str, request_id: str) -> Revoked:
        caller.require(Role.ADMIN)
        if not request_id.strip():
            raise InvalidArgument(
                "request_id is required",
                reason="INVALID_ARGUMENT",
                metadata={"field": "request_id"},
                field_violations=[FieldViolation("request_id", "required")],
            )
        async with self._pool.acquire() as conn, conn.transaction():
            revoked = await store.revoke(conn, token_id, caller.id, self._clock())
            if not revoked.replayed:
                row = token_audit(REVOKE, revoked.token, caller, request_id)
                await enqueue_event(conn, self._schema, *row)
        return revoked
