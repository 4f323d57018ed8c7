"""`make proto` output: every .proto has an importable module (services also their
gRPC stubs), under its proto package, with no sys.path tricks."""

import importlib
from pathlib import Path

import pytest

PROTOS = Path(__file__).resolve().parents[2] / "protos"
FILES = sorted(p.relative_to(PROTOS) for p in (PROTOS / "vectorops").rglob("*.proto"))


def test_there_is_a_proto_for_every_service_package() -> None:
    packages = {path.parts[1] for path in FILES}
    assert {"orchestrator", "indexer", "embedder", "resources", "audit", "events"} <= packages


@pytest.mark.parametrize("path", FILES, ids=str)
def test_generated_module_imports_and_matches_its_file(path: Path) -> None:
    module_name = ".".join(path.with_suffix("").parts) + "_pb2"
    module = importlib.import_module(module_name)
    assert module.DESCRIPTOR.name == str(path)
    if module.DESCRIPTOR.services_by_name:
        stubs = importlib.import_module(module_name + "_grpc")
        for service in module.DESCRIPTOR.services_by_name:
            assert hasattr(stubs, f"{service}Stub")
            assert hasattr(stubs, f"add_{service}Servicer_to_server")
