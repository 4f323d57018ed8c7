"""``QdrantServerStore``: the ``VectorStore`` on a Qdrant server or cluster, through
qdrant-client's ``AsyncQdrantClient`` over gRPC.

The server does the heavy parts itself: aliases (every points call resolves them;
a move is one ``update_collection_aliases`` request, applied under the server's
collections lock), payload indexes, quantization, and optimisation in the
background (``optimize`` waits for green). This adapter adds what the interface
promises on top: our name rules and system-collection protection, an idempotent
create (the config recorded in the collection's metadata must match), exact
counts for filtered deletes, upserts in batches that fail whole or not at all,
and the vector store's errors for the client's.

The same class runs on qdrant-client's local mode (``AsyncQdrantClient(location=
":memory:")``), an in-process brute-force implementation of the same API that the
contract tests use. Where that mode differs (no quantization config or payload
indexes kept, ``ValueError`` for every refusal), ``qdrant_mapping`` and
``qdrant_errors`` hide it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
from qdrant_client import AsyncQdrantClient, models

from indexer.adapters.qdrant_errors import translate, translated
from indexer.adapters.qdrant_mapping import (
    PAYLOAD_INDEXES,
    Placement,
    alias_operations,
    collection_info_of,
    config_metadata,
    config_of,
    grpc_endpoint,
    point_id,
    qdrant_filter,
    quantization_config,
    vector_list,
    vector_params,
)
from indexer.adapters.vector_store import (
    SYSTEM_PREFIX,
    CollectionConfig,
    CollectionInfo,
    Distance,
    InvalidVectorStoreArgument,
    PayloadFilter,
    Quantization,
    ScoredPoint,
    ScrollPage,
    SystemCollectionProtected,
    VectorCollectionConflict,
    VectorCollectionNotFound,
    VectorPoint,
    VectorStoreUnavailable,
    collection_config_for,
    scroll_page,
    validate_name,
)

UPSERT_BATCH = 256
"""Points per upsert request: 256 × 384 float32 plus payload text stays well under
gRPC's message limits."""

_POLL_FIRST_SECONDS = 0.1
_POLL_MAX_SECONDS = 5.0


