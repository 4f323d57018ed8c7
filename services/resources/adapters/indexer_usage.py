"""What the indexer measures an owner's collections to hold, over gRPC
(``vectorops.indexer.v1.UsageService.ListCollectionUsage``, service role), for
``ReconcileUsage``.

The channel is opened at the first call, not at start-up: the resources
service starts before the indexer. An indexer that cannot be reached, or does
not answer in time, is UNAVAILABLE ``BACKEND_UNAVAILABLE``; any other answer
(our token refused, a malformed request) is a bug here and raised as it is.
"""

from __future__ import annotations

import grpc

from kit.errors import Unavailable
from kit.grpc.client import ServiceClient
from resources.domain.quotas import CollectionUsage
from vectorops.indexer.v1 import usage_service_pb2, usage_service_pb2_grpc

PAGE_SIZE = 1000  # the most one page may hold


class IndexerUsageClient(ServiceClient):
    STUB = usage_service_pb2_grpc.UsageServiceStub

    async def collections(self, owner_id: str) -> list[CollectionUsage]:
        """Every collection of the owner the indexer knows, with its figures."""
        stub = self._stub
        measured: list[CollectionUsage] = []
        token = ""
        while True:
            request = usage_service_pb2.ListCollectionUsageRequest(
                owner_id=owner_id, page_size=PAGE_SIZE, page_token=token
            )
            try:
                reply = await stub.ListCollectionUsage(
                    request, metadata=self._metadata, timeout=self._timeout_seconds
                )
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise Unavailable(
                        f"the indexer cannot be asked for usage: {error.code().name}",
                        reason="BACKEND_UNAVAILABLE",
                        metadata={"backend": "indexer"},
                    ) from None
                raise
            measured += [
                CollectionUsage(
                    collection_id=c.collection_id,
                    vectors=c.vectors,
                    stored_bytes=c.stored_bytes,
                    documents=c.documents,
                )
                for c in reply.collections
            ]
            token = reply.next_page_token
            if not token:
                return measured
