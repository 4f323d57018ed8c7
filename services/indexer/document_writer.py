"""Writes the outcome of documents, a group at a time: their points, the removal of
their stale chunks, and their records.

A group costs a few round trips whatever its size: points are upserted in
batches, stale chunks are looked for with one count over the whole group, failed
documents lose their points in one delete, and every record goes to Postgres in
one transaction. The order within a group keeps the pipeline's guarantees: a
document's new points are written before its stale chunks are deleted (it never
disappears from search while it is re-indexed), and its record is written last,
so a record never counts points that are not there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from indexer import metrics
from indexer.adapters.document_repository import DocumentRecord, DocumentStatus
from indexer.adapters.vector_store import VectorPoint, VectorStore
from indexer.domain.chunking import Chunk
from indexer.domain.documents import document_id, media_type_for, point_id
from indexer.ingest_progress import DocumentFailure, IngestProgress
from kit.background import in_background

UPSERT_BATCH = 256  # points per store call: bounded request size for a server store
_SCROLL_PAGE = 512


@dataclass(eq=False)
class DocumentInFlight:
    """A document between extraction and its record: its chunks, the vectors
    received so far, and the first failure (reason, message) if any."""

    path: str
    document_id: str
    digest: str
    size: int
    chunks: list[Chunk] = field(default_factory=list)
    duplicate_of: str | None = None  # a document id
    failure: tuple[str, str] | None = None
    vectors: list[np.ndarray | None] = field(default_factory=list)
    media_type: str = ""  # as read, or as an upload declared it; "" means the path's
    remaining: int = 0  # chunks still waiting for their result

    def __post_init__(self) -> None:
        if not self.vectors:
            self.vectors = [None] * len(self.chunks)
            self.remaining = len(self.chunks)

    def fail(self, reason: str, message: str) -> None:
        if self.failure is None:  # the first reason is the one reported
            self.failure = (reason, message)


class DocumentRecorder(Protocol):
    """Where the records go: the live rows (``DocumentRepository``), or a
    reindex's own for the staging copy (``ReprocessedDocuments``)."""

    async def record_documents(
        self, batch: Sequence[DocumentRecord], *, processed: tuple[str, str] | None = None
    ) -> bool: ...