class QdrantServerStore:
    """``VectorStore`` on ``qdrant_client.AsyncQdrantClient``; see the module docstring."""

    def __init__(
        self,
        client: AsyncQdrantClient,
        *,
        indexing_threshold_kb: int | None = None,
        optimize_timeout_seconds: float = 1800.0,
        upsert_batch: int = UPSERT_BATCH,
        placement: Placement | None = None,
    ) -> None:
        """``indexing_threshold_kb``: the collections' segment size above which the
        server builds HNSW and quantized storage (None: the server's default).
        ``placement``: shards and replicas of each collection created on a cluster."""
        self._client = client
        self.placement = placement or Placement()
        self._indexing_threshold_kb = indexing_threshold_kb
        self._optimize_timeout_seconds = optimize_timeout_seconds
        self._upsert_batch = upsert_batch

    @classmethod
    def connect(
        cls, url: str, api_key: str | None = None, *, timeout_seconds: int = 30, **options: Any
    ) -> QdrantServerStore:
        """A store on the server whose gRPC endpoint is ``url`` (``http://qdrant:6334``).
        Nothing is dialled until the first call."""
        endpoint = grpc_endpoint(url)
        client = AsyncQdrantClient(
            host=endpoint.host,
            grpc_port=endpoint.port,
            https=endpoint.https,
            prefer_grpc=True,
            api_key=api_key,
            timeout=timeout_seconds,
            # The version check goes over REST, whose port a gRPC URL does not name.
            check_compatibility=False,
        )
        return cls(client, **options)

    # -- collections ------------------------------------------------------------

    async def create_collection(
        self,
        name: str,
        dimension: int,
        distance: Distance = Distance.COSINE,
        quantization: Quantization = Quantization.FLOAT32,
        *,
        system: bool = False,
    ) -> bool:
        config = collection_config_for(name, dimension, distance, quantization, system=system)
        with translated(name):
            if name in await self._alias_map():
                raise VectorCollectionConflict(
                    f"{name!r} is an alias", metadata={"collection": name}
                )
            created = False
            if name not in await self._collection_names():
                created = await self._create(name, config)
            info = await self._client.get_collection(name)
            existing = config_of(name, info)
            if existing != config:
                raise VectorCollectionConflict(
                    f"vector collection {name!r} exists with {existing.to_dict()}, "
                    f"not {config.to_dict()}",
                    metadata={"collection": name},
                )
            # Also on the idempotent path: it completes a create that stopped between
            # the collection and its indexes.
            await self._ensure_payload_indexes(name, info)
        return created

    async def delete_collection(self, name: str, *, system: bool = False) -> bool:
        validate_name(name, allow_system=True)
        if name.startswith(SYSTEM_PREFIX) and not system:
            raise SystemCollectionProtected(
                f"{name!r} is a system collection", metadata={"collection": name}
            )
        try:
            with translated(name):
                # The server drops the collection's aliases with it.
                return bool(await self._client.delete_collection(name))
        except VectorCollectionNotFound:
            return False

    async def collection_exists(self, name: str) -> bool:
        try:
            validate_name(name, allow_system=True)
        except InvalidVectorStoreArgument:
            return False
        # Not the client's collection_exists: an alias is no collection.
        return name in await self._collection_names()

    async def list_collections(self) -> list[str]:
        return sorted(await self._collection_names())

    async def collection_info(self, name: str) -> CollectionInfo:
        with translated(name):
            physical = await self.resolve(name)
            return collection_info_of(physical, await self._client.get_collection(physical))

    async def optimize(self, name: str) -> CollectionInfo:
        """Wait until the server has optimised the collection: green, or red when its
        optimizer failed (the caller's green check then fails with the status in
        hand). Past ``optimize_timeout_seconds`` → ``VectorStoreUnavailable``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._optimize_timeout_seconds
        delay = _POLL_FIRST_SECONDS
        nudged = False
        with translated(name):
            physical = await self.resolve(name)
            while True:
                info = await self._client.get_collection(physical)
                status = models.CollectionStatus(info.status)
                if status in (models.CollectionStatus.GREEN, models.CollectionStatus.RED):
                    return collection_info_of(physical, info)
                if status is models.CollectionStatus.GREY and not nudged:
                    # Grey: optimisations are due but wait for an update to start them.
                    await self._client.update_collection(
                        physical, optimizers_config=models.OptimizersConfigDiff()
                    )
                    nudged = True
                if loop.time() + delay > deadline:
                    raise VectorStoreUnavailable(
                        f"vector collection {physical!r} is still {status.value} after "
                        f"{self._optimize_timeout_seconds:g}s of optimisation"
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _POLL_MAX_SECONDS)

    # -- points -----------------------------------------------------------------

    async def upsert(self, name: str, points: Sequence[VectorPoint]) -> int:
        # Every point is checked before anything is sent, and all vectors must have
        # one size: a wrong size is then refused by the first batch, before any write.
        ids = [point_id(point) for point in points]
        vectors = [vector_list(point.vector) for point in points]
        if len({len(vector) for vector in vectors}) > 1:
            raise InvalidVectorStoreArgument(
                "the points' vectors differ in size", metadata={"field": "vector"}
            )
        if not points:
            await self.count(name, exact=False)  # the collection must exist all the same
            return 0
        with translated(name):
            for start in range(0, len(points), self._upsert_batch):
                end = start + self._upsert_batch
                batch = models.Batch(
                    ids=ids[start:end],
                    vectors=vectors[start:end],
                    payloads=[point.payload for point in points[start:end]],
                )
                await self._client.upsert(name, points=batch, wait=True)
        return len(points)

    async def delete_points(self, name: str, filter: PayloadFilter) -> int:
        if not filter:
            # An empty filter would match everything: deleting a collection's points
            # is delete_collection's job, never a missing argument's.
            raise InvalidVectorStoreArgument(
                "delete_points needs a non-empty filter", metadata={"field": "filter"}
            )
        selection = qdrant_filter(filter)
        with translated(name):
            # The server does not say how many it deleted. One operation at a time per
            # collection is the rule, so a count just before is the number deleted.
            matched = (await self._client.count(name, count_filter=selection, exact=True)).count
            if matched:
                await self._client.delete(
                    name, points_selector=models.FilterSelector(filter=selection), wait=True
                )
        return matched

    async def count(
        self, name: str, filter: PayloadFilter | None = None, exact: bool = True
    ) -> int:
        selection = qdrant_filter(filter)
        with translated(name):
            return (await self._client.count(name, count_filter=selection, exact=exact)).count

    async def search(
        self,
        name: str,
        vector: np.ndarray | Sequence[float],
        top_k: int,
        filter: PayloadFilter | None = None,
        score_threshold: float | None = None,
        with_payload: bool = True,
    ) -> list[ScoredPoint]:
        if top_k <= 0:
            raise InvalidVectorStoreArgument("top_k must be positive", metadata={"field": "top_k"})
        query = vector_list(vector)
        selection = qdrant_filter(filter)
        with translated(name):
            response = await self._client.query_points(
                name,
                query=query,
                limit=top_k,
                query_filter=selection,
                score_threshold=score_threshold,
                with_payload=with_payload,
                with_vectors=False,
            )
        return [ScoredPoint(str(hit.id), float(hit.score), hit.payload) for hit in response.points]

    async def scroll(
        self,
        name: str,
        filter: PayloadFilter | None = None,
        limit: int = 256,
        offset: str | None = None,
        with_vectors: bool = False,
    ) -> ScrollPage:
        if limit <= 0:
            raise InvalidVectorStoreArgument("limit must be positive", metadata={"field": "limit"})
        selection = qdrant_filter(filter)
        with translated(name):
            records, next_offset = await self._client.scroll(
                name,
                scroll_filter=selection,
                limit=limit,
                offset=offset,
                with_payload=True,
                with_vectors=with_vectors,
            )
        return scroll_page(records, next_offset, with_vectors)

    # -- aliases ----------------------------------------------------------------

    async def set_alias(self, alias: str, collection: str) -> None:
        validate_name(alias, what="alias")
        validate_name(collection, allow_system=True)
        with translated(collection):
            aliases = await self._alias_map()
            if collection in aliases:
                raise InvalidVectorStoreArgument(
                    f"alias target {collection!r} is itself an alias",
                    metadata={"field": "collection"},
                )
            names = await self._collection_names()
            if collection not in names:
                raise VectorCollectionNotFound(
                    f"no vector collection {collection!r}", metadata={"collection": collection}
                )
            if alias in names:
                raise VectorCollectionConflict(
                    f"{alias!r} is a collection, it cannot be an alias",
                    metadata={"collection": alias},
                )
            if aliases.get(alias) == collection:
                return
            # Delete and create in one request: the server applies them together, so
            # no call through the alias finds it missing or half-moved.
            await self._client.update_collection_aliases(
                change_aliases_operations=alias_operations(
                    alias, collection, replace=alias in aliases
                )
            )

    async def delete_alias(self, alias: str) -> bool:
        with translated(alias):
            if alias not in await self._alias_map():
                return False
            await self._client.update_collection_aliases(
                change_aliases_operations=alias_operations(alias, None, replace=True)
            )
        return True

    async def get_alias(self, alias: str) -> str | None:
        return (await self._alias_map()).get(alias)

    async def list_aliases(self) -> dict[str, str]:
        return await self._alias_map()

    async def resolve(self, name_or_alias: str) -> str:
        return (await self._alias_map()).get(name_or_alias, name_or_alias)

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> QdrantServerStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- internals --------------------------------------------------------------

    async def _create(self, name: str, config: CollectionConfig) -> bool:
        optimizers = None
        if self._indexing_threshold_kb is not None:
            optimizers = models.OptimizersConfigDiff(indexing_threshold=self._indexing_threshold_kb)
        try:
            return bool(
                await self._client.create_collection(
                    name,
                    vectors_config=vector_params(config),
                    quantization_config=quantization_config(config),
                    optimizers_config=optimizers,
                    metadata=config_metadata(config),
                    **self.placement.create_options(),
                )
            )
        except Exception as error:
            # Another creator won the race: the caller compares with what it made.
            if isinstance(translate(error, name), VectorCollectionConflict):
                return False
            raise

    async def _ensure_payload_indexes(self, name: str, info: models.CollectionInfo) -> None:
        present = info.payload_schema or {}
        for field_name, schema in PAYLOAD_INDEXES.items():
            if field_name not in present:
                await self._client.create_payload_index(
                    name, field_name, field_schema=schema, wait=True
                )

    async def _collection_names(self) -> set[str]:
        with translated("*"):
            response = await self._client.get_collections()
        return {description.name for description in response.collections}

    async def _alias_map(self) -> dict[str, str]:
        with translated("*"):
            response = await self._client.get_aliases()
        return {alias.alias_name: alias.collection_name for alias in response.aliases}
