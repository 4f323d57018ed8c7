"""The orchestrator's gRPC surface. Its RPCs land with the indexing and reindex issues;
until then each answers UNIMPLEMENTED."""

from kit.config import ServiceName
from kit.grpc.unimplemented import unimplemented
from kit.runtime import ServiceContext, ServiceSpec
from orchestrator.config import OrchestratorSettings
from vectorops.orchestrator.v1 import (
    collection_service_pb2_grpc,
    operation_service_pb2_grpc,
    reindex_control_service_pb2_grpc,
)


def bindings(ctx: ServiceContext):
    return [
        unimplemented(collection_service_pb2_grpc, "CollectionService"),
        unimplemented(operation_service_pb2_grpc, "OperationService"),
        unimplemented(reindex_control_service_pb2_grpc, "ReindexControlService"),
    ]


SPEC = ServiceSpec(
    name=ServiceName.ORCHESTRATOR,
    package="orchestrator",
    bindings=bindings,
    settings_type=OrchestratorSettings,
)
