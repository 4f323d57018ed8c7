"""The Prometheus ``/metrics`` endpoint of every process, and the gRPC server metrics.

Metric names follow the conventions of go-grpc-prometheus so existing Grafana
panels for gRPC work unchanged; labels are bounded (service, method, code).
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server

GRPC_STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
GRPC_HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its end, as seen by the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
GRPC_MSG_SENT = Counter(
    "grpc_server_msg_sent_total",
    "Stream messages sent by the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)


def serve_metrics(
    host: str, port: int, registry: CollectorRegistry = REGISTRY
) -> tuple[object, int]:
    """Start the ``/metrics`` HTTP endpoint in a daemon thread; returns (server, bound port)."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, server.server_port
