"""The run-time token store on a real Postgres: a create or a revoke reaches a
service's cache through NOTIFY (the periodic reload is set far off here, so
only the notification can explain a prompt change), expiry needs no reload,
a retried create makes no second token, and only digests are stored."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from kit.auth import Principal, Role, TokenAuthenticator, digest
from kit.db.migrations import load_migrations, migrate
from kit.errors import InvalidArgument, NotFound, Unauthenticated
from kit.tokens import SCHEMA, store
from kit.tokens.cache import TokenCache
from kit.tokens.records import NewToken

pytestmark = pytest.mark.integration

NOTIFY_ONLY = 3600.0  # no periodic reload within a test


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        assert await migrate(conn, SCHEMA, load_migrations("kit.tokens")) == ["kit.tokens:0001"]
        # A second service starting applies nothing again.
        assert await migrate(conn, SCHEMA, load_migrations("kit.tokens")) == []
    yield pool
    await pool.close()


@pytest.fixture
async def cache(pool: asyncpg.Pool, database: str) -> AsyncIterator[TokenCache]:
    cache = TokenCache(pool, database, refresh_seconds=NOTIFY_ONLY)
    await cache.start()
    yield cache
    await cache.stop()


def _now() -> datetime:
    return datetime.now(UTC)


async def _create(pool: asyncpg.Pool, new: NewToken, by: str = "ops") -> store.Created:
    async with pool.acquire() as conn, conn.transaction():
        return await store.create(conn, new, by, _now())


async def _revoke(pool: asyncpg.Pool, token_id: str) -> store.Revoked:
    async with pool.acquire() as conn, conn.transaction():
        return await store.revoke(conn, token_id, "ops", _now())


async def _until(check, seconds: float = 2.0) -> float:
    """Poll ``check`` until true; returns how long it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, "not in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_create_and_revoke_reach_the_cache_through_notify(pool, cache) -> None:
    authenticator = TokenAuthenticator([], cache)
    new = NewToken.validated("carol", "user", "laptop", None, str(uuid.uuid4()))
    created = await _create(pool, new)
    header = f"Bearer {created.bearer_token}"

    def accepted() -> bool:
        try:
            return authenticator.authenticate(header) == Principal("carol", Role.USER)
        except Unauthenticated:
            return False

    await _until(accepted)
    await _revoke(pool, created.token.id)
    await _until(lambda: not accepted())
    with pytest.raises(Unauthenticated, match="unknown or revoked token"):
        authenticator.authenticate(header)


async def test_a_rolled_back_create_is_never_honoured(pool, cache) -> None:
    new = NewToken.validated("dave", "user", "", None, str(uuid.uuid4()))
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        created = await store.create(conn, new, "ops", _now())
        await transaction.rollback()
    await cache.reload()
    assert cache.principal_for(bytes.fromhex(digest(created.bearer_token))) is None


async def test_an_expired_token_is_refused_without_a_reload(pool, cache) -> None:
    new = NewToken.validated("erin", "user", "", timedelta(seconds=1), str(uuid.uuid4()))
    created = await _create(pool, new)
    presented = bytes.fromhex(digest(created.bearer_token))
    await _until(lambda: cache.principal_for(presented) is not None)
    reloads = cache.reloads
    await _until(lambda: cache.principal_for(presented) is None, seconds=3)
    assert cache.reloads == reloads


async def test_a_retry_makes_no_second_token_and_a_reuse_is_refused(pool) -> None:
    rid = str(uuid.uuid4())
    new = NewToken.validated("frank", "service", "ci", timedelta(days=1), rid)
    first = await _create(pool, new)
    retry = await _create(pool, new)
    assert (retry.replayed, retry.bearer_token) == (True, "")
    assert retry.token == first.token
    assert (
        await pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.tokens WHERE request_id=$1", rid) == 1
    )
    # Another admin's request_id is their own.
    other = await _create(pool, new, by="ops-2")
    assert not other.replayed and other.token.id != first.token.id
    with pytest.raises(InvalidArgument) as reused:
        await _create(pool, NewToken.validated("frank", "admin", "ci", timedelta(days=1), rid))
    assert reused.value.reason == "REQUEST_ID_REUSED"


async def test_only_the_digest_is_stored(pool) -> None:
    created = await _create(pool, NewToken.validated("gina", "user", "", None, "r-digest"))
    row = await pool.fetchrow(
        f"SELECT * FROM {SCHEMA}.tokens WHERE id = $1", uuid.UUID(created.token.id)
    )
    assert row["sha256"] == digest(created.bearer_token)
    assert all(created.bearer_token not in str(value) for value in row.values())


async def test_revoke_is_idempotent_and_an_unknown_id_is_not_found(pool) -> None:
    created = await _create(pool, NewToken.validated("hal", "user", "", None, "r-revoke"))
    first = await _revoke(pool, created.token.id)
    again = await _revoke(pool, created.token.id)
    assert (first.replayed, again.replayed) == (False, True)
    assert again.token.revoked_at == first.token.revoked_at is not None
    for unknown in (str(uuid.uuid4()), "not-a-uuid"):
        with pytest.raises(NotFound) as missing:
            await _revoke(pool, unknown)
        assert missing.value.reason == "TOKEN_NOT_FOUND"


async def test_lists_page_newest_first_and_filter_by_principal(pool) -> None:
    made = [
        await _create(pool, NewToken.validated(f"p{i % 2}", "user", "", None, f"r-list-{i}"))
        for i in range(5)
    ]
    seen, page_token = [], ""
    while True:
        page, page_token = await store.list_page(pool, "", 2, page_token)
        assert len(page) <= 2
        seen += page
        if not page_token:
            break
    assert [t.id for t in seen] == [c.token.id for c in reversed(made)]
    only, _ = await store.list_page(pool, "p1", 100, "")
    assert [t.id for t in only] == [made[3].token.id, made[1].token.id]
    with pytest.raises(InvalidArgument) as bad:
        await store.list_page(pool, "p0", 2, store.list_page.__name__)
    assert bad.value.reason == "INVALID_PAGE_TOKEN"
