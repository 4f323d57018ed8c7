"""The embedder's gRPC surface. Embedding lands with the embedder issue;
until then each RPC answers UNIMPLEMENTED."""

from kit.config import ServiceName
from kit.grpc.unimplemented import unimplemented
from kit.runtime import ServiceContext, ServiceSpec
from vectorops.embedder.v1 import embedder_service_pb2_grpc


def bindings(ctx: ServiceContext):
    return [unimplemented(embedder_service_pb2_grpc, "EmbedderService")]


SPEC = ServiceSpec(name=ServiceName.EMBEDDER, package="embedder", bindings=bindings)
