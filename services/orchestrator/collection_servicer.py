"""``vectorops.orchestrator.v1.CollectionService``: maps messages to the
collection application and back, nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from kit.grpc.interceptors import current_principal
from kit.sanitise import sanitise
from orchestrator.adapters.records import SourceSpec
from orchestrator.collection_app import CollectionApp, NewCollection
from orchestrator.domain.uploads import UploadChunk, UploadHeader
from orchestrator.messages import (
    collection_message,
    collection_status_from,
    operation_message,
    requested_config,
    source_message,
)
from orchestrator.reindex_app import ReindexApp, ReindexRequest, thresholds_from
from orchestrator.uploads import UploadApp, UploadMessage
from vectorops.common.v1 import source_pb2
from vectorops.orchestrator.v1 import collection_service_pb2 as api
from vectorops.orchestrator.v1 import collection_service_pb2_grpc

Context = grpc.aio.ServicerContext


def source_spec(source: source_pb2.Source) -> SourceSpec:
    """A requested source; ``kind`` is "" when neither directory nor upload is set."""
    kind = source.WhichOneof("kind") or ""
    directory = source.directory
    return SourceSpec(
        kind=kind,
        path=directory.path if kind == "directory" else "",
        include=tuple(directory.include_globs),
        exclude=tuple(directory.exclude_globs),
    )


class CollectionServicer(collection_service_pb2_grpc.CollectionServiceServicer):
    def __init__(self, app: CollectionApp, uploads: UploadApp, reindex: ReindexApp) -> None:
        self._app = app
        self._uploads = uploads
        self._reindex = reindex

    async def CreateCollection(
        self, request: api.CreateCollectionRequest, context: Context
    ) -> api.CreateCollectionResponse:
        wanted = request.collection
        new = NewCollection(
            name=wanted.name,
            description=wanted.description,
            config=requested_config(wanted.config) if wanted.HasField("config") else None,
            sources=[source_spec(source) for source in request.sources],
            owner_id=request.owner_id,
            request_id=request.request_id,
        )
        collection, op = await self._app.create(current_principal(), new)
        return api.CreateCollectionResponse(
            operation=operation_message(op), collection=collection_message(collection)
        )

    async def GetCollection(
        self, request: api.GetCollectionRequest, context: Context
    ) -> api.GetCollectionResponse:
        collection = await self._app.get(current_principal(), request.collection_id)
        return api.GetCollectionResponse(collection=collection_message(collection))

    async def ListCollections(
        self, request: api.ListCollectionsRequest, context: Context
    ) -> api.ListCollectionsResponse:
        statuses = [collection_status_from(value) for value in request.statuses]
        page, token = await self._app.list(
            current_principal(),
            request.page_size,
            request.page_token,
            owner_id=request.owner_id,
            statuses=[status for status in statuses if status is not None],
            name_prefix=request.name_prefix,
        )
        return api.ListCollectionsResponse(
            collections=[collection_message(c) for c in page], next_page_token=token
        )

    async def UpdateCollection(
        self, request: api.UpdateCollectionRequest, context: Context
    ) -> api.UpdateCollectionResponse:
        wanted = request.collection
        collection = await self._app.update(
            current_principal(),
            wanted.id,
            list(request.update_mask.paths),
            {"name": wanted.name, "description": wanted.description},
            request.request_id,
        )
        return api.UpdateCollectionResponse(collection=collection_message(collection))

    async def DeleteCollection(
        self, request: api.DeleteCollectionRequest, context: Context
    ) -> api.DeleteCollectionResponse:
        op = await self._app.delete(
            current_principal(), request.collection_id, request.request_id, request.force
        )
        return api.DeleteCollectionResponse(operation=operation_message(op))

    async def AddSource(
        self, request: api.AddSourceRequest, context: Context
    ) -> api.AddSourceResponse:
        op, added = await self._app.add_source(
            current_principal(),
            request.collection_id,
            source_spec(request.source),
            request.request_id,
        )
        response = api.AddSourceResponse(operation=operation_message(op))
        if added is not None:
            response.source.CopyFrom(source_message(added))
        return response

    async def RemoveSource(
        self, request: api.RemoveSourceRequest, context: Context
    ) -> api.RemoveSourceResponse:
        op = await self._app.remove_source(
            current_principal(), request.collection_id, request.source_id, request.request_id
        )
        return api.RemoveSourceResponse(operation=operation_message(op))

    async def ReindexCollection(
        self, request: api.ReindexCollectionRequest, context: Context
    ) -> api.ReindexCollectionResponse:
        op = await self._reindex.reindex(
            current_principal(),
            ReindexRequest(
                collection_id=request.collection_id,
                config=requested_config(request.config) if request.HasField("config") else None,
                request_id=request.request_id,
                expected_generation=request.expected_generation,
                thresholds=thresholds_from(request.thresholds),
            ),
        )
        return api.ReindexCollectionResponse(operation=operation_message(op))

    async def UploadDocuments(
        self, request_iterator: AsyncIterator[api.UploadDocumentsRequest], context: Context
    ) -> api.UploadDocumentsResponse:
        outcome = await self._uploads.upload(current_principal(), upload_messages(request_iterator))
        response = api.UploadDocumentsResponse(
            operation=operation_message(outcome.operation),
            documents_received=outcome.documents_received,
            bytes_received=outcome.bytes_received,
            rejected=[
                api.RejectedDocument(path=r.path, reason=r.reason, message=sanitise(r.message))
                for r in outcome.rejected
            ],
        )
        if outcome.source is not None:
            response.source.CopyFrom(source_message(outcome.source))
        return response


async def upload_messages(
    requests: AsyncIterator[api.UploadDocumentsRequest],
) -> AsyncIterator[UploadMessage]:
    """The stream's messages as plain values (None: neither header nor chunk)."""
    async for request in requests:
        kind = request.WhichOneof("message")
        if kind == "header":
            header = request.header
            yield UploadHeader(
                collection_id=header.collection_id,
                request_id=header.request_id,
                source_id=header.source_id,
                display_name=header.display_name,
                expected_documents=header.expected_documents,
            )
        elif kind == "chunk":
            chunk = request.chunk
            yield UploadChunk(
                path=chunk.path,
                data=chunk.data,
                last=chunk.last,
                media_type=chunk.media_type,
                sha256=chunk.sha256,
            )
        else:
            yield None
