"""``qdrant.Collections``: the calls ``QdrantServerStore`` makes on collections and
aliases (List, Get, Create, Update, Delete, ListAliases, UpdateAliases); every
other RPC answers UNIMPLEMENTED."""

from __future__ import annotations

import grpc
from qdrant_client import grpc as q

from vectorstore import messages
from vectorstore.catalog import Catalog
from vectorstore.errors import answering, refusing_the_rest


@refusing_the_rest
class CollectionsServicer(q.CollectionsServicer):
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    @answering
    async def List(
        self, request: q.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> q.ListCollectionsResponse:
        clock = messages.Clock()
        names = await self._catalog.names()
        return q.ListCollectionsResponse(
            collections=[q.CollectionDescription(name=name) for name in names], time=clock()
        )

    @answering
    async def Get(
        self, request: q.GetCollectionInfoRequest, context: grpc.aio.ServicerContext
    ) -> q.GetCollectionInfoResponse:
        clock = messages.Clock()
        state = await self._catalog.state(request.collection_name)
        return q.GetCollectionInfoResponse(result=messages.collection_info(state), time=clock())

    @answering
    async def Create(
        self, request: q.CreateCollection, context: grpc.aio.ServicerContext
    ) -> q.CollectionOperationResponse:
        clock = messages.Clock()
        await self._catalog.create(messages.collection_spec(request))
        return q.CollectionOperationResponse(result=True, time=clock())

    @answering
    async def Update(
        self, request: q.UpdateCollection, context: grpc.aio.ServicerContext
    ) -> q.CollectionOperationResponse:
        clock = messages.Clock()
        messages.check_update(request)
        await self._catalog.start_optimisation(request.collection_name)
        return q.CollectionOperationResponse(result=True, time=clock())

    @answering
    async def Delete(
        self, request: q.DeleteCollection, context: grpc.aio.ServicerContext
    ) -> q.CollectionOperationResponse:
        clock = messages.Clock()
        deleted = await self._catalog.delete(request.collection_name)
        return q.CollectionOperationResponse(result=deleted, time=clock())

    @answering
    async def ListAliases(
        self, request: q.ListAliasesRequest, context: grpc.aio.ServicerContext
    ) -> q.ListAliasesResponse:
        clock = messages.Clock()
        aliases = await self._catalog.aliases()
        return q.ListAliasesResponse(aliases=messages.alias_descriptions(aliases), time=clock())

    @answering
    async def UpdateAliases(
        self, request: q.ChangeAliases, context: grpc.aio.ServicerContext
    ) -> q.CollectionOperationResponse:
        clock = messages.Clock()
        await self._catalog.change_aliases(messages.alias_changes(request))
        return q.CollectionOperationResponse(result=True, time=clock())
