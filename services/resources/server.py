"""The resources service's gRPC surface. Quotas land with the resources issue;
until then each RPC answers UNIMPLEMENTED."""

from kit.config import ServiceName
from kit.grpc.unimplemented import unimplemented
from kit.runtime import ServiceContext, ServiceSpec
from vectorops.resources.v1 import resource_service_pb2_grpc


def bindings(ctx: ServiceContext):
    return [unimplemented(resource_service_pb2_grpc, "ResourceService")]


SPEC = ServiceSpec(name=ServiceName.RESOURCES, package="resources", bindings=bindings)
