"""Reprocessing, the third checkpoint of a REINDEX: every live document of a
collection re-read from its source, re-extracted, re-chunked with the target
config's model tokenizer, re-embedded with the target model and written into
the staging collection, while the live collection keeps serving.

It is the ingest pipeline pointed elsewhere: the same ``IngestPipeline`` and
``DocumentWriter`` (so points carry the same ids, ``point_id(document_id,
chunk_index)``, and the same payloads as ingest writes), but writing into the
staging collection and recording each document's outcome for this operation
(``ReprocessedDocuments``), never in the live rows. A document that cannot be
re-read or embedded is recorded failed with its reason; the run goes on.

Resuming: documents already recorded for the operation are skipped. A document
that was being written when the run died is not recorded, so it is written
again over its own point ids, and its stale chunks (if its source changed
meanwhile) are deleted: each chunk is in staging once.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.adapters.document_repository import (
    DocumentRecord,
    DocumentRepository,
    DocumentStatus,
    SourceRecord,
)
from indexer.adapters.reindex_repository import ReindexRepository
from indexer.adapters.tokenizers import tokenizer_for
from indexer.adapters.vector_store import VectorStore
from indexer.document_writer import DocumentInFlight, DocumentWriter
from indexer.domain.chunking import validate_chunking
from indexer.ingest_progress import IngestProgress, ProgressReporter
from indexer.pipeline import (
    UNREADABLE,
    EmbedFunction,
    IngestPipeline,
    IngestSettings,
    PipelineLimits,
    SourceDocument,
)
from indexer.upload_source import ManifestDocument, ObjectReader, UploadManifest, staged_windows
from kit.background import in_background
from kit.bus.object_store import upload_object_name
from kit.embedding_models import ModelRegistry, Quantization
from kit.errors import DomainError, FieldViolation, InvalidArgument
from kit.source_paths import resolve_source, within

SOURCE_UNREADABLE = "SOURCE_UNREADABLE"
INVALID_SOURCE_PATH = "INVALID_SOURCE_PATH"
LIVE_STATUSES = (
    DocumentStatus.INDEXED,
    DocumentStatus.SKIPPED_UNCHANGED,
    DocumentStatus.DUPLICATE,
)
_PAGE = 1000


def _invalid_config(
    field: str, why: str, reason: str = "INVALID_CONFIG", **metadata: str
) -> InvalidArgument:
    return InvalidArgument(
        f"invalid target config: {why}",
        reason=reason,
        metadata={"field": field, **metadata},
        field_violations=[FieldViolation(field, why)],
    )


def staging_settings(config: Mapping[str, Any], registry: ModelRegistry) -> IngestSettings:
    """How documents become vectors under the target config, checked: the model
    is known (else NOT_FOUND ``UNKNOWN_MODEL``), the dimension is the model's
    (``DIMENSION_MISMATCH``), the quantization is one the model takes and the
    chunking fits its tokenizer (``INVALID_CONFIG``)."""
    spec = registry.get(str(config.get("embedding_model") or ""))
    dimension = config.get("dimension") or spec.dimension
    if dimension != spec.dimension:
        raise _invalid_config(
            "dimension",
            f"{spec.name} has dimension {spec.dimension}, not {dimension}",
            reason="DIMENSION_MISMATCH",
            model=spec.name,
            expected=str(spec.dimension),
            actual=str(dimension),
        )
    raw = str(config.get("quantization") or "float32").lower().removeprefix("quantization_")
    try:
        quantization = Quantization(raw)
    except ValueError:
        raise _invalid_config("quantization", f"unknown quantization {raw!r}") from None
    if quantization not in spec.quantizations:
        raise _invalid_config("quantization", f"{spec.name} does not store {quantization}")
    size, overlap = config.get("chunk_size"), config.get("chunk_overlap", 0)
    if not isinstance(size, int) or not isinstance(overlap, int):
        raise _invalid_config("chunk_size", "chunk_size and chunk_overlap must be integers")
    tokenizer = tokenizer_for(spec.name, registry)
    validate_chunking(size, overlap, tokenizer.max_chunk_tokens)
    instruction = config.get("instruction")
    return IngestSettings(
        model=spec.name,
        dimension=spec.dimension,
        quantization=quantization,
        instruction=instruction if isinstance(instruction, str) else None,
        chunk_size=size,
        chunk_overlap=overlap,
        tokenizer=tokenizer,
    )


@dataclass(frozen=True)
class StagingTarget:
    """Where and how one operation reprocesses a collection."""

    operation_id: str
    collection_id: str
    staging_collection: str
    settings: IngestSettings


class Reprocessor:
    """Writes the live documents of a collection into its staging collection."""

    def __init__(
        self,
        runs: ReindexRepository,
        store: VectorStore,
        embed: EmbedFunction,
        target: StagingTarget,
        figures: IngestProgress,
        reporter: ProgressReporter,
        limits: PipelineLimits,
        cancelled: Callable[[], bool],
        *,
        source_roots: Sequence[Path],
        uploads: ObjectReader | None,
    ) -> None:
        self._runs = runs
        self._store = store
        self._embed = embed
        self._target = target
        self._figures = figures  # what the writers count; the reporter reports it
        self._reporter = reporter
        self._limits = limits
        self._cancelled = cancelled
        self._roots = source_roots
        self._uploads = uploads

    async def run(
        self, documents: Sequence[DocumentRecord], sources: Mapping[str, SourceRecord]
    ) -> bool:
        """Reprocess ``documents`` (grouped by source); False when cancelled first."""
        by_source: dict[str, list[DocumentRecord]] = {}
        for document in documents:
            by_source.setdefault(document.source_id, []).append(document)
        for source_id, group in by_source.items():
            if self._cancelled():
                return False
            writer = self._writer(source_id)
            source = sources.get(source_id)
            if source is None:
                await _fail_all(writer, group, SOURCE_UNREADABLE, "the source is not known here")
                completed = True
            elif source.kind == "upload":
                completed = await self._upload(source, group, writer)
            else:
                completed = await self._directory(source, group, writer)
            await self._reporter.changed()
            if not completed:
                return False
        return True

    def _writer(self, source_id: str) -> DocumentWriter:
        target = self._target
        return DocumentWriter(
            self._runs.results_of(target.operation_id),
            self._store,
            collection_id=target.collection_id,
            source_id=source_id,
            physical_collection=target.staging_collection,
            operation_id=target.operation_id,
            figures=self._figures,
        )

    def _pipeline(self, writer: DocumentWriter) -> IngestPipeline:
        return IngestPipeline(
            self._embed,
            writer,
            self._target.settings,
            self._reporter,
            self._limits,
            self._cancelled,
        )

    async def _directory(
        self, source: SourceRecord, group: Sequence[DocumentRecord], writer: DocumentWriter
    ) -> bool:
        """Read each document from the source root again, confined to the allowed
        roots as a scan is: a root gone or moved out fails its documents."""
        try:
            root = resolve_source(source.path, self._roots, field="source.path")
        except DomainError as error:
            await _fail_all(writer, group, INVALID_SOURCE_PATH, error.message)
            return True
        # Resolving thousands of paths is a syscall per path component: off the loop.
        documents, escaped = await in_background(_confined, group, root)
        if escaped:
            await _fail_all(writer, escaped, INVALID_SOURCE_PATH, "resolves outside its source")
        return await self._pipeline(writer).run(documents)

    async def _upload(
        self, source: SourceRecord, group: Sequence[DocumentRecord], writer: DocumentWriter
    ) -> bool:
        """Read each document back from the upload bucket, by the content hash it
        was indexed with, a window at a time (as an APPEND of an upload does)."""
        bucket = self._uploads
        if bucket is None:
            await _fail_all(writer, group, SOURCE_UNREADABLE, "this indexer reads no upload bucket")
            return True
        manifest = UploadManifest(
            bucket=bucket.name,
            documents=tuple(_manifest_document(record, source) for record in group),
        )
        by_path = {record.path: record for record in group}
        pipeline = self._pipeline(writer)
        with tempfile.TemporaryDirectory(prefix="vo-reindex-") as folder:
            windows = staged_windows(manifest, list(by_path), bucket, Path(folder))
            async for window in windows:
                if window.failures:
                    failed = [
                        _failed(by_path[failure.path], failure.reason, failure.message)
                        for failure in window.failures
                    ]
                    await writer.write(failed)
                documents = [
                    _source_document(by_path[path], file) for path, file in window.files.items()
                ]
                if not await pipeline.run(documents):
                    await windows.aclose()
                    return False
        return True


async def live_documents(
    repository: DocumentRepository, collection_id: str
) -> list[DocumentRecord]:
    """Every document of the collection whose points are live, by (source, path)."""
    found: list[DocumentRecord] = []
    token = ""
    while True:
        page, token = await repository.list_documents(
            collection_id, _PAGE, token, statuses=LIVE_STATUSES
        )
        found += page
        if not token:
            return found


def _confined(
    group: Sequence[DocumentRecord], root: Path
) -> tuple[list[SourceDocument], list[DocumentRecord]]:
    """The documents whose path resolves within ``root``, and those it escapes."""
    documents: list[SourceDocument] = []
    escaped: list[DocumentRecord] = []
    for record in group:
        path = (root / record.path).resolve()
        if within(path, root):
            documents.append(_source_document(record, path))
        else:
            escaped.append(record)
    return documents, escaped


def _source_document(record: DocumentRecord, path: Path) -> SourceDocument:
    return SourceDocument(
        path=record.path,
        absolute_path=path,
        document_id=record.document_id,
        size=record.bytes,
        duplicate_of=record.duplicate_of,
        media_type=record.media_type,
    )


def _manifest_document(record: DocumentRecord, source: SourceRecord) -> ManifestDocument:
    return ManifestDocument(
        path=record.path,
        media_type=record.media_type,
        size_bytes=record.bytes,
        sha256=record.content_hash,
        object_name=upload_object_name(record.collection_id, source.source_id, record.content_hash),
    )


def _failed(record: DocumentRecord, reason: str, message: str) -> DocumentInFlight:
    return DocumentInFlight(
        path=record.path,
        document_id=record.document_id,
        digest=record.content_hash,
        size=record.bytes,
        failure=(reason or UNREADABLE, message),
    )


async def _fail_all(
    writer: DocumentWriter, records: Iterable[DocumentRecord], reason: str, message: str
) -> None:
    await writer.write([_failed(record, reason, message) for record in records])
