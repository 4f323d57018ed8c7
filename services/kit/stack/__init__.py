"""Run the embedded backing services (Postgres, nats-server) as supervised children."""
