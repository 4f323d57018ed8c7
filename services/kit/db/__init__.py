"""Postgres: the asyncpg pool and per-service schema migrations."""
