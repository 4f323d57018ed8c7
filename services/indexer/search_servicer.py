"""``SearchService``: maps messages to the Searcher and back, nothing more."""

from __future__ import annotations

import grpc
from google.protobuf import duration_pb2

from indexer.domain.fields import require
from indexer.domain.search_request import SearchQuery, collection_ids, search_query
from indexer.search import Hit, Searcher
from kit.grpc.interceptors import current_principal
from vectorops.indexer.v1 import indexer_pb2, search_service_pb2, search_service_pb2_grpc


class SearchServicer(search_service_pb2_grpc.SearchServiceServicer):
    def __init__(self, searcher: Searcher, *, max_top_k: int, max_collections: int) -> None:
        self._searcher = searcher
        self._max_top_k = max_top_k
        self._max_collections = max_collections

    async def Search(
        self, request: search_service_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> search_service_pb2.SearchResponse:
        require(collection_id=request.collection_id)
        found = await self._searcher.search(
            current_principal(),
            request.collection_id,
            self._query(request),
            deadline_seconds=context.time_remaining(),
        )
        return search_service_pb2.SearchResponse(
            hits=[_hit(hit) for hit in found.hits],
            embedding_model=found.embedding_model,
            generation=found.collection.generation,
            took=_duration(found.took_seconds),
        )

    async def SearchMulti(
        self, request: search_service_pb2.SearchMultiRequest, context: grpc.aio.ServicerContext
    ) -> search_service_pb2.SearchMultiResponse:
        ids = collection_ids(request.collection_ids, self._max_collections)
        merged = await self._searcher.search_multi(
            current_principal(),
            ids,
            self._query(request),
            deadline_seconds=context.time_remaining(),
        )
        return search_service_pb2.SearchMultiResponse(
            hits=[_hit(hit) for hit in merged.hits],
            skipped=[
                search_service_pb2.SkippedCollection(
                    collection_id=s.collection_id, reason=s.reason, message=s.message
                )
                for s in merged.skipped
            ],
            took=_duration(merged.took_seconds),
        )

    def _query(
        self, request: search_service_pb2.SearchRequest | search_service_pb2.SearchMultiRequest
    ) -> SearchQuery:
        return search_query(
            request.query,
            request.top_k,
            self._max_top_k,
            source_ids=list(request.filter.source_ids),
            document_ids=list(request.filter.document_ids),
            score_threshold=(
                request.score_threshold if request.HasField("score_threshold") else None
            ),
            with_text=request.with_text,
        )


def _hit(hit: Hit) -> indexer_pb2.SearchHit:
    message = indexer_pb2.SearchHit(
        collection_id=hit.collection_id,
        document_id=hit.document_id,
        source_id=hit.source_id,
        chunk_index=hit.chunk_index,
        score=hit.score,
        text=hit.text,
        path=hit.path,
    )
    if hit.page is not None:
        message.page = hit.page
    if hit.metadata:
        message.metadata.update(hit.metadata)
    return message


def _duration(seconds: float) -> duration_pb2.Duration:
    took = duration_pb2.Duration()
    took.FromNanoseconds(int(seconds * 1e9))
    return took
