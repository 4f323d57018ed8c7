"""``qdrant.Points``: the calls ``QdrantServerStore`` makes on points (Upsert,
Delete by filter, Count, Query nearest, Scroll, CreateFieldIndex); every other
RPC answers UNIMPLEMENTED. Writes are applied before the answer, whatever
``wait`` says."""

from __future__ import annotations

import grpc
from qdrant_client import grpc as q

from vectorstore import messages
from vectorstore.catalog import Catalog
from vectorstore.errors import Unsupported, answering, refusing_the_rest

_READ_FIELDS = ("collection_name", "filter", "limit", "with_payload", "with_vectors", "timeout")
_WRITE_FIELDS = ("collection_name", "wait", "ordering", "timeout")


@refusing_the_rest
class PointsServicer(q.PointsServicer):
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    @answering
    async def Upsert(
        self, request: q.UpsertPoints, context: grpc.aio.ServicerContext
    ) -> q.PointsOperationResponse:
        clock = messages.Clock()
        messages.refuse_other_fields(request, (*_WRITE_FIELDS, "points"))
        points = messages.vector_points(request.points)
        operation = await self._catalog.upsert(request.collection_name, points)
        return q.PointsOperationResponse(result=messages.update_result(operation), time=clock())

    @answering
    async def Delete(
        self, request: q.DeletePoints, context: grpc.aio.ServicerContext
    ) -> q.PointsOperationResponse:
        clock = messages.Clock()
        messages.refuse_other_fields(request, (*_WRITE_FIELDS, "points"))
        if request.points.WhichOneof("points_selector_one_of") != "filter":
            raise Unsupported("deleting points by id: delete by a filter")
        selection = messages.payload_filter(request.points.filter)
        if not selection:
            raise Unsupported("deleting every point: delete the collection")
        operation = await self._catalog.delete_points(request.collection_name, selection)
        return q.PointsOperationResponse(result=messages.update_result(operation), time=clock())

    @answering
    async def Count(
        self, request: q.CountPoints, context: grpc.aio.ServicerContext
    ) -> q.CountResponse:
        clock = messages.Clock()
        messages.refuse_other_fields(request, ("collection_name", "filter", "exact", "timeout"))
        selection = messages.payload_filter(request.filter if request.HasField("filter") else None)
        # proto3 reads an unset ``exact`` as False; a server counts exactly then.
        exact = request.exact if request.HasField("exact") else True
        count = await self._catalog.count(request.collection_name, selection, exact)
        return q.CountResponse(result=q.CountResult(count=count), time=clock())

    @answering
    async def Query(
        self, request: q.QueryPoints, context: grpc.aio.ServicerContext
    ) -> q.QueryResponse:
        clock = messages.Clock()
        messages.refuse_other_fields(request, (*_READ_FIELDS, "query", "score_threshold", "offset"))
        if request.offset:
            raise Unsupported("query offsets")
        if messages.with_vectors(request.with_vectors):
            raise Unsupported("vectors in query results")
        hits = await self._catalog.search(
            request.collection_name,
            messages.query_vector(request),
            request.limit if request.HasField("limit") else messages.DEFAULT_LIMIT,
            messages.payload_filter(request.filter if request.HasField("filter") else None),
            request.score_threshold if request.HasField("score_threshold") else None,
            messages.with_payload(request.with_payload, default=False),
        )
        return q.QueryResponse(result=messages.scored_points(hits), time=clock())

    @answering
    async def Scroll(
        self, request: q.ScrollPoints, context: grpc.aio.ServicerContext
    ) -> q.ScrollResponse:
        clock = messages.Clock()
        messages.refuse_other_fields(request, (*_READ_FIELDS, "offset"))
        payload = messages.with_payload(request.with_payload, default=True)
        page = await self._catalog.scroll(
            request.collection_name,
            messages.payload_filter(request.filter if request.HasField("filter") else None),
            request.limit if request.HasField("limit") else messages.DEFAULT_LIMIT,
            messages.point_id(request.offset) if request.HasField("offset") else None,
            messages.with_vectors(request.with_vectors),
        )
        return messages.scroll_response(page, payload, clock())

    @answering
    async def CreateFieldIndex(
        self, request: q.CreateFieldIndexCollection, context: grpc.aio.ServicerContext
    ) -> q.PointsOperationResponse:
        clock = messages.Clock()
        kind = messages.field_kind(request)
        operation = await self._catalog.create_payload_index(
            request.collection_name, request.field_name, kind
        )
        return q.PointsOperationResponse(result=messages.update_result(operation), time=clock())
