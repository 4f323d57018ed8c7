"""Search, the application layer: find the caller's collections, embed the query
with each collection's own model, search each live collection through its
alias, and (for several collections) merge the hits.

A collection is live when its alias exists in the vector store: the indexer sets
the alias when an INDEX finishes, moves it at a reindex switch, and removes it
first thing in a DELETE. Searching the alias, never the physical collection,
is what lets a reindex switch under running searches: the store resolves the
alias once per call, so a search sees the old collection or the new one, whole.
An operation running on a live collection changes nothing here: it keeps serving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from indexer.access import readable_collection
from indexer.adapters.document_repository import CollectionRecord, DocumentRepository
from indexer.adapters.embedder_client import QueryEmbeddings
from indexer.adapters.vector_store import ScoredPoint, VectorCollectionNotFound, VectorStore
from indexer.domain.scores import merge
from indexer.domain.search_request import SearchQuery
from kit.auth import Principal
from kit.errors import FailedPrecondition, NotFound, PreconditionViolation

T = TypeVar("T")

# What the indexer can say of a collection with nothing live. It does not keep
# the orchestrator's status (PENDING, ERROR or DELETING), only whether an alias
# serves; clients branch on the reason, COLLECTION_NOT_SEARCHABLE.
NOT_LIVE = "NOT_LIVE"

# Payload keys that have their own SearchHit field; the rest is hit metadata.
_HIT_FIELDS = frozenset(
    {"collection_id", "source_id", "document_id", "chunk_index", "text", "page", "path"}
)


class QueryEmbedder(Protocol):
    async def embed_queries(
        self,
        model: str,
        texts: Sequence[str],
        *,
        instruction: str | None = None,
        timeout_seconds: float | None = None,
        field: str = "query",
    ) -> QueryEmbeddings: ...


@dataclass(frozen=True)
class Hit:
    collection_id: str
    document_id: str
    source_id: str
    chunk_index: int
    score: float  # the raw score of the collection's model
    path: str
    page: int | None
    text: str  # "" unless the search asked for text
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CollectionHits:
    collection: CollectionRecord
    embedding_model: str
    hits: list[Hit]
    took_seconds: float = 0.0


@dataclass(frozen=True)
class Skipped:
    collection_id: str
    reason: str  # COLLECTION_NOT_FOUND or COLLECTION_NOT_SEARCHABLE
    message: str


@dataclass(frozen=True)
class MergedHits:
    hits: list[Hit]
    skipped: list[Skipped]
    took_seconds: float = 0.0


def not_searchable(collection_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"collection {collection_id} has nothing live to search yet (or any more)",
        reason="COLLECTION_NOT_SEARCHABLE",
        metadata={"collection_id": collection_id, "status": NOT_LIVE},
        precondition_violations=[
            PreconditionViolation("STATUS", f"collection:{collection_id}", "nothing live")
        ],
    )


class Searcher:
    def __init__(
        self,
        repository: DocumentRepository,
        store: VectorStore,
        embedder: QueryEmbedder,
        *,
        timeout_seconds: float,
    ) -> None:
        self._repository = repository
        self._store = store
        self._embedder = embedder
        self._timeout_seconds = timeout_seconds

    async def search(
        self,
        principal: Principal,
        collection_id: str,
        query: SearchQuery,
        deadline_seconds: float | None = None,
    ) -> CollectionHits:
        """One collection: NOT_FOUND (COLLECTION_NOT_FOUND) when the caller may not
        see it, FAILED_PRECONDITION (COLLECTION_NOT_SEARCHABLE) when nothing is live."""
        started = time.perf_counter()
        collection = await readable_collection(self._repository, principal, collection_id)
        await self._require_live(collection)
        embedded = await self._embed(collection, query, deadline_seconds)
        hits = await self._search_alias(collection, embedded.vectors[0], query)
        return CollectionHits(
            collection, embedded.model, hits, took_seconds=time.perf_counter() - started
        )

    async def search_multi(
        self,
        principal: Principal,
        collection_ids: Sequence[str],
        query: SearchQuery,
        deadline_seconds: float | None = None,
    ) -> MergedHits:
        """Several collections (ids already distinct): those the caller may not see,
        or with nothing live, are skipped and named; the query is embedded once per
        distinct (model, instruction); hits merge by per-collection normalised score
        (``indexer.domain.scores``) into the ``top_k`` best overall."""
        started = time.perf_counter()
        resolved = await _all(self._resolve(principal, cid) for cid in collection_ids)
        live = [item for item in resolved if isinstance(item, CollectionRecord)]
        skipped = [item for item in resolved if isinstance(item, Skipped)]
        vectors = await self._embed_once_per_model(live, query, deadline_seconds)
        searched = await _all(self._search_or_skip(c, vectors[_model_key(c)], query) for c in live)
        lists = [hits for hits in searched if isinstance(hits, list)]
        skipped += [item for item in searched if isinstance(item, Skipped)]
        ranked = merge(lists, lambda hit: hit.score, query.top_k)
        return MergedHits(
            [r.item for r in ranked], skipped, took_seconds=time.perf_counter() - started
        )

    async def _resolve(
        self, principal: Principal, collection_id: str
    ) -> CollectionRecord | Skipped:
        try:
            collection = await readable_collection(self._repository, principal, collection_id)
            await self._require_live(collection)
        except NotFound as error:
            if error.reason != "COLLECTION_NOT_FOUND":
                raise
            return Skipped(collection_id, error.reason, error.message)
        except FailedPrecondition as error:
            if error.reason != "COLLECTION_NOT_SEARCHABLE":
                raise
            return Skipped(collection_id, error.reason, error.message)
        return collection

    async def _require_live(self, collection: CollectionRecord) -> None:
        if await self._store.get_alias(collection.alias_name) is None:
            raise not_searchable(collection.collection_id)

    async def _embed(
        self, collection: CollectionRecord, query: SearchQuery, deadline_seconds: float | None
    ) -> QueryEmbeddings:
        model, instruction = _model_key(collection)
        timeout = self._timeout_seconds
        if deadline_seconds is not None:
            timeout = min(timeout, deadline_seconds)
        return await self._embedder.embed_queries(
            model, [query.text], instruction=instruction, timeout_seconds=timeout
        )

    async def _embed_once_per_model(
        self,
        collections: Iterable[CollectionRecord],
        query: SearchQuery,
        deadline_seconds: float | None,
    ) -> dict[tuple[str, str | None], np.ndarray]:
        """One query vector per distinct (model, instruction), embedded concurrently."""
        first_of: dict[tuple[str, str | None], CollectionRecord] = {}
        for collection in collections:
            first_of.setdefault(_model_key(collection), collection)
        embedded = await _all(self._embed(c, query, deadline_seconds) for c in first_of.values())
        return {key: result.vectors[0] for key, result in zip(first_of, embedded, strict=True)}

    async def _search_or_skip(
        self, collection: CollectionRecord, vector: np.ndarray, query: SearchQuery
    ) -> list[Hit] | Skipped:
        try:
            return await self._search_alias(collection, vector, query)
        except FailedPrecondition as error:
            if error.reason != "COLLECTION_NOT_SEARCHABLE":
                raise
            return Skipped(collection.collection_id, error.reason, error.message)

    async def _search_alias(
        self, collection: CollectionRecord, vector: np.ndarray, query: SearchQuery
    ) -> list[Hit]:
        try:
            points = await self._store.search(
                collection.alias_name,
                vector,
                query.top_k,
                filter=query.filter.payload_filter() or None,
                score_threshold=query.score_threshold,
            )
        except VectorCollectionNotFound:
            # The alias went between the check and the search (a DELETE began).
            raise not_searchable(collection.collection_id) from None
        return [_hit(collection.collection_id, point, query.with_text) for point in points]


def _model_key(collection: CollectionRecord) -> tuple[str, str | None]:
    """The collection's query embedding: its model and its instruction override
    (None: the model's own query instruction; "": none at all)."""
    config = collection.config
    instruction = config.get("instruction")
    return str(config.get("embedding_model") or ""), (
        instruction if isinstance(instruction, str) else None
    )


def _hit(collection_id: str, point: ScoredPoint, with_text: bool) -> Hit:
    payload = point.payload or {}
    page = payload.get("page")
    return Hit(
        collection_id=collection_id,
        document_id=str(payload.get("document_id") or ""),
        source_id=str(payload.get("source_id") or ""),
        chunk_index=int(payload.get("chunk_index") or 0),
        score=point.score,
        path=str(payload.get("path") or ""),
        page=int(page) if isinstance(page, int) else None,
        text=str(payload.get("text") or "") if with_text else "",
        metadata={k: v for k, v in payload.items() if k not in _HIT_FIELDS},
    )


async def _all(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Run concurrently; the first error (in call order) is raised once all ended,
    so no call is left running unobserved."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]
