"""``UsageService``: what the indexer stores per collection of an owner, from its
document records, for the resources service's ``ReconcileUsage``. Internal: the
service or admin role only, since it names any owner's collections."""

from __future__ import annotations

import grpc

from indexer.adapters.document_repository import DocumentRepository
from indexer.domain.fields import invalid_field, require
from kit.auth import Role
from kit.grpc.interceptors import current_principal
from vectorops.indexer.v1 import usage_service_pb2, usage_service_pb2_grpc


class UsageServicer(usage_service_pb2_grpc.UsageServiceServicer):
    def __init__(self, repository: DocumentRepository) -> None:
        self._repository = repository

    async def ListCollectionUsage(
        self,
        request: usage_service_pb2.ListCollectionUsageRequest,
        context: grpc.aio.ServicerContext,
    ) -> usage_service_pb2.ListCollectionUsageResponse:
        current_principal().require(Role.SERVICE, Role.ADMIN)
        require(owner_id=request.owner_id)
        if request.page_size < 0:
            raise invalid_field("page_size", "must not be negative")
        collections, next_token = await self._repository.owner_usage(
            request.owner_id, request.page_size, request.page_token
        )
        return usage_service_pb2.ListCollectionUsageResponse(
            collections=[
                usage_service_pb2.CollectionUsage(
                    collection_id=c.collection_id,
                    documents=c.documents,
                    vectors=c.vectors,
                    stored_bytes=c.bytes,
                )
                for c in collections
            ],
            next_page_token=next_token,
        )
