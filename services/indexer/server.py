"""The indexer's gRPC surface. Search and documents land with the indexing issue;
until then each RPC answers UNIMPLEMENTED."""

from kit.config import ServiceName
from kit.grpc.unimplemented import unimplemented
from kit.runtime import ServiceContext, ServiceSpec
from vectorops.indexer.v1 import document_service_pb2_grpc, search_service_pb2_grpc


def bindings(ctx: ServiceContext):
    return [
        unimplemented(search_service_pb2_grpc, "SearchService"),
        unimplemented(document_service_pb2_grpc, "DocumentService"),
    ]


SPEC = ServiceSpec(name=ServiceName.INDEXER, package="indexer", bindings=bindings)
