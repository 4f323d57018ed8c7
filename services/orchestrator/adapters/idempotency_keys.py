"""Idempotency keys: a request's (owner, request_id) claimed in the transaction
that does its work, so a retry gets the first request's result.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from kit.errors import InvalidArgument
from orchestrator.adapters.shared_rows import (
    SharedRows,
)


class IdempotencyKeys(SharedRows):
    async def _claim_key(
        self,
        conn: asyncpg.Connection,
        owner_id: str,
        request_id: str,
        request_hash: str,
        now: datetime,
    ) -> asyncpg.Record | None:
        """Claim (owner, request_id) for this transaction, or return the first
        request's key. A concurrent retry blocks on the primary key until the
        first commits (then sees its result) or rolls back (then claims it)."""
        if not request_id:
            return None
        claimed = await conn.fetchval(
            f"""INSERT INTO {self._s}.idempotency_keys
                    (owner_id, request_id, request_hash, created_at)
                VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true""",
            owner_id,
            request_id,
            request_hash,
            now,
        )
        if claimed:
            return None
        first = await conn.fetchrow(
            f"""SELECT * FROM {self._s}.idempotency_keys
                WHERE owner_id = $1 AND request_id = $2""",
            owner_id,
            request_id,
        )
        if first["request_hash"] != request_hash:
            raise InvalidArgument(
                "request_id was already used for a different request",
                reason="REQUEST_ID_REUSED",
                metadata={"request_id": request_id},
            )
        return first

    async def _settle_key(
        self,
        conn: asyncpg.Connection,
        owner_id: str,
        request_id: str,
        operation_id: str,
        collection_id: str,
    ) -> None:
        if request_id:
            await conn.execute(
                f"""UPDATE {self._s}.idempotency_keys SET operation_id = $3, collection_id = $4
                    WHERE owner_id = $1 AND request_id = $2""",
                owner_id,
                request_id,
                uuid.UUID(operation_id),
                uuid.UUID(collection_id),
            )

    async def request_seen(self, owner_id: str, request_id: str) -> bool:
        """Whether (owner, request_id) was claimed before: a retry, which the
        repository answers with the first result and which quota admission skips.
        ``owner_id`` "" is an admin's key, as ``start_operation`` keys it."""
        if not request_id:
            return False
        return bool(
            await self._pool.fetchval(
                f"""SELECT true FROM {self._s}.idempotency_keys
                    WHERE owner_id = $1 AND request_id = $2""",
                owner_id,
                request_id,
            )
        )
