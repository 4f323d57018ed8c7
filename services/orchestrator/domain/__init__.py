"""The orchestrator's domain: operations and collections as pure state machines
and rules. No I/O here (no grpc, nats or asyncpg): the application layer loads
rows, calls these, and persists the results and the events they return."""
