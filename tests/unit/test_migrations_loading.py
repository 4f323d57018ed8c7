"""Migrations are discovered by number; the kit ships the outbox."""

from kit.db.migrations import load_migrations


def test_kit_ships_the_outbox_migration() -> None:
    migrations = load_migrations("kit")
    assert [m.version for m in migrations][:1] == ["kit:0001"]
    assert "CREATE TABLE {schema}.outbox" in migrations[0].sql


def test_a_package_without_migrations_has_none() -> None:
    assert load_migrations("embedder") == []
