"""The ``auth.tokens`` table: run-time tokens, kept as SHA-256 digests.

Writes take the caller's connection, inside its transaction, so the caller
can add its audit rows to the same commit; each write NOTIFYs
``CHANGE_CHANNEL``, delivered at that commit, so every service reloads.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from kit.auth import Role, digest, new_token
from kit.db.keyset import SortKey, page_size, uuid_or_not_found
from kit.errors import InvalidArgument, NotFound
from kit.tokens import CHANGE_CHANNEL, SCHEMA
from kit.tokens.records import NewToken, StoredToken

_TABLE = f"{SCHEMA}.tokens"
# Every column but the digest and the idempotency key: nothing else leaves the store.
_COLUMNS = (
    "id, principal_id, role, description, created_at, created_by, "
    "expires_at, revoked_at, revoked_by"
)
_NEWEST_FIRST = SortKey(("created_at", "id"), (datetime.fromisoformat, uuid.UUID))


@dataclass(frozen=True)
class Created:
    token: StoredToken
    bearer_token: str  # "" on a retry: the clear token is not kept
    replayed: bool


@dataclass(frozen=True)
class Revoked:
    token: StoredToken
    replayed: bool  # it was revoked already


@dataclass(frozen=True)
class ActiveToken:
    sha256: str
    token: StoredToken


def _stored(row: Mapping) -> StoredToken:
    return StoredToken(
        id=str(row["id"]),
        principal_id=row["principal_id"],
        role=Role(row["role"]),
        description=row["description"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        revoked_by=row["revoked_by"],
    )


async def _notify(conn: asyncpg.Connection, token_id: str) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", CHANGE_CHANNEL, token_id)


async def create(
    conn: asyncpg.Connection, new: NewToken, created_by: str, now: datetime
) -> Created:
    """Insert a fresh token, or find the one a first call with this request_id made."""
    if not conn.is_in_transaction():
        raise RuntimeError("create runs inside the caller's transaction")
    clear = new_token()
    row = await conn.fetchrow(
        f"""INSERT INTO {_TABLE} (id, sha256, principal_id, role, description,
                created_at, created_by, expires_at, request_id, request_hash)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (created_by, request_id) DO NOTHING
            RETURNING {_COLUMNS}""",
        uuid.uuid4(),
        digest(clear),
        new.principal_id,
        new.role.value,
        new.description,
        now,
        created_by,
        new.expires_at(now),
        new.request_id,
        new.request_hash,
    )
    if row is not None:
        created = _stored(row)
        await _notify(conn, created.id)
        return Created(created, clear, replayed=False)
    first = await conn.fetchrow(
        f"SELECT {_COLUMNS}, request_hash FROM {_TABLE} WHERE created_by = $1 AND request_id = $2",
        created_by,
        new.request_id,
    )
    if first["request_hash"] != new.request_hash:
        raise InvalidArgument(
            "request_id was already used for a different request",
            reason="REQUEST_ID_REUSED",
            metadata={"request_id": new.request_id},
        )
    return Created(_stored(first), "", replayed=True)


async def revoke(
    conn: asyncpg.Connection, token_id: str, revoked_by: str, now: datetime
) -> Revoked:
    """Revoke a token; one revoked already is returned as it is."""
    if not conn.is_in_transaction():
        raise RuntimeError("revoke runs inside the caller's transaction")
    key = uuid_or_not_found(token_id, "TOKEN_NOT_FOUND", "token_id")
    row = await conn.fetchrow(
        f"""UPDATE {_TABLE} SET revoked_at = $2, revoked_by = $3
            WHERE id = $1 AND revoked_at IS NULL RETURNING {_COLUMNS}""",
        key,
        now,
        revoked_by,
    )
    if row is not None:
        await _notify(conn, token_id)
        return Revoked(_stored(row), replayed=False)
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM {_TABLE} WHERE id = $1", key)
    if row is None:
        raise _not_found(token_id)
    return Revoked(_stored(row), replayed=True)


def _not_found(token_id: str) -> NotFound:
    return NotFound(
        f"token_id {token_id!r} not found",
        reason="TOKEN_NOT_FOUND",
        metadata={"token_id": token_id},
    )


async def list_page(
    pool: asyncpg.Pool, principal_id: str, requested_size: int, page_token: str
) -> tuple[list[StoredToken], str]:
    """One page of tokens, newest first, and the token of the next page."""
    size = page_size(requested_size)
    filters = {"principal_id": principal_id}
    after = _NEWEST_FIRST.after(page_token, filters)
    conditions, args = [], []
    if principal_id:
        args.append(principal_id)
        conditions.append(f"principal_id = ${len(args)}")
    if after is not None:
        args += list(after)
        conditions.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    args.append(size + 1)
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM {_TABLE} {where} "
        f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}",
        *args,
    )
    return [_stored(row) for row in rows[:size]], _NEWEST_FIRST.next_token(rows, size, filters)


async def active(pool: asyncpg.Pool) -> list[ActiveToken]:
    """The tokens neither revoked nor expired now (by the database's clock)."""
    rows = await pool.fetch(
        f"""SELECT sha256, {_COLUMNS} FROM {_TABLE}
            WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"""
    )
    return [ActiveToken(row["sha256"], _stored(row)) for row in rows]
