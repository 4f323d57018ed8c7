"""Per-service schema migrations: numbered SQL files applied once, in order, under a lock.

Each service owns one schema and keeps its files in ``<service>/migrations/NNNN_name.sql``.
The kit adds its own (the outbox) first, so every service has an outbox table.
Several replicas may start at once; an advisory lock makes one of them migrate.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

from kit.logs import get_logger

log = get_logger(__name__)

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Migration:
    version: str  # "<package>:<NNNN>", unique across the kit and the service
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(package: str) -> list[Migration]:
    """The migrations shipped in ``<package>/migrations``, sorted by number."""
    folder = resources.files(package) / "migrations"
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(f"{package}:{match[1]}", match[2], entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def load_from_directory(label: str, directory: Path) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match:
            found.append(Migration(f"{label}:{match[1]}", match[2], path.read_text()))
    return found


async def migrate(conn: asyncpg.Connection, schema: str, migrations: list[Migration]) -> list[str]:
    """Apply what has not been applied yet; returns the versions applied now.

    SQL may use ``{schema}`` for the schema name. A migration whose file changed
    after it was applied is an error: history is never rewritten silently.
    """
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    applied_now: list[str] = []
    async with conn.transaction():
        # Transaction-scoped: released at commit, even if this process dies.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrate:{schema}")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                    version text PRIMARY KEY,
                    name text NOT NULL,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch(f"SELECT version, checksum FROM {schema}.schema_migrations")
        done = {row["version"]: row["checksum"] for row in rows}
        for migration in migrations:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise RuntimeError(
                        f"migration {migration.version} ({migration.name}) "
                        "changed after it was applied"
                    )
                continue
            await conn.execute(migration.sql.replace("{schema}", schema))
            await conn.execute(
                f"INSERT INTO {schema}.schema_migrations (version, name, checksum) "
                "VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied_now.append(migration.version)
    if applied_now:
        log.info("postgres.migrated", schema=schema, versions=applied_now)
    return applied_now
