"""The shared kit: config, logs, errors, gRPC server, metrics, Postgres, JetStream, outbox,
and what several services must agree on: the embedding model registry and the hashing model.

Every service builds on these pieces; no service imports another service's code.
"""
