"""``EdgeVectorStore``: the ``VectorStore`` on Qdrant's engine embedded in-process.

Layout under ``data_dir``::

    collections/<name>/shard/            the EdgeShard (segments, WAL)
    collections/<name>/collection.json   our config record (dimension, distance, quantization)
    aliases.json                         {"aliases": {alias: collection}}

A collection directory appears only complete (built under ``.tmp-*`` and renamed) and
disappears at once (renamed to ``.trash-*`` before it is removed), so a crash never
leaves a half-made collection that looks real. The engine is synchronous: every call
runs in a worker thread. One process owns a data dir (the engine locks each WAL).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from indexer.adapters.edge_optimizer import optimize_in_child
from indexer.adapters.vector_store import (
    INDEXED_PAYLOAD_FIELDS,
    SYSTEM_PREFIX,
    CollectionConfig,
    CollectionInfo,
    CollectionStatus,
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
    collection_config_for,
    scroll_page,
    validate_name,
)
from kit.background import in_background

UPSERT_BATCH = 1024
_CONFIG_FILE = "collection.json"
_SHARD_DIR = "shard"
_ALIASES_FILE = "aliases.json"

_PAYLOAD_SCHEMAS = {
    str(kind).rsplit(".", 1)[-1].lower(): kind
    for kind in (
        qe.PayloadSchemaType.Keyword,
        qe.PayloadSchemaType.Integer,
        qe.PayloadSchemaType.Float,
        qe.PayloadSchemaType.Bool,
        qe.PayloadSchemaType.Uuid,
        qe.PayloadSchemaType.Datetime,
        qe.PayloadSchemaType.Text,
        qe.PayloadSchemaType.Geo,
    )
}

_DISTANCES = {
    Distance.COSINE: qe.Distance.Cosine,
    Distance.DOT: qe.Distance.Dot,
    Distance.EUCLID: qe.Distance.Euclid,
}


# Qdrant's defaults, but an index build leaves a CPU to the searches: the build of
# a reindex's staging collection runs while the live one serves (issue 5's bench).
_HNSW = qe.HnswIndexConfig(
    m=16,
    ef_construct=100,
    full_scan_threshold=10_000,
    max_indexing_threads=max(1, (os.cpu_count() or 1) - 1),
)


def _edge_config(config: CollectionConfig, indexing_threshold_kb: int | None) -> qe.EdgeConfig:
    datatype = qe.VectorStorageDatatype.Float32
    quantization = None
    if config.quantization is Quantization.FLOAT16:
        datatype = qe.VectorStorageDatatype.Float16
    elif config.quantization is Quantization.INT8:
        # int8 = scalar quantization over float32 originals (rescoring keeps the order
        # right), as a Qdrant server's ScalarQuantization would do.
        quantization = qe.ScalarQuantizationConfig(
            type=qe.ScalarType.Int8, quantile=0.99, always_ram=True
        )
    vectors = qe.EdgeVectorParams(
        size=config.dimension, distance=_DISTANCES[config.distance], datatype=datatype
    )
    optimizers = qe.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb)
    return qe.EdgeConfig(
        vectors=vectors,
        quantization_config=quantization,
        optimizers=optimizers,
        hnsw_config=_HNSW,
    )


def _edge_filter(filter: PayloadFilter | None) -> qe.Filter | None:
    if not filter:
        return None
    conditions = []
    for key, value in filter.items():
        if isinstance(value, (list, tuple)):
            match: Any = qe.MatchAny(list(value))
        elif isinstance(value, (str, int, bool)):
            match = qe.MatchValue(value)
        else:
            raise InvalidVectorStoreArgument(
                f"filter value for {key!r} must be str, int, bool or a list of them",
                metadata={"field": f"filter.{key}"},
            )
        conditions.append(qe.FieldCondition(key=key, match=match))
    return qe.Filter(must=conditions)


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Temp file + fsync + rename + fsync of the directory: readers and a restart see
    the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Collection:
    """An open shard plus the guards the engine does not give: writes are serialised
    (so count-then-delete is exact) and close waits for in-flight calls."""

    def __init__(self, name: str, shard: qe.EdgeShard, config: CollectionConfig) -> None:
        self.name = name
        self.shard = shard
        self.config = config
        self.write_lock = threading.Lock()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._exclusive = False
        self._closed = False

    @contextmanager
    def use(self) -> Iterator[qe.EdgeShard]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive or self._closed)
            if self._closed:
                raise VectorCollectionNotFound(f"vector collection {self.name!r} is gone")
            self._in_flight += 1
        try:
            yield self.shard
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Nothing else uses the shard inside: calls in flight finish first, new
        ones wait until it ends (so the shard may be closed and loaded again)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            if self._closed:
                raise VectorCollectionNotFound(f"vector collection {self.name!r} is gone")
            self._exclusive = True
            self._cond.wait_for(lambda: self._in_flight == 0)
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.wait_for(lambda: self._in_flight == 0)
        self.shard.close()


class EdgeVectorStore:
    """``VectorStore`` on ``qdrant_edge``; see the module docstring for the layout."""

    def __init__(self, data_dir: Path, *, indexing_threshold_kb: int | None = None) -> None:
        """``indexing_threshold_kb``: segment size above which ``optimize`` builds HNSW
        and quantized storage (None: the engine's default, 10 MB as on a server)."""
        self._root = Path(data_dir)
        self._indexing_threshold_kb = indexing_threshold_kb
        self._collections_dir = self._root / "collections"
        self._aliases_path = self._root / _ALIASES_FILE
        self._collections_dir.mkdir(parents=True, exist_ok=True)
        self._clear_leftovers()
        # Structural changes (open, create, delete, alias writes) take this lock;
        # searches only read the dicts below, whose values are swapped whole.
        self._lock = threading.RLock()
        self._open: dict[str, _Collection] = {}
        self._aliases: dict[str, str] = self._load_aliases()

    # -- collections ------------------------------------------------------------

    async def create_collection(
        self,
        name: str,
        dimension: int,
        distance: Distance = Distance.COSINE,
        quantization: Quantization = Quantization.FLOAT32,
        *,
        system: bool = False,
        indexing_threshold_kb: int | None = None,
    ) -> bool:
        """``indexing_threshold_kb``: this collection's, instead of the store's (a
        Qdrant server takes it per collection; ``vectorstore`` passes it on)."""
        config = collection_config_for(name, dimension, distance, quantization, system=system)
        threshold = (
            self._indexing_threshold_kb if indexing_threshold_kb is None else indexing_threshold_kb
        )
        return await asyncio.to_thread(self._create_sync, name, config, threshold)

    async def delete_collection(self, name: str, *, system: bool = False) -> bool:
        validate_name(name, allow_system=True)
        if name.startswith(SYSTEM_PREFIX) and not system:
            raise SystemCollectionProtected(
                f"{name!r} is a system collection", metadata={"collection": name}
            )
        return await asyncio.to_thread(self._delete_sync, name)

    async def collection_exists(self, name: str) -> bool:
        try:
            validate_name(name, allow_system=True)
        except InvalidVectorStoreArgument:
            return False  # no such name can exist, and it must not reach the filesystem
        return self._dir(name).is_dir()

    async def list_collections(self) -> list[str]:
        return sorted(
            entry.name
            for entry in self._collections_dir.iterdir()
            if entry.is_dir() and not entry.name.startswith(".")
        )

    async def collection_info(self, name: str) -> CollectionInfo:
        collection = await self._get(name)
        return await asyncio.to_thread(self._info_sync, collection)

    async def optimize(self, name: str) -> CollectionInfo:
        collection = await self._get(name)
        return await asyncio.to_thread(self._optimize_sync, collection)

    async def create_payload_index(self, name: str, field_name: str, kind: str) -> None:
        """Index payload ``field_name`` as ``kind`` (a ``qdrant_edge.PayloadSchemaType``
        name: keyword, integer, float, bool, uuid, datetime, text, geo)."""
        schema = _PAYLOAD_SCHEMAS.get(kind.lower())
        if schema is None:
            raise InvalidVectorStoreArgument(
                f"unknown payload index type {kind!r}", metadata={"field": "kind"}
            )
        collection = await self._get(name)
        operation = qe.UpdateOperation.create_field_index(field_name, schema)
        await asyncio.to_thread(self._write_sync, collection, operation)

    async def payload_schema(self, name: str) -> dict[str, tuple[str, int]]:
        """Indexed payload fields → (type in lower case, points indexed)."""
        collection = await self._get(name)
        info = await asyncio.to_thread(self._call, collection, lambda shard: shard.info())
        return {
            field_name: (str(index.data_type).rsplit(".", 1)[-1].lower(), int(index.points))
            for field_name, index in info.payload_schema.items()
        }

    # -- points -----------------------------------------------------------------

    async def upsert(self, name: str, points: Sequence[VectorPoint]) -> int:
        collection = await self._get(name)
        if not points:
            return 0
        return await in_background(self._upsert_sync, collection, points)

    async def delete_points(self, name: str, filter: PayloadFilter) -> int:
        if not filter:
            # An empty filter would match everything: deleting a collection's points
            # is delete_collection's job, never a missing argument's.
            raise InvalidVectorStoreArgument(
                "delete_points needs a non-empty filter", metadata={"field": "filter"}
            )
        collection = await self._get(name)
        return await asyncio.to_thread(self._delete_points_sync, collection, _edge_filter(filter))

    async def count(
        self, name: str, filter: PayloadFilter | None = None, exact: bool = True
    ) -> int:
        collection = await self._get(name)
        request = qe.CountRequest(exact=exact, filter=_edge_filter(filter))
        return await asyncio.to_thread(self._call, collection, lambda shard: shard.count(request))

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
        collection = await self._get(name)
        query = self._vector(collection.config, vector)
        request = qe.QueryRequest(
            limit=top_k,
            query=qe.Query.Nearest(query),
            filter=_edge_filter(filter),
            score_threshold=score_threshold,
            with_payload=with_payload,
            with_vector=False,
        )
        hits = await asyncio.to_thread(self._call, collection, lambda shard: shard.query(request))
        return [ScoredPoint(str(hit.id), float(hit.score), hit.payload) for hit in hits]

    async def scroll(
        self,
        name: str,
        filter: PayloadFilter | None = None,
        limit: int = 256,
        offset: str | None = None,
        with_vectors: bool = False,
    ) -> ScrollPage:
        collection = await self._get(name)
        request = qe.ScrollRequest(
            offset=offset,
            limit=limit,
            filter=_edge_filter(filter),
            with_payload=True,
            with_vector=with_vectors,
        )
        records, next_offset = await asyncio.to_thread(
            self._call, collection, lambda shard: shard.scroll(request)
        )
        return scroll_page(records, next_offset, with_vectors)

    # -- aliases ----------------------------------------------------------------

    async def set_alias(self, alias: str, collection: str) -> None:
        validate_name(alias, what="alias")
        validate_name(collection, allow_system=True)
        await asyncio.to_thread(self._set_alias_sync, alias, collection)

    async def delete_alias(self, alias: str) -> bool:
        return await asyncio.to_thread(self._delete_alias_sync, alias)

    async def get_alias(self, alias: str) -> str | None:
        return self._aliases.get(alias)

    async def list_aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    async def resolve(self, name_or_alias: str) -> str:
        return self._aliases.get(name_or_alias, name_or_alias)

    async def close(self) -> None:
        await asyncio.to_thread(self._close_sync)

    async def __aenter__(self) -> EdgeVectorStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- sync internals (run in worker threads) ---------------------------------

    def _dir(self, name: str) -> Path:
        return self._collections_dir / name

    async def _get(self, name_or_alias: str) -> _Collection:
        # Resolve once, here: the whole call then uses one collection even if the
        # alias moves meanwhile, which is what makes a move atomic to a reader.
        name = self._aliases.get(name_or_alias, name_or_alias)
        collection = self._open.get(name)
        if collection is not None:
            return collection
        validate_name(name, allow_system=True)
        return await asyncio.to_thread(self._open_sync, name)

    def _open_sync(self, name: str) -> _Collection:
        with self._lock:
            collection = self._open.get(name)
            if collection is not None:
                return collection
            folder = self._dir(name)
            if not folder.is_dir():
                raise VectorCollectionNotFound(
                    f"no vector collection {name!r}", metadata={"collection": name}
                )
            config = CollectionConfig.from_dict(
                json.loads((folder / _CONFIG_FILE).read_text(encoding="utf-8"))
            )
            shard = qe.EdgeShard.load(str(folder / _SHARD_DIR))
            collection = _Collection(name, shard, config)
            self._open = {**self._open, name: collection}
            return collection

    def _create_sync(
        self, name: str, config: CollectionConfig, indexing_threshold_kb: int | None
    ) -> bool:
        with self._lock:
            if name in self._aliases:
                raise VectorCollectionConflict(
                    f"{name!r} is an alias", metadata={"collection": name}
                )
            folder = self._dir(name)
            if folder.is_dir():
                existing = self._open_sync(name).config
                if existing != config:
                    raise VectorCollectionConflict(
                        f"vector collection {name!r} exists with {existing.to_dict()}, "
                        f"not {config.to_dict()}",
                        metadata={"collection": name},
                    )
                return False
            staging = self._collections_dir / f".tmp-{name}-{uuid.uuid4().hex}"
            try:
                self._build_sync(staging, config, indexing_threshold_kb)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            os.rename(staging, folder)
            _fsync_dir(self._collections_dir)
            self._open_sync(name)
            return True

    def _build_sync(
        self, staging: Path, config: CollectionConfig, indexing_threshold_kb: int | None
    ) -> None:
        shard = qe.EdgeShard.create(
            str(staging / _SHARD_DIR), _edge_config(config, indexing_threshold_kb)
        )
        try:
            for field_name in INDEXED_PAYLOAD_FIELDS:
                shard.update(
                    qe.UpdateOperation.create_field_index(field_name, qe.PayloadSchemaType.Keyword)
                )
            shard.flush()
        finally:
            shard.close()
        _write_json_atomically(staging / _CONFIG_FILE, config.to_dict())

    def _delete_sync(self, name: str) -> bool:
        with self._lock:
            folder = self._dir(name)
            if not folder.is_dir():
                return False
            # Aliases go first (as a Qdrant server drops them with the collection): a
            # crash after this leaves an orphan collection, never a dangling alias.
            remaining = {a: c for a, c in self._aliases.items() if c != name}
            if len(remaining) != len(self._aliases):
                self._save_aliases(remaining)
            collection = self._open.get(name)
            self._open = {n: c for n, c in self._open.items() if n != name}
            trash = self._collections_dir / f".trash-{name}-{uuid.uuid4().hex}"
            os.rename(folder, trash)
            _fsync_dir(self._collections_dir)
        if collection is not None:
            collection.close()  # waits for in-flight calls on it
        shutil.rmtree(trash, ignore_errors=True)
        return True

    @staticmethod
    def _call(collection: _Collection, fn: Any) -> Any:
        with collection.use() as shard:
            return fn(shard)

    def _upsert_sync(self, collection: _Collection, points: Sequence[VectorPoint]) -> int:
        # Converting the points is CPU work: here, off the event loop, it is preempted
        # for searches; on the loop a large group would hold every search back.
        edge_points = [self._edge_point(collection.config, point) for point in points]
        with collection.use() as shard, collection.write_lock:
            for start in range(0, len(edge_points), UPSERT_BATCH):
                batch = edge_points[start : start + UPSERT_BATCH]
                shard.update(qe.UpdateOperation.upsert_points(batch))
        return len(edge_points)

    @staticmethod
    def _write_sync(collection: _Collection, operation: qe.UpdateOperation) -> None:
        with collection.use() as shard, collection.write_lock:
            shard.update(operation)

    def _delete_points_sync(self, collection: _Collection, edge_filter: qe.Filter) -> int:
        with collection.use() as shard, collection.write_lock:
            # The engine does not say how many it deleted; writes are serialised by
            # write_lock, so an exact count just before is the number deleted.
            matched = shard.count(qe.CountRequest(exact=True, filter=edge_filter))
            if matched:
                shard.update(qe.UpdateOperation.delete_points_by_filter(edge_filter))
        return matched

    def _info_sync(self, collection: _Collection) -> CollectionInfo:
        with collection.use() as shard:
            info = shard.info()
        return CollectionInfo(
            name=collection.name,
            # An optimisation holds the collection exclusively (calls wait for its
            # end), so whoever can ask sees a collection with nothing planned.
            status=CollectionStatus.GREEN,
            points_count=info.points_count,
            indexed_vectors_count=info.indexed_vectors_count,
            segments_count=info.segments_count,
            config=collection.config,
            payload_indexes=tuple(sorted(info.payload_schema)),
        )

    def _optimize_sync(self, collection: _Collection) -> CollectionInfo:
        # In a child process: the engine holds the GIL while it optimises, which
        # here would stall every search for as long as an HNSW build takes.
        shard_dir = self._dir(collection.name) / _SHARD_DIR
        # No write_lock: every writer holds it inside use(), which exclusive() waits
        # out; taking it first would deadlock with a writer already in use().
        with collection.exclusive():
            collection.shard.close()
            try:
                optimize_in_child(shard_dir)  # returns once nothing more is planned
            finally:
                collection.shard = qe.EdgeShard.load(str(shard_dir))
        return self._info_sync(collection)

    def _set_alias_sync(self, alias: str, target: str) -> None:
        with self._lock:
            if target in self._aliases:
                raise InvalidVectorStoreArgument(
                    f"alias target {target!r} is itself an alias", metadata={"field": "collection"}
                )
            if not self._dir(target).is_dir():
                raise VectorCollectionNotFound(
                    f"no vector collection {target!r}", metadata={"collection": target}
                )
            if self._dir(alias).is_dir():
                raise VectorCollectionConflict(
                    f"{alias!r} is a collection, it cannot be an alias",
                    metadata={"collection": alias},
                )
            if self._aliases.get(alias) == target:
                return
            self._open_sync(target)  # warm, so the first search after the move is fast
            self._save_aliases({**self._aliases, alias: target})

    def _delete_alias_sync(self, alias: str) -> bool:
        with self._lock:
            if alias not in self._aliases:
                return False
            self._save_aliases({a: c for a, c in self._aliases.items() if a != alias})
            return True

    def _save_aliases(self, aliases: dict[str, str]) -> None:
        # Disk first: if the write fails, memory still agrees with disk. Then one
        # reference swap, which readers see whole.
        _write_json_atomically(self._aliases_path, {"aliases": aliases})
        self._aliases = aliases

    def _load_aliases(self) -> dict[str, str]:
        if not self._aliases_path.exists():
            return {}
        data = json.loads(self._aliases_path.read_text(encoding="utf-8"))
        return {str(a): str(c) for a, c in data.get("aliases", {}).items()}

    def _clear_leftovers(self) -> None:
        """Half-built (``.tmp-``) and half-deleted (``.trash-``) dirs of a crash."""
        for entry in self._collections_dir.iterdir():
            if entry.name.startswith((".tmp-", ".trash-")):
                shutil.rmtree(entry, ignore_errors=True)

    def _close_sync(self) -> None:
        with self._lock:
            collections, self._open = list(self._open.values()), {}
        for collection in collections:
            collection.close()

    @staticmethod
    def _vector(config: CollectionConfig, vector: np.ndarray | Sequence[float]) -> list[float]:
        array = np.asarray(vector, dtype=np.float32)
        if array.ndim != 1 or array.shape[0] != config.dimension:
            raise InvalidVectorStoreArgument(
                f"vector has shape {array.shape}, the collection takes ({config.dimension},)",
                metadata={"field": "vector", "expected": str(config.dimension)},
            )
        return array.tolist()

    def _edge_point(self, config: CollectionConfig, point: VectorPoint) -> qe.Point:
        try:
            point_id = str(uuid.UUID(point.id))
        except (ValueError, TypeError, AttributeError):
            raise InvalidVectorStoreArgument(
                f"point id {point.id!r} is not a UUID", metadata={"field": "id"}
            ) from None
        return qe.Point(point_id, self._vector(config, point.vector), point.payload)
