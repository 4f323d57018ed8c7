"""NATS JetStream: the stream topology and the client every service uses."""
