"""The audit service's gRPC surface. The audit log lands with the audit issue;
until then each RPC answers UNIMPLEMENTED."""

from kit.config import ServiceName
from kit.grpc.unimplemented import unimplemented
from kit.runtime import ServiceContext, ServiceSpec
from vectorops.audit.v1 import audit_service_pb2_grpc


def bindings(ctx: ServiceContext):
    return [unimplemented(audit_service_pb2_grpc, "AuditService")]


SPEC = ServiceSpec(name=ServiceName.AUDIT, package="audit", bindings=bindings)
