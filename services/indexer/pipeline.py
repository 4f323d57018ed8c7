"""The streaming part of an ingest: prepare → embed → write, the three overlapped.

- prepare: read, hash, extract and chunk documents in a worker thread (CPU-bound
  work off the event loop), a group of small documents per hop, into a bounded
  queue;
- embed: the chunks of consecutive documents packed into batches of
  ``batch_chunks`` (spanning documents, so small files still fill a batch), up to
  ``in_flight`` batches out at once, and no more than ``chunks_per_second`` chunks
  a second when that is set (a REINDEX, beside the searches of a live collection);
- write: a document whose every chunk has its result goes to the writer, which
  writes whatever has finished meanwhile as one group (``DocumentWriter``).

Memory is bounded by the queues, the batches in flight and the writer's group,
not by the size of the source: documents stream through. A batch that has
finished holds its slot until its documents are handed on, so a slow writer
slows the embedding instead of piling up vectors.

Cancellation is checked before each batch is sent and between prepared groups;
once seen, no batch is sent, the batches out are abandoned, the documents
already embedded in full are still written (so every document counted is
written and recorded) and ``run`` returns False.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from indexer.document_writer import DocumentInFlight, DocumentWriter
from indexer.domain.chunking import Tokenizer, chunk
from indexer.domain.documents import content_hash
from indexer.domain.pacing import Pacer
from indexer.extraction import ExtractionError, ExtractionFailure, extract
from indexer.ingest_progress import ProgressReporter
from kit.background import in_background
from kit.embedding_models import Quantization

EMBEDDING_FAILED = "EMBEDDING_FAILED"
UNREADABLE = "UNREADABLE"

# One worker-thread hop prepares up to this many documents or bytes: a hop costs
# about as much as chunking a small document, so small ones travel together.
_PREPARE_GROUP_DOCUMENTS = 16
_PREPARE_GROUP_BYTES = 1 << 20
_WRITE_GROUP_POINTS = 512  # the most points the writer takes at once


class EmbedFunction(Protocol):
    """Vectors for ``texts`` in order; a string in a position is that text's failure
    reason. Production: the embed work queue (``indexer.embed_queue``); tests: the
    Embedder directly. Called concurrently, up to ``in_flight`` calls at once.
    ``token_ids`` (per text, the model's ids of it without special tokens, or empty)
    is passed only when the chunks have ids, so the embedder need not tokenize the
    texts again; a text-only function need not take it."""

    async def __call__(
        self,
        model: str,
        texts: list[str],
        *,
        instruction: str | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[np.ndarray | str]: ...


@dataclass(frozen=True)
class IngestSettings:
    """How a collection's documents become vectors (from its config)."""

    model: str
    dimension: int
    quantization: Quantization
    instruction: str | None
    chunk_size: int
    chunk_overlap: int
    tokenizer: Tokenizer


@dataclass(frozen=True)
class SourceDocument:
    """A document to index, as the walk found it."""

    path: str  # relative to the source root, posix
    absolute_path: Path
    document_id: str
    size: int
    duplicate_of: str | None = None  # the document id of an earlier one with this content
    media_type: str = ""  # declared (uploads); "" means the path's extension says


@dataclass(frozen=True)
class PipelineLimits:
    batch_chunks: int = 64
    in_flight: int = 8
    window_documents: int = 64  # prepared documents waiting for their batch
    chunks_per_second: float | None = None  # None or 0: as fast as the embedder answers


def _groups(documents: Iterable[SourceDocument]) -> Iterator[list[SourceDocument]]:
    group: list[SourceDocument] = []
    size = 0
    for document in documents:
        group.append(document)
        size += document.size
        if len(group) >= _PREPARE_GROUP_DOCUMENTS or size >= _PREPARE_GROUP_BYTES:
            yield group
            group, size = [], 0
    if group:
        yield group


def _prepare(source: SourceDocument, settings: IngestSettings) -> DocumentInFlight:
    """Runs in a worker thread: extraction and tokenizing are CPU-bound."""
    try:
        data = source.absolute_path.read_bytes()
    except OSError as error:
        return _failed(source, "", source.size, UNREADABLE, error.strerror or str(error))
    # Hashed again as read now: the record must describe the content indexed.
    digest = content_hash(data)
    try:
        document = extract(data, source.path, source.media_type)
    except ExtractionError as error:
        return _failed(source, digest, len(data), str(error.reason), error.message)
    chunks = chunk(
        document.sections, settings.tokenizer, settings.chunk_size, settings.chunk_overlap
    )
    if not chunks:
        why = "the document has no tokens to index"
        return _failed(source, digest, len(data), ExtractionFailure.EMPTY_DOCUMENT, why)
    return DocumentInFlight(
        path=source.path,
        document_id=source.document_id,
        digest=digest,
        size=len(data),
        chunks=chunks,
        duplicate_of=source.duplicate_of,
        media_type=str(document.media_type),
    )


def _failed(
    source: SourceDocument, digest: str, size: int, reason: str, message: str
) -> DocumentInFlight:
    return DocumentInFlight(
        path=source.path,
        document_id=source.document_id,
        digest=digest,
        size=size,
        failure=(str(reason), message),
        media_type=source.media_type,
    )


def _prepare_group(
    group: Sequence[SourceDocument], settings: IngestSettings
) -> list[DocumentInFlight]:
    return [_prepare(source, settings) for source in group]


class IngestPipeline:
    def __init__(
        self,
        embed: EmbedFunction,
        writer: DocumentWriter,
        settings: IngestSettings,
        reporter: ProgressReporter,
        limits: PipelineLimits,
        cancelled: Callable[[], bool],
    ) -> None:
        self._embed = embed
        self._writer = writer
        self._settings = settings
        self._reporter = reporter
        self._limits = limits
        self._cancelled = cancelled
        self._prepared_all = False  # every document went through preparation

    async def run(self, documents: Iterable[SourceDocument]) -> bool:
        """Index ``documents``; False when cancellation stopped the run early."""
        window = self._limits.window_documents
        prepared: asyncio.Queue[DocumentInFlight | None] = asyncio.Queue(window)
        finished: asyncio.Queue[DocumentInFlight | None] = asyncio.Queue(window)
        self._prepared_all = False
        # The writer is outside the task group: when embedding fails, the group
        # cancels its tasks, but a group of documents half written (points without
        # their records) would be left behind; the writer finishes what is queued.
        writing = asyncio.create_task(self._write_all(finished))
        end_sent = False
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(_fail_with(writing))
                preparing = tasks.create_task(self._prepare_all(documents, prepared))
                completed = await self._embed_all(prepared, finished, tasks)
                preparing.cancel()  # stopped early, it may wait on a full queue
                end_sent = True
                await finished.put(None)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        finally:
            if not writing.done():
                if not end_sent:
                    await finished.put(None)
                await asyncio.wait({writing})
                if not writing.cancelled():
                    writing.exception()  # retrieved: the error that stopped the run is raised
        return completed and self._prepared_all

    async def _prepare_all(
        self, documents: Iterable[SourceDocument], prepared: asyncio.Queue
    ) -> None:
        for group in _groups(documents):
            if self._cancelled():
                break
            for document in await in_background(_prepare_group, group, self._settings):
                await prepared.put(document)
        else:
            self._prepared_all = True
        await prepared.put(None)

    async def _embed_all(
        self,
        prepared: asyncio.Queue[DocumentInFlight | None],
        finished: asyncio.Queue[DocumentInFlight | None],
        tasks: asyncio.TaskGroup,
    ) -> bool:
        """Batch the prepared documents' chunks and send the batches; True once every
        batch has its result, False when cancelled first."""
        slots = asyncio.Semaphore(self._limits.in_flight)
        pacer = Pacer(self._limits.chunks_per_second)
        running: set[asyncio.Task[None]] = set()
        batch: list[tuple[DocumentInFlight, int]] = []

        async def send() -> bool:
            nonlocal batch
            await slots.acquire()
            if delay := pacer.delay_for(len(batch)):
                await asyncio.sleep(delay)
            if self._cancelled():
                slots.release()
                return False
            task = tasks.create_task(self._embed_batch(batch, finished, slots))
            running.add(task)
            task.add_done_callback(running.discard)
            batch = []
            return True

        while (document := await prepared.get()) is not None:
            if document.failure is not None:
                await finished.put(document)
                continue
            for position in range(len(document.chunks)):
                batch.append((document, position))
                if len(batch) >= self._limits.batch_chunks and not await send():
                    return await _abandon(running)
        if batch and not await send():
            return await _abandon(running)
        while running:
            await asyncio.wait(set(running))
        return True

    async def _embed_batch(
        self,
        batch: list[tuple[DocumentInFlight, int]],
        finished: asyncio.Queue[DocumentInFlight | None],
        slots: asyncio.Semaphore,
    ) -> None:
        try:
            chunks = [document.chunks[position] for document, position in batch]
            texts = [piece.text for piece in chunks]
            settings = self._settings
            if any(piece.token_ids for piece in chunks):
                ids = [piece.token_ids or () for piece in chunks]
                results = await self._embed(
                    settings.model, texts, instruction=settings.instruction, token_ids=ids
                )
            else:
                results = await self._embed(settings.model, texts, instruction=settings.instruction)
            if len(results) != len(batch):
                raise RuntimeError(f"embedder returned {len(results)} results for {len(batch)}")
            ready: list[DocumentInFlight] = []
            for (document, position), result in zip(batch, results, strict=True):
                _apply(document, position, result, settings.dimension)
                document.remaining -= 1
                if document.remaining == 0:
                    ready.append(document)
            for document in ready:
                await finished.put(document)
        finally:
            slots.release()  # only now: a slow writer holds the embedding back

    async def _write_all(self, finished: asyncio.Queue[DocumentInFlight | None]) -> None:
        """Write what has finished, a group at a time: the more the writer lags, the
        larger its groups and the fewer its round trips."""
        ended = False
        while not ended:
            document = await finished.get()
            if document is None:
                break
            group, points = [document], len(document.chunks)
            while points < _WRITE_GROUP_POINTS and not finished.empty():
                more = finished.get_nowait()
                if more is None:
                    ended = True
                    break
                group.append(more)
                points += len(more.chunks)
            await self._writer.write(group)
            await self._reporter.changed()


def _apply(document: DocumentInFlight, position: int, result: np.ndarray | str, dim: int) -> None:
    if isinstance(result, str):
        document.fail(EMBEDDING_FAILED, result)
        return
    vector = np.asarray(result, dtype=np.float32)
    if vector.shape != (dim,):
        document.fail(EMBEDDING_FAILED, f"vector of shape {vector.shape}, expected ({dim},)")
        return
    document.vectors[position] = vector


async def _fail_with(writing: asyncio.Task[None]) -> None:
    """Raise the writer's error into the task group, so embedding stops with it; the
    shield keeps the group's own cancellation from reaching the writer."""
    await asyncio.shield(writing)


async def _abandon(running: set[asyncio.Task[None]]) -> bool:
    """Cancelled: the batches out are not waited for; their documents are dropped
    unwritten (a later run indexes them)."""
    for task in running:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*running, return_exceptions=True)
    return False


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error that stopped the run, out of its TaskGroup wrapping."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
