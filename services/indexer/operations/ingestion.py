"""The steps of INDEX (``create_collection``, ``ingest``, ``finalize``) and APPEND
(``scan``, ``ingest``, ``finalize``).

Everything that can refuse the operation (the model, every source path, the
document limit) is checked before its first write. ``ingest`` runs the ingest
pipeline over each directory source of the command in turn, or, for an APPEND
of uploaded documents, over exactly the documents of its manifest; point ids are
derived from (document, chunk), so a redelivered command overwrites what an
interrupted run wrote and unchanged documents are skipped by their hash.
``finalize`` points the alias at the physical collection: only then does the
collection serve searches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import asdict
from pathlib import Path

from indexer.adapters.document_repository import SourceRecord
from indexer.adapters.vector_store import Distance
from indexer.domain.operation_plan import OperationType
from indexer.domain.sources import iter_source_files
from indexer.ingest import (
    IngestCancelled,
    Ingestor,
    IngestProgress,
    IngestResult,
    ProgressCallback,
)
from indexer.operations.base import StepContext, StepOutput, collection_figures
from indexer.upload_source import ObjectReader, UploadManifest
from kit.embedding_models import Quantization
from kit.errors import (
    DomainError,
    FieldViolation,
    InvalidArgument,
    NotImplementedYet,
    ResourceExhausted,
)
from kit.source_paths import resolve_source
from vectorops.events.v1 import operation_events_pb2

INGEST_KEYS = (
    "documents_done",
    "documents_failed",
    "documents_skipped",
    "documents_duplicate",
    "vectors_written",
    "bytes_written",
)


def _directory_sources(ctx: StepContext) -> list[SourceRecord]:
    if ctx.order.upload is not None or any(s.kind != "directory" for s in ctx.order.sources):
        raise InvalidArgument(
            "an upload source is only appended, with the manifest of its upload",
            reason="INVALID_ARGUMENT",
            metadata={"field": "sources"},
        )
    return list(ctx.order.sources)


def _upload(ctx: StepContext) -> tuple[SourceRecord, UploadManifest] | None:
    """An APPEND of uploaded documents: its source and manifest (None for a
    directory's). The documents are read from the bucket the manifest names,
    which must be the one this indexer reads."""
    order = ctx.order
    if order.type is not OperationType.APPEND or order.upload is None:
        return None
    [source] = order.sources
    if source.kind != "upload":
        raise InvalidArgument(
            "an upload manifest came with a directory source",
            reason="INVALID_ARGUMENT",
            metadata={"field": "source"},
        )
    return source, order.upload


def _bucket(ctx: StepContext, manifest: UploadManifest) -> ObjectReader:
    bucket = ctx.services.uploads
    if bucket is None:
        raise NotImplementedYet(
            "this indexer reads no upload bucket",
            reason="NOT_IMPLEMENTED",
            metadata={"method": "AppendCommand.upload"},
        )
    if manifest.bucket != bucket.name:
        raise DomainError(
            f"the upload is in bucket {manifest.bucket!r}; this indexer reads {bucket.name!r}",
            reason="SOURCE_UNREADABLE",
        )
    return bucket


def _check_document_limit(ctx: StepContext, found: int) -> None:
    limit = ctx.order.max_documents
    if limit and found > limit:
        raise ResourceExhausted(
            f"the sources hold {found} documents, more than the {limit} this operation may index",
            reason="QUOTA_EXCEEDED",
            metadata={"owner_id": ctx.order.owner_id, "limit": "documents"},
        )


def _count_files(root: Path, source: SourceRecord) -> int:
    """Files the walk finds (to index or reported skipped): the documents of the source."""
    return sum(1 for _ in iter_source_files(root, source.include, source.exclude))


async def _checked_sources(ctx: StepContext, *, count: bool) -> int:
    """Resolve every source inside the allowed roots; refuse the lot if one
    escapes, or if their documents exceed the command's limit. Returns the
    documents found (walked only when ``count`` or a limit asks for it; 0 else)."""
    roots = ctx.services.source_roots
    limit = ctx.order.max_documents
    found = 0
    for source in _directory_sources(ctx):
        root = resolve_source(source.path, roots, field=f"sources[{source.source_id}].path")
        if count or limit:
            found += await asyncio.to_thread(_count_files, root, source)
    _check_document_limit(ctx, found)
    return found


async def create_collection(ctx: StepContext) -> StepOutput:
    collection = ctx.order.collection
    config = collection.config
    model = ctx.services.registry.get(str(config.get("embedding_model") or ""))
    dimension = int(config.get("dimension") or model.dimension)
    if dimension != model.dimension:
        raise InvalidArgument(
            f"{model.name} has dimension {model.dimension}, not {dimension}",
            reason="DIMENSION_MISMATCH",
            metadata={"model": model.name, "expected": str(model.dimension)},
        )
    quantization = _quantization(config.get("quantization"))
    ctx.figures.documents_total = await _checked_sources(ctx, count=False)
    for source in ctx.order.sources:
        await ctx.services.repository.add_source(source)
    await ctx.services.store.create_collection(
        collection.physical_collection, dimension, Distance.COSINE, quantization
    )
    return StepOutput(
        {"physical_collection": collection.physical_collection, "dimension": dimension}
    )


def _quantization(raw: object) -> Quantization:
    text = str(raw or "float32").lower().removeprefix("quantization_")
    try:
        return Quantization(text)
    except ValueError:
        why = f"unknown quantization {raw!r}"
        raise InvalidArgument(
            f"invalid collection config: {why}",
            reason="INVALID_CONFIG",
            field_violations=[FieldViolation("quantization", why)],
        ) from None


async def scan(ctx: StepContext) -> StepOutput:
    upload = _upload(ctx)
    if upload is not None:
        source, manifest = upload
        _bucket(ctx, manifest)
        found = len(manifest.documents)
        _check_document_limit(ctx, found)
        await ctx.services.repository.add_source(source)
        ctx.figures.documents_total = found
        return StepOutput({"source_id": source.source_id, "documents_found": found})
    [source] = _directory_sources(ctx)
    found = await _checked_sources(ctx, count=True)
    await ctx.services.repository.add_source(source)
    ctx.figures.documents_total = found
    return StepOutput({"source_id": source.source_id, "documents_found": found})


async def ingest(ctx: StepContext) -> StepOutput:
    order, services = ctx.order, ctx.services
    totals = IngestProgress()
    async with services.embed_for(order.operation_id, order.collection_id) as embed:
        ingestor = Ingestor(
            services.repository,
            services.store,
            embed,
            batch_chunks=services.embed_batch_chunks,
            in_flight=services.embed_in_flight,
            progress_interval_seconds=services.progress_interval_seconds,
            registry=services.registry,
        )
        upload = _upload(ctx)

        def run(source: SourceRecord, progress: ProgressCallback) -> Awaitable[IngestResult]:
            if upload is not None:
                manifest = upload[1]
                bucket = _bucket(ctx, manifest)
                return ingestor.ingest_upload(
                    order.collection,
                    source,
                    manifest,
                    bucket,
                    order.operation_id,
                    progress,
                    cancelled=ctx.cancel,
                )
            return ingestor.ingest_directory(
                order.collection,
                source,
                services.source_roots,
                order.operation_id,
                progress,
                cancelled=ctx.cancel,
            )

        sources = [upload[0]] if upload is not None else _directory_sources(ctx)
        for source in sources:
            done_before = IngestProgress(**asdict(totals))

            async def progress(report: IngestProgress, base: IngestProgress = done_before) -> None:
                _show(ctx, _sum(base, report))
                await ctx.report()

            try:
                result = await run(source, progress)
            except IngestCancelled as stopped:
                _show(ctx, _sum(done_before, stopped.result))
                ctx.check_cancelled()
                raise
            totals = _sum(done_before, result)
            _show(ctx, totals)
            ctx.check_cancelled()
    figures = {key: getattr(totals, key) for key in INGEST_KEYS}
    return StepOutput(figures, operation_events_pb2.IngestResult(**figures))


def _sum(base: IngestProgress, more: IngestProgress) -> IngestProgress:
    return IngestProgress(
        **{name: getattr(base, name) + getattr(more, name) for name in asdict(base)}
    )


def _show(ctx: StepContext, figures: IngestProgress) -> None:
    shown = ctx.figures
    shown.documents_total = max(shown.documents_total, figures.documents_total)
    shown.documents_done = figures.documents_done
    shown.documents_failed = figures.documents_failed
    shown.documents_skipped = figures.documents_skipped
    shown.documents_duplicate = figures.documents_duplicate
    shown.vectors_written = shown.vectors = figures.vectors_written
    shown.bytes = figures.bytes_written
    shown.step_fraction = figures.documents_done / max(figures.documents_total, 1)


async def finalize(ctx: StepContext) -> StepOutput:
    collection = ctx.order.collection
    # Idempotent: pointing the alias where it already points changes nothing.
    await ctx.services.store.set_alias(collection.alias_name, collection.physical_collection)
    figures = await collection_figures(ctx)
    return StepOutput({**figures, "alias": collection.alias_name})


INDEX_STEPS: Sequence = (
    ("create_collection", create_collection),
    ("ingest", ingest),
    ("finalize", finalize),
)
APPEND_STEPS: Sequence = (("scan", scan), ("ingest", ingest), ("finalize", finalize))
