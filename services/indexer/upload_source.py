"""Uploaded documents as a source of the ingest pipeline: the ``UploadManifest``
of an APPEND command, read from the object store.

Where a directory source is walked and hashed, an upload is its manifest: the
paths, media types, sizes and SHA-256 the orchestrator checked as the bytes
came in. The ingest plans from those hashes (an unchanged document is skipped
without reading its object), then stages the documents to index into a
temporary folder a window at a time, and hands the pipeline the staged files as
it would a directory's. An object that cannot be read (expired, missing, other
bytes than its name says) fails its document, not the operation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from indexer.ingest_progress import DocumentFailure
from indexer.pipeline import UNREADABLE
from kit.bus.object_store import ObjectUnreadable
from vectorops.events.v1 import commands_pb2

# A window: staged on disk at once, then indexed before the next is fetched,
# so the temporary folder never holds much more than this.
WINDOW_DOCUMENTS = 64
WINDOW_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ManifestDocument:
    path: str
    media_type: str
    size_bytes: int
    sha256: str
    object_name: str


@dataclass(frozen=True)
class UploadManifest:
    bucket: str
    documents: tuple[ManifestDocument, ...] = ()

    def digests(self) -> dict[str, str]:
        """path -> SHA-256 (``current`` of ``plan_documents``)."""
        return {document.path: document.sha256 for document in self.documents}

    def by_path(self) -> dict[str, ManifestDocument]:
        return {document.path: document for document in self.documents}


def manifest_of(message: commands_pb2.UploadManifest) -> UploadManifest:
    return UploadManifest(
        bucket=message.bucket,
        documents=tuple(
            ManifestDocument(
                path=document.path,
                media_type=document.media_type,
                size_bytes=document.size_bytes,
                sha256=document.sha256,
                object_name=document.object_name,
            )
            for document in message.documents
        ),
    )


class ObjectReader(Protocol):
    """The bucket the objects are read from (``kit.bus.object_store.ObjectBucket``)."""

    name: str

    async def fetch_into(self, name: str, writer: BinaryIO, *, size: int, sha256: str) -> None:
        """Write the object to ``writer``; ``ObjectUnreadable`` if it is not there
        with those bytes."""
        ...


@dataclass
class StagedWindow:
    """Documents of one window on disk (path -> staged file, in the window's
    order), and those whose object could not be read."""

    files: dict[str, Path] = field(default_factory=dict)
    failures: list[DocumentFailure] = field(default_factory=list)


def _windows(
    paths: Sequence[str], documents: dict[str, ManifestDocument], max_documents: int, max_bytes: int
) -> Iterator[list[str]]:
    window: list[str] = []
    size = 0
    for path in paths:
        window.append(path)
        size += documents[path].size_bytes
        if len(window) >= max_documents or size >= max_bytes:
            yield window
            window, size = [], 0
    if window:
        yield window


async def staged_windows(
    manifest: UploadManifest,
    paths: Sequence[str],
    objects: ObjectReader,
    folder: Path,
    *,
    max_documents: int = WINDOW_DOCUMENTS,
    max_bytes: int = WINDOW_BYTES,
) -> AsyncIterator[StagedWindow]:
    """The documents ``paths`` of ``manifest``, staged under ``folder`` a window
    at a time; a window's files are deleted when the next one is asked for."""
    documents = manifest.by_path()
    staged = 0
    for window in _windows(paths, documents, max_documents, max_bytes):
        result = StagedWindow()
        for path in window:
            document = documents[path]
            staged += 1
            target = folder / f"{staged:08d}"  # not the path: it may not be a valid file name here
            try:
                with target.open("wb") as file:
                    await objects.fetch_into(
                        document.object_name,
                        file,
                        size=document.size_bytes,
                        sha256=document.sha256,
                    )
            except ObjectUnreadable as error:
                target.unlink(missing_ok=True)
                result.failures.append(DocumentFailure(path, UNREADABLE, str(error)))
                continue
            result.files[path] = target
        try:
            yield result
        finally:
            for staged_file in result.files.values():
                staged_file.unlink(missing_ok=True)
