"""Ingest one directory source into a collection: the pipeline INDEX and APPEND run.

walk → hash → plan (new / changed / unchanged / removed / duplicates) → for each
document to index: extract → chunk with the model's tokenizer → embed in batches
of ``batch_chunks`` chunks (spanning documents, so small files still fill a
batch) → upsert its points → delete its stale chunks → record it.

Point ids are derived from (document_id, chunk_index), so a second run, or a
redelivered one, overwrites the same points and writes nothing twice. A
document's new version is written before its old extra chunks are deleted, so
it is never missing from search while it is re-indexed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from indexer.adapters.document_repository import (
    CollectionRecord,
    DocumentRecord,
    DocumentRepository,
    DocumentStatus,
    SourceRecord,
)
from indexer.adapters.tokenizers import tokenizer_for
from indexer.adapters.vector_store import Distance, VectorPoint, VectorStore
from indexer.domain.chunking import Chunk, Tokenizer, chunk, validate_chunking
from indexer.domain.documents import (
    DocumentPlan,
    content_hash,
    document_id,
    media_type_for,
    plan_documents,
    point_id,
)
from indexer.domain.sources import SourceFile, iter_source_files
from indexer.extraction import ExtractionError, ExtractionFailure, extract
from kit.embedding_models import ModelRegistry, Quantization
from kit.errors import FieldViolation, InvalidArgument
from kit.source_paths import resolve_source

EMBEDDING_FAILED = "EMBEDDING_FAILED"
UNREADABLE = "UNREADABLE"
_UPSERT_BATCH = 256  # points per store call: bounded request size for a server store


class EmbedFunction(Protocol):
    """Vectors for ``texts`` in order; a string in a position is that text's failure
    reason. Production: the embed work queue; tests: the Embedder directly."""

    async def __call__(
        self, model: str, texts: list[str], *, instruction: str | None = None
    ) -> list[np.ndarray | str]: ...


@dataclass
class IngestProgress:
    documents_total: int = 0
    documents_done: int = 0  # indexed, failed and skipped alike: done / total is the percent
    documents_failed: int = 0
    documents_skipped: int = 0  # unchanged since the last run
    documents_duplicate: int = 0
    vectors_written: int = 0


class DocumentFailure(NamedTuple):
    path: str
    reason: str
    message: str


@dataclass
class IngestResult(IngestProgress):
    documents_indexed: int = 0
    documents_removed: int = 0
    failures: tuple[DocumentFailure, ...] = ()


ProgressCallback = Callable[[IngestProgress], Awaitable[None]]


@dataclass(frozen=True)
class _Settings:
    model: str
    dimension: int
    quantization: Quantization
    instruction: str | None
    chunk_size: int
    chunk_overlap: int
    tokenizer: Tokenizer


@dataclass
class _Pending:
    """A document whose chunks are (being) embedded."""

    path: str
    document_id: str
    digest: str
    size: int
    chunks: list[Chunk]
    duplicate_of: str | None
    vectors: list[np.ndarray | None] = field(default_factory=list)
    failure: str | None = None
    embedded: int = 0


class Ingestor:
    def __init__(
        self,
        repository: DocumentRepository,
        store: VectorStore,
        embed: EmbedFunction,
        *,
        batch_chunks: int = 64,
        registry: ModelRegistry | None = None,
    ) -> None:
        if batch_chunks < 1:
            raise ValueError("batch_chunks must be positive")
        self._repository = repository
        self._store = store
        self._embed = embed
        self._batch_chunks = batch_chunks
        self._registry = registry or ModelRegistry()

    async def ingest_directory(
        self,
        collection: CollectionRecord,
        source: SourceRecord,
        allowed_roots: Sequence[Path],
        operation_id: str,
        progress: ProgressCallback | None = None,
    ) -> IngestResult:
        # Everything that can refuse the run is checked before anything is written.
        settings = self._settings(collection)
        root = resolve_source(source.path, allowed_roots)
        run = _Run(self, collection, source, settings, operation_id, progress)
        await self._store.create_collection(
            collection.physical_collection,
            settings.dimension,
            Distance.COSINE,
            settings.quantization,
        )
        return await run.execute(root)

    def _settings(self, collection: CollectionRecord) -> _Settings:
        config = collection.config
        model = str(config.get("embedding_model") or "")
        spec = self._registry.get(model)  # NOT_FOUND / UNKNOWN_MODEL
        tokenizer = tokenizer_for(spec.name, self._registry)
        size, overlap = config.get("chunk_size"), config.get("chunk_overlap", 0)
        if not isinstance(size, int) or not isinstance(overlap, int):
            raise _invalid_config("chunk_size", "chunk_size and chunk_overlap must be integers")
        validate_chunking(size, overlap, tokenizer.max_chunk_tokens)
        dimension = config.get("dimension") or spec.dimension
        if dimension != spec.dimension:
            raise _invalid_config("dimension", f"{spec.name} has dimension {spec.dimension}")
        raw = str(config.get("quantization") or "float32").lower()
        try:
            quantization = Quantization(raw.removeprefix("quantization_"))
        except ValueError:
            raise _invalid_config("quantization", f"unknown quantization {raw!r}") from None
        instruction = config.get("instruction")
        return _Settings(
            model=spec.name,
            dimension=spec.dimension,
            quantization=quantization,
            instruction=instruction if isinstance(instruction, str) else None,
            chunk_size=size,
            chunk_overlap=overlap,
            tokenizer=tokenizer,
        )


def _invalid_config(field_name: str, why: str) -> InvalidArgument:
    return InvalidArgument(
        f"invalid collection config: {why}",
        reason="INVALID_CONFIG",
        field_violations=[FieldViolation(field_name, why)],
    )


def _read_and_hash(path: Path) -> str:
    return content_hash(path.read_bytes())


def _read_and_chunk(path: Path, rel: str, settings: _Settings) -> tuple[bytes, list[Chunk]]:
    """Runs in a worker thread: extraction and tokenizing are CPU-bound."""
    data = path.read_bytes()
    document = extract(data, rel)
    chunks = chunk(
        document.sections, settings.tokenizer, settings.chunk_size, settings.chunk_overlap
    )
    return data, chunks


class _Run:
    """One ingest: its counters and the documents awaiting their vectors."""

    def __init__(
        self,
        ingestor: Ingestor,
        collection: CollectionRecord,
        source: SourceRecord,
        settings: _Settings,
        operation_id: str,
        progress: ProgressCallback | None,
    ) -> None:
        self._repo = ingestor._repository
        self._store = ingestor._store
        self._embed = ingestor._embed
        self._batch_chunks = ingestor._batch_chunks
        self._collection = collection
        self._source = source
        self._cid, self._sid = collection.collection_id, source.source_id
        self._settings = settings
        self._operation_id = operation_id
        self._progress = progress
        self._queue: list[tuple[_Pending, int]] = []  # (document, chunk position) to embed
        self._waiting: list[_Pending] = []  # documents in order, not yet finished
        self.figures = IngestProgress()
        self.indexed = self.removed = 0
        self.failures: list[DocumentFailure] = []
        self._current: dict[str, str] = {}  # path -> content hash, found by the walk

    def _doc_id(self, path: str) -> str:
        return document_id(self._cid, self._sid, path)

    async def execute(self, root: Path) -> IngestResult:
        files: dict[str, SourceFile] = {}
        current = self._current
        walk_failures: list[DocumentFailure] = []
        for entry in iter_source_files(root, self._source.include, self._source.exclude):
            if not isinstance(entry, SourceFile):
                walk_failures.append(DocumentFailure(entry.path, str(entry.reason), entry.detail))
                continue
            try:
                digest = await asyncio.to_thread(_read_and_hash, entry.absolute_path)
            except OSError as error:
                walk_failures.append(DocumentFailure(entry.path, UNREADABLE, error.strerror or ""))
                continue
            files[entry.path] = entry
            current[entry.path] = digest

        previous = await self._repo.previous_hashes(self._cid, self._sid)
        others = await self._repo.collection_hashes(self._cid, exclude_source_id=self._sid)
        plan = plan_documents(previous, current, others)
        self.figures.documents_total = len(current) + len(walk_failures)

        await self._remove(plan)
        await self._skip_unchanged(plan, current)
        for failure in walk_failures:
            await self._record_failure(failure.path, "", 0, failure.reason, failure.message)

        duplicates = {d.path: d.duplicate_of for d in plan.duplicates}
        for path in plan.to_index:
            await self._prepare(files[path], current[path], duplicates.get(path))
            while len(self._queue) >= self._batch_chunks:
                await self._embed_batch()
        while self._queue:
            await self._embed_batch()
        await self._finish_ready()
        return IngestResult(
            **asdict(self.figures),
            documents_indexed=self.indexed,
            documents_removed=self.removed,
            failures=tuple(self.failures),
        )

    async def _report(self) -> None:
        if self._progress is not None:
            await self._progress(replace(self.figures))  # a copy: the run goes on

    async def _remove(self, plan: DocumentPlan) -> None:
        if not plan.removed:
            return
        ids = [self._doc_id(path) for path in plan.removed]
        await self._store.delete_points(self._collection.physical_collection, {"document_id": ids})
        self.removed = await self._repo.delete_documents(self._cid, self._sid, plan.removed)

    async def _skip_unchanged(self, plan: DocumentPlan, current: dict[str, str]) -> None:
        # One batch, one progress report: a large unchanged source costs one round trip.
        if not plan.unchanged:
            return
        await self._repo.record_documents(
            [
                self._record(path, current[path], 0, DocumentStatus.SKIPPED_UNCHANGED)
                for path in plan.unchanged
            ]
        )
        self.figures.documents_skipped += len(plan.unchanged)
        self.figures.documents_done += len(plan.unchanged)
        await self._report()

    async def _prepare(self, file: SourceFile, digest: str, duplicate_of: str | None) -> None:
        try:
            data, chunks = await asyncio.to_thread(
                _read_and_chunk, file.absolute_path, file.path, self._settings
            )
        except ExtractionError as error:
            await self._fail(file.path, digest, file.size, str(error.reason), error.message)
            return
        except OSError as error:
            await self._fail(file.path, digest, file.size, UNREADABLE, error.strerror or "")
            return
        if not chunks:
            why = "the document has no tokens to index"
            await self._fail(file.path, digest, len(data), ExtractionFailure.EMPTY_DOCUMENT, why)
            return
        if duplicate_of is not None and duplicate_of in self._current:
            # plan_documents names an original of this source by its path, one of
            # another source by its document id; the row wants the id.
            duplicate_of = self._doc_id(duplicate_of)
        pending = _Pending(
            path=file.path,
            document_id=self._doc_id(file.path),
            # Hashed again as read now: the record must describe the content indexed.
            digest=content_hash(data),
            size=len(data),
            chunks=chunks,
            duplicate_of=duplicate_of,
            vectors=[None] * len(chunks),
        )
        self._waiting.append(pending)
        self._queue.extend((pending, position) for position in range(len(chunks)))

    async def _embed_batch(self) -> None:
        batch, self._queue = self._queue[: self._batch_chunks], self._queue[self._batch_chunks :]
        texts = [pending.chunks[position].text for pending, position in batch]
        results = await self._embed(
            self._settings.model, texts, instruction=self._settings.instruction
        )
        if len(results) != len(batch):
            raise RuntimeError(f"embedder returned {len(results)} results for {len(batch)} texts")
        for (pending, position), result in zip(batch, results, strict=True):
            pending.embedded += 1
            if isinstance(result, str):
                pending.failure = pending.failure or result
                continue
            vector = np.asarray(result, dtype=np.float32)
            if vector.shape != (self._settings.dimension,):
                pending.failure = pending.failure or f"vector of shape {vector.shape}"
                continue
            pending.vectors[position] = vector
        await self._finish_ready()

    async def _finish_ready(self) -> None:
        # In document order: the queue is FIFO, so the head completes first.
        while self._waiting and self._waiting[0].embedded == len(self._waiting[0].chunks):
            pending = self._waiting.pop(0)
            if pending.failure is not None:
                await self._fail(
                    pending.path, pending.digest, pending.size, EMBEDDING_FAILED, pending.failure
                )
            else:
                await self._write(pending)

    async def _write(self, pending: _Pending) -> None:
        name = self._collection.physical_collection
        points = [
            VectorPoint(
                id=point_id(pending.document_id, piece.index),
                vector=vector,
                payload={
                    "collection_id": self._cid,
                    "source_id": self._sid,
                    "document_id": pending.document_id,
                    "chunk_index": piece.index,
                    "text": piece.text,
                    "page": piece.page,
                    "path": pending.path,
                    "content_hash": pending.digest,
                },
            )
            for piece, vector in zip(pending.chunks, pending.vectors, strict=True)
            if vector is not None
        ]
        for start in range(0, len(points), _UPSERT_BATCH):
            await self._store.upsert(name, points[start : start + _UPSERT_BATCH])
        await self._delete_stale(pending.document_id, len(points))
        status = DocumentStatus.INDEXED
        if pending.duplicate_of is not None:
            status = DocumentStatus.DUPLICATE
            self.figures.documents_duplicate += 1
        record = replace(
            self._record(pending.path, pending.digest, pending.size, status),
            chunk_count=len(points),
            vector_count=len(points),
            duplicate_of=pending.duplicate_of,
        )
        await self._repo.record_documents([record])
        self.indexed += 1
        self.figures.vectors_written += len(points)
        self.figures.documents_done += 1
        await self._report()

    async def _delete_stale(self, doc_id: str, keep: int) -> None:
        """Delete the document's points with chunk_index >= ``keep`` (a changed
        document that got shorter, or leftovers of an interrupted run)."""
        name = self._collection.physical_collection
        if await self._store.count(name, {"document_id": doc_id}) <= keep:
            return  # the common case: one count, no scroll
        stale: list[int] = []
        offset: str | None = None
        while True:
            page = await self._store.scroll(name, {"document_id": doc_id}, 512, offset)
            stale += [
                index
                for point in page.points
                if isinstance(index := (point.payload or {}).get("chunk_index"), int)
                and index >= keep
            ]
            if page.next_offset is None:
                break
            offset = page.next_offset
        if stale:
            await self._store.delete_points(name, {"document_id": doc_id, "chunk_index": stale})

    async def _fail(self, path: str, digest: str, size: int, reason: str, message: str) -> None:
        # A failed document has no points: earlier versions go too, so the store
        # holds exactly what the live records count.
        await self._store.delete_points(
            self._collection.physical_collection, {"document_id": self._doc_id(path)}
        )
        await self._record_failure(path, digest, size, reason, message)

    async def _record_failure(
        self, path: str, digest: str, size: int, reason: str, message: str
    ) -> None:
        record = replace(
            self._record(path, digest, size, DocumentStatus.FAILED),
            failure_reason=str(reason),
            failure_message=message[:1000],
        )
        await self._repo.record_documents([record])
        self.failures.append(DocumentFailure(path, str(reason), message))
        self.figures.documents_failed += 1
        self.figures.documents_done += 1
        await self._report()

    def _record(self, path: str, digest: str, size: int, status: DocumentStatus) -> DocumentRecord:
        return DocumentRecord(
            document_id=self._doc_id(path),
            collection_id=self._cid,
            source_id=self._sid,
            path=path,
            content_hash=digest,
            status=status,
            media_type=str(media_type_for(path) or ""),
            bytes=size,
            last_operation_id=self._operation_id,
        )
