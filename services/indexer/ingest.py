"""Ingest one directory source into a collection: the pipeline INDEX and APPEND run.

walk → hash → plan (new / changed / unchanged / removed / duplicates) → remove
what is gone → record what is unchanged → stream the documents to index through
``IngestPipeline`` (extract → chunk with the model's tokenizer → embed, batches
in flight → upsert their points → delete their stale chunks → record them).

Point ids are derived from (document_id, chunk_index), so a second run, or a
redelivered one, overwrites the same points and writes nothing twice. A
document's new version is written before its old extra chunks are deleted, so
it is never missing from search while it is re-indexed. A document that fails
is recorded with its reason and the run goes on.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from indexer.adapters.document_repository import (
    CollectionRecord,
    DocumentRepository,
    SourceRecord,
)
from indexer.adapters.tokenizers import tokenizer_for
from indexer.adapters.vector_store import Distance, VectorStore
from indexer.document_writer import DocumentInFlight, DocumentWriter
from indexer.domain.chunking import validate_chunking
from indexer.domain.documents import DocumentPlan, document_id, plan_documents
from indexer.domain.sources import SourceFile, iter_source_files
from indexer.ingest_progress import (
    DocumentFailure,
    IngestCancelled,
    IngestProgress,
    IngestResult,
    ProgressCallback,
    ProgressReporter,
)
from indexer.pipeline import (
    EMBEDDING_FAILED,
    UNREADABLE,
    EmbedFunction,
    IngestPipeline,
    IngestSettings,
    PipelineLimits,
    SourceDocument,
)
from indexer.upload_source import ObjectReader, UploadManifest, staged_windows
from kit.embedding_models import ModelRegistry, Quantization
from kit.errors import FieldViolation, InvalidArgument
from kit.source_paths import resolve_source

__all__ = [
    "EMBEDDING_FAILED",
    "UNREADABLE",
    "DocumentFailure",
    "EmbedFunction",
    "IngestCancelled",
    "IngestProgress",
    "IngestResult",
    "Ingestor",
    "ProgressCallback",
]

CancelCheck = asyncio.Event | Callable[[], bool]


class Ingestor:
    """Ingests directory sources. ``embed`` is the default embed step; a run may
    bring its own (the work queue's embedder is per operation)."""

    def __init__(
        self,
        repository: DocumentRepository,
        store: VectorStore,
        embed: EmbedFunction | None = None,
        *,
        batch_chunks: int = 64,
        in_flight: int = 8,
        progress_interval_seconds: float = 0.5,
        registry: ModelRegistry | None = None,
    ) -> None:
        if batch_chunks < 1 or in_flight < 1:
            raise ValueError("batch_chunks and in_flight must be positive")
        self._repository = repository
        self._store = store
        self._embed = embed
        self._limits = PipelineLimits(batch_chunks=batch_chunks, in_flight=in_flight)
        self._progress_interval = progress_interval_seconds
        self._registry = registry or ModelRegistry()

    async def ingest_directory(
        self,
        collection: CollectionRecord,
        source: SourceRecord,
        allowed_roots: Sequence[Path],
        operation_id: str,
        progress: ProgressCallback | None = None,
        *,
        cancelled: CancelCheck | None = None,
        embed: EmbedFunction | None = None,
    ) -> IngestResult:
        """Index the source's documents into the collection's physical collection.

        ``progress`` gets the figures at most every ``progress_interval_seconds`` and
        once at the end. ``cancelled`` (an event, or a callable) is checked between
        batches; once it is set the run stops and raises ``IngestCancelled``."""
        embed = embed or self._embed
        if embed is None:
            raise ValueError("no embed function: pass one to Ingestor or ingest_directory")
        # Everything that can refuse the run is checked before anything is written.
        settings = self._settings(collection)
        root = resolve_source(source.path, allowed_roots)
        is_cancelled = _cancel_check(cancelled)
        run, reporter = await self._begin(collection, source, settings, operation_id, progress)
        writer, figures = run.writer, run.figures

        scan = await asyncio.to_thread(_scan, root, source.include, source.exclude)
        previous = await self._repository.previous_hashes(run.cid, run.sid)
        others = await self._repository.collection_hashes(run.cid, exclude_source_id=run.sid)
        plan = plan_documents(previous, scan.digests, others)
        figures.documents_total = len(scan.digests) + len(scan.failures)
        if is_cancelled():
            raise IngestCancelled(run.result())

        run.removed = await self._remove(collection, source, plan)
        await writer.record_unchanged({path: scan.digests[path] for path in plan.unchanged})
        if scan.failures:
            await writer.write([run.failed(failure) for failure in scan.failures])
        await reporter.changed()

        pipeline = IngestPipeline(embed, writer, settings, reporter, self._limits, is_cancelled)
        completed = await pipeline.run(run.documents(plan, scan))
        await reporter.final()
        if not completed:
            raise IngestCancelled(run.result())
        return run.result()

    async def ingest_upload(
        self,
        collection: CollectionRecord,
        source: SourceRecord,
        manifest: UploadManifest,
        objects: ObjectReader,
        operation_id: str,
        progress: ProgressCallback | None = None,
        *,
        cancelled: CancelCheck | None = None,
        embed: EmbedFunction | None = None,
    ) -> IngestResult:
        """Index the documents of one upload: exactly the manifest's, each added or
        replacing the source's document of its path. The source's other documents
        stay: an upload appends, it does not sync. Unchanged documents are skipped
        by their hash without reading their objects; the others are staged from
        the bucket a window at a time and go through the same pipeline as a
        directory's files, with the same ids and per-document failures."""
        embed = embed or self._embed
        if embed is None:
            raise ValueError("no embed function: pass one to Ingestor or ingest_upload")
        settings = self._settings(collection)
        is_cancelled = _cancel_check(cancelled)
        run, reporter = await self._begin(collection, source, settings, operation_id, progress)
        digests = manifest.digests()
        indexed = await self._repository.previous_hashes(run.cid, run.sid)
        previous = {path: digest for path, digest in indexed.items() if path in digests}
        # Duplicates are counted against every document that keeps its content,
        # this source's others included; not against those this upload replaces.
        replaced = {run.doc_id(path) for path in digests}
        every = await self._repository.collection_hashes(run.cid)
        others = {digest: doc for digest, doc in every.items() if doc not in replaced}
        plan = plan_documents(previous, digests, others)  # nothing "removed": all in digests
        run.figures.documents_total = len(digests)
        if is_cancelled():
            raise IngestCancelled(run.result())
        media_types = {d.path: d.media_type for d in manifest.documents}
        unchanged = {path: digests[path] for path in plan.unchanged}
        await run.writer.record_unchanged(unchanged, media_types)
        await reporter.changed()

        pipeline = IngestPipeline(embed, run.writer, settings, reporter, self._limits, is_cancelled)
        scan = _Scan(
            Path(),
            digests=digests,
            sizes={d.path: d.size_bytes for d in manifest.documents},
            media_types=media_types,
        )
        with tempfile.TemporaryDirectory(prefix="vo-upload-") as folder:
            staging = staged_windows(manifest, plan.to_index, objects, Path(folder))
            async for window in staging:
                if window.failures:
                    await run.writer.write([run.failed(failure) for failure in window.failures])
                scan.links = {path: str(file) for path, file in window.files.items()}
                if not await pipeline.run(run.documents(plan, scan, list(window.files))):
                    await staging.aclose()
                    await reporter.final()
                    raise IngestCancelled(run.result())
        await reporter.final()
        return run.result()

    async def _begin(
        self,
        collection: CollectionRecord,
        source: SourceRecord,
        settings: IngestSettings,
        operation_id: str,
        progress: ProgressCallback | None,
    ) -> tuple[_Run, ProgressReporter]:
        """The physical collection (created if missing) and the run's writer."""
        await self._store.create_collection(
            collection.physical_collection,
            settings.dimension,
            Distance.COSINE,
            settings.quantization,
        )
        figures = IngestProgress()
        writer = DocumentWriter(
            self._repository,
            self._store,
            collection_id=collection.collection_id,
            source_id=source.source_id,
            physical_collection=collection.physical_collection,
            operation_id=operation_id,
            figures=figures,
        )
        reporter = ProgressReporter(figures, progress, self._progress_interval)
        return _Run(collection, source, writer, figures), reporter

    async def _remove(
        self, collection: CollectionRecord, source: SourceRecord, plan: DocumentPlan
    ) -> int:
        if not plan.removed:
            return 0
        cid, sid = collection.collection_id, source.source_id
        ids = [document_id(cid, sid, path) for path in plan.removed]
        await self._store.delete_points(collection.physical_collection, {"document_id": ids})
        return await self._repository.delete_documents(cid, sid, plan.removed)

    def _settings(self, collection: CollectionRecord) -> IngestSettings:
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
        return IngestSettings(
            model=spec.name,
            dimension=spec.dimension,
            quantization=quantization,
            instruction=instruction if isinstance(instruction, str) else None,
            chunk_size=size,
            chunk_overlap=overlap,
            tokenizer=tokenizer,
        )


@dataclass
class _Scan:
    """What the walk found, compact (one small entry per file: a source may hold
    very many): each file's hash, where to read it and its size, and what could
    not be read."""

    root: Path
    digests: dict[str, str] = field(default_factory=dict)  # path -> content hash
    sizes: dict[str, int] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # path -> the file a link resolves to
    failures: list[DocumentFailure] = field(default_factory=list)
    media_types: dict[str, str] = field(default_factory=dict)  # path -> declared (uploads)

    def absolute_path(self, path: str) -> Path:
        link = self.links.get(path)
        return Path(link) if link is not None else self.root / path


def _scan(root: Path, include: Sequence[str], exclude: Sequence[str]) -> _Scan:
    """Runs in a worker thread: the walk and the hashing are blocking I/O."""
    root = root.resolve()  # as the walk resolves it
    scan = _Scan(root)
    for entry in iter_source_files(root, include, exclude):
        if not isinstance(entry, SourceFile):
            scan.failures.append(DocumentFailure(entry.path, str(entry.reason), entry.detail))
            continue
        try:
            with entry.absolute_path.open("rb") as file:
                # The SHA-256 of content_hash, streamed: a large file is not held whole.
                digest = hashlib.file_digest(file, "sha256").hexdigest()
        except OSError as error:
            scan.failures.append(DocumentFailure(entry.path, UNREADABLE, error.strerror or ""))
            continue
        scan.digests[entry.path] = digest
        scan.sizes[entry.path] = entry.size
        if entry.absolute_path != root / entry.path:
            scan.links[entry.path] = str(entry.absolute_path)
    return scan


class _Run:
    """One run's ids and counters, and the documents it hands the pipeline."""

    def __init__(
        self,
        collection: CollectionRecord,
        source: SourceRecord,
        writer: DocumentWriter,
        figures: IngestProgress,
    ) -> None:
        self.cid, self.sid = collection.collection_id, source.source_id
        self.writer = writer
        self.figures = figures
        self.removed = 0

    def doc_id(self, path: str) -> str:
        return document_id(self.cid, self.sid, path)

    def failed(self, failure: DocumentFailure) -> DocumentInFlight:
        return DocumentInFlight(
            path=failure.path,
            document_id=self.doc_id(failure.path),
            digest="",
            size=0,
            failure=(failure.reason, failure.message),
        )

    def documents(
        self, plan: DocumentPlan, scan: _Scan, paths: Sequence[str] | None = None
    ) -> Iterator[SourceDocument]:
        """The documents to index (``paths`` of them, default all), made as the
        pipeline takes them."""
        duplicates = {d.path: d.duplicate_of for d in plan.duplicates}
        for path in plan.to_index if paths is None else paths:
            duplicate_of = duplicates.get(path)
            if duplicate_of is not None and duplicate_of in scan.digests:
                # plan_documents names an original of this source by its path, one of
                # another source by its document id; the row wants the id.
                duplicate_of = self.doc_id(duplicate_of)
            yield SourceDocument(
                path=path,
                absolute_path=scan.absolute_path(path),
                document_id=self.doc_id(path),
                size=scan.sizes[path],
                duplicate_of=duplicate_of,
                media_type=scan.media_types.get(path, ""),
            )

    def result(self) -> IngestResult:
        return IngestResult(
            **asdict(self.figures),
            documents_indexed=self.writer.indexed,
            documents_removed=self.removed,
            failures=tuple(self.writer.failures),
        )


def _cancel_check(cancelled: CancelCheck | None) -> Callable[[], bool]:
    if cancelled is None:
        return lambda: False
    if isinstance(cancelled, asyncio.Event):
        return cancelled.is_set
    return cancelled


def _invalid_config(field_name: str, why: str) -> InvalidArgument:
    return InvalidArgument(
        f"invalid collection config: {why}",
        reason="INVALID_CONFIG",
        field_violations=[FieldViolation(field_name, why)],
    )
