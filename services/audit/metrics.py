"""The audit service's Prometheus metrics: the chain's health as the background
check (``chain_monitor``) last found it, and the checks made."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CHAIN_BROKEN = Gauge(
    "vectorops_audit_chain_broken",
    "1 when the last background check of the hash chain found a broken link, else 0.",
)
CHAIN_VERIFIED_SEQUENCE = Gauge(
    "vectorops_audit_chain_verified_sequence",
    "The last sequence the periodic check has verified the chain up to.",
)
CHAIN_CHECKS = Counter(
    "vectorops_audit_chain_checks_total",
    "Checks of the hash chain, by outcome (ok, broken) and by whom (monitor, rpc).",
    ["by", "outcome"],
)
