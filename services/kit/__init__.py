"""The shared kit: config, logs, errors, gRPC server, metrics, Postgres, JetStream, outbox.

Every service builds on these pieces; no service imports another service's code.
"""
