"""The audit service: the append-only, PII-sanitised, hash-chained audit log."""