class DocumentWriter:
    """The documents of one (collection, source) in one physical collection,
    for one operation. Updates ``figures`` as documents are recorded."""

    def __init__(
        self,
        repository: DocumentRecorder,
        store: VectorStore,
        *,
        collection_id: str,
        source_id: str,
        physical_collection: str,
        operation_id: str,
        figures: IngestProgress,
    ) -> None:
        self._repo = repository
        self._store = store
        self._cid = collection_id
        self._sid = source_id
        self._name = physical_collection
        self._operation_id = operation_id
        self.figures = figures
        self.indexed = 0
        self.failures: list[DocumentFailure] = []

    async def write(self, documents: Sequence[DocumentInFlight]) -> None:
        """Write a group of finished documents (each embedded in full, or failed)."""
        done = [d for d in documents if d.failure is None]
        failed = [d for d in documents if d.failure is not None]
        # Building a group's points is CPU work: in a thread it is preempted for
        # searches; on the event loop it would hold them back for its whole length.
        points = await in_background(
            lambda: [point for document in done for point in self._points(document)]
        )
        for start in range(0, len(points), UPSERT_BATCH):
            await self._store.upsert(self._name, points[start : start + UPSERT_BATCH])
        await self._delete_stale(done)
        if failed:
            # A failed document has no points: earlier versions go too, so the store
            # holds exactly what the live records count.
            ids = [d.document_id for d in failed]
            await self._store.delete_points(self._name, {"document_id": ids})
        await self._repo.record_documents(
            [self._indexed_record(d) for d in done] + [self._failed_record(d) for d in failed]
        )
        for document in done:
            self.indexed += 1
            self.figures.documents_duplicate += int(document.duplicate_of is not None)
            self.figures.vectors_written += len(document.chunks)
            self.figures.bytes_written += document.size
        for document in failed:
            reason, message = document.failure or ("", "")
            self.failures.append(DocumentFailure(document.path, reason, message))
        self.figures.documents_failed += len(failed)
        self.figures.documents_done += len(documents)
        metrics.DOCUMENTS.labels("indexed").inc(len(done))
        metrics.DOCUMENTS.labels("failed").inc(len(failed))
        metrics.VECTORS_WRITTEN.inc(len(points))

    async def record_unchanged(
        self, digests: Mapping[str, str], media_types: Mapping[str, str] | None = None
    ) -> None:
        """path -> hash of documents skipped as unchanged: one batch, their points
        stay. ``media_types``: path -> a declared type (uploads)."""
        if not digests:
            return
        declared = media_types or {}
        await self._repo.record_documents(
            [
                self._record(
                    path, digest, 0, DocumentStatus.SKIPPED_UNCHANGED, declared.get(path, "")
                )
                for path, digest in digests.items()
            ]
        )
        self.figures.documents_skipped += len(digests)
        self.figures.documents_done += len(digests)
        metrics.DOCUMENTS.labels("skipped").inc(len(digests))

    def _points(self, document: DocumentInFlight) -> Iterable[VectorPoint]:
        for piece, vector in zip(document.chunks, document.vectors, strict=True):
            assert vector is not None  # a document without failure has every vector
            yield VectorPoint(
                id=point_id(document.document_id, piece.index),
                vector=vector,
                payload={
                    "collection_id": self._cid,
                    "source_id": self._sid,
                    "document_id": document.document_id,
                    "chunk_index": piece.index,
                    "text": piece.text,
                    "page": piece.page,
                    "path": document.path,
                    "content_hash": document.digest,
                },
            )

    async def _delete_stale(self, documents: Sequence[DocumentInFlight]) -> None:
        """Delete each document's points with chunk_index >= its chunk count (a changed
        document that got shorter, or leftovers of an interrupted run). One count
        for the group settles the common case: nothing stale."""
        if not documents:
            return
        ids = [d.document_id for d in documents]
        kept = sum(len(d.chunks) for d in documents)
        if await self._store.count(self._name, {"document_id": ids}) <= kept:
            return
        for document in documents:
            await self._delete_stale_of(document.document_id, len(document.chunks))

    async def _delete_stale_of(self, doc_id: str, keep: int) -> None:
        if await self._store.count(self._name, {"document_id": doc_id}) <= keep:
            return
        stale: list[int] = []
        offset: str | None = None
        while True:
            page = await self._store.scroll(
                self._name, {"document_id": doc_id}, _SCROLL_PAGE, offset
            )
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
            await self._store.delete_points(
                self._name, {"document_id": doc_id, "chunk_index": stale}
            )

    def _indexed_record(self, document: DocumentInFlight) -> DocumentRecord:
        status = DocumentStatus.INDEXED
        if document.duplicate_of is not None:
            status = DocumentStatus.DUPLICATE
        return replace(
            self._record(
                document.path, document.digest, document.size, status, document.media_type
            ),
            chunk_count=len(document.chunks),
            vector_count=len(document.chunks),
            duplicate_of=document.duplicate_of,
        )

    def _failed_record(self, document: DocumentInFlight) -> DocumentRecord:
        reason, message = document.failure or ("", "")
        return replace(
            self._record(
                document.path,
                document.digest,
                document.size,
                DocumentStatus.FAILED,
                document.media_type,
            ),
            failure_reason=reason,
            failure_message=message[:1000],
        )

    def _record(
        self, path: str, digest: str, size: int, status: DocumentStatus, media_type: str = ""
    ) -> DocumentRecord:
        return DocumentRecord(
            document_id=self._doc_id(path),
            collection_id=self._cid,
            source_id=self._sid,
            path=path,
            content_hash=digest,
            status=status,
            media_type=media_type or str(media_type_for(path) or ""),
            bytes=size,
            last_operation_id=self._operation_id,
        )

    def _doc_id(self, path: str) -> str:
        return document_id(self._cid, self._sid, path)
