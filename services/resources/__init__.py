"""The resources service: per-owner quotas, estimates, reservations and usage."""
