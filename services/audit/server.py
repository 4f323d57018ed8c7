"""The audit service: the audit sink (durable consumer on VO_AUDIT) and the
AuditService queries over the append-only, hash-chained log."""

from audit.adapters.audit_repository import AuditRepository
from audit.chain_monitor import ChainMonitor
from audit.servicer import AuditServicer
from audit.sink import AuditSink, consumer_spec
from kit.config import ServiceName
from kit.grpc.server import bind
from kit.runtime import ServiceContext, ServiceSpec
from vectorops.audit.v1 import audit_service_pb2_grpc


def bindings(ctx: ServiceContext):
    repository = AuditRepository(ctx.pool, ctx.schema)
    return [bind(audit_service_pb2_grpc, "AuditService", AuditServicer(repository))]


def background(ctx: ServiceContext):
    repository = AuditRepository(ctx.pool, ctx.schema)
    sink = AuditSink(repository)
    # One at a time: the chain is appended in stream order.
    return [
        ctx.bus.consume(consumer_spec(), sink.handle, concurrency=1, stop=ctx.stop),
        ChainMonitor(repository).run(ctx.stop),
    ]


SPEC = ServiceSpec(
    name=ServiceName.AUDIT, package="audit", bindings=bindings, background=background
)
