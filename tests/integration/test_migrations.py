"""Per-service schema migrations on a real Postgres: applied once, in order, under a
lock when replicas start together, and never rewritten silently."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from kit.db.migrations import Migration, load_migrations, migrate

FIRST = Migration("svc:0001", "things", "CREATE TABLE {schema}.things (id int PRIMARY KEY)")
SECOND = Migration("svc:0002", "names", "ALTER TABLE {schema}.things ADD COLUMN name text")


async def _versions(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await conn.fetch(f"SELECT version FROM {schema}.schema_migrations ORDER BY version")
    return [row["version"] for row in rows]


async def test_applies_in_order_once(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        assert await migrate(conn, "svc", [FIRST]) == ["svc:0001"]
        assert await migrate(conn, "svc", [FIRST, SECOND]) == ["svc:0002"]
        assert await migrate(conn, "svc", [FIRST, SECOND]) == []
        await conn.execute("INSERT INTO svc.things (id, name) VALUES (1, 'a')")
        assert await _versions(conn, "svc") == ["svc:0001", "svc:0002"]
    finally:
        await conn.close()


async def test_changed_migration_is_refused(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        await migrate(conn, "svc", [FIRST])
        edited = Migration(FIRST.version, FIRST.name, FIRST.sql + " -- edited")
        with pytest.raises(RuntimeError, match="changed after it was applied"):
            await migrate(conn, "svc", [edited])
    finally:
        await conn.close()


async def test_a_failing_migration_leaves_nothing_half_applied(database: str) -> None:
    conn = await asyncpg.connect(database)
    broken = Migration("svc:0002", "broken", "ALTER TABLE {schema}.missing ADD COLUMN x int")
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await migrate(conn, "svc", [FIRST, broken])
        # One transaction: the first migration is rolled back with the broken one.
        assert await conn.fetchval("SELECT to_regclass('svc.things')") is None
    finally:
        await conn.close()


async def test_replicas_migrating_at_once_apply_each_migration_once(database: str) -> None:
    connections = [await asyncpg.connect(database) for _ in range(4)]
    migrations = load_migrations("kit") + [FIRST, SECOND]
    try:
        applied = await asyncio.gather(*(migrate(c, "svc", migrations) for c in connections))
        assert sorted(v for run in applied for v in run) == ["kit:0001", "svc:0001", "svc:0002"]
        assert await _versions(connections[0], "svc") == ["kit:0001", "svc:0001", "svc:0002"]
    finally:
        for conn in connections:
            await conn.close()


async def test_schema_names_are_checked(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        with pytest.raises(ValueError, match="invalid schema name"):
            await migrate(conn, "svc; DROP SCHEMA public", [FIRST])
    finally:
        await conn.close()
