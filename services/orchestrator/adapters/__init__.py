"""The orchestrator's adapters: Postgres (repository) and, later, the bus."""
