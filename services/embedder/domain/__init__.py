"""The embedder's domain: pure rules and algorithms, no I/O (no grpc, nats or tritonclient)."""
