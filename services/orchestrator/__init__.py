"""The orchestrator: the public API; collections, operations and their state machines,
the outbox, and the atomic reindex switch."""
