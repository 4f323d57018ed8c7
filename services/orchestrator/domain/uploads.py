"""The rules of an UploadDocuments stream, without I/O: what each message may
be, how documents are cut out of the chunks, and the limits.

A stream is a header, then documents, each a run of consecutive chunks with
the same path ending with ``last``. ``UploadStream`` is fed the messages after
the header and says, for each chunk, whether to keep its bytes for the open
document and whether that document ended (accepted, with its size and
SHA-256) or was rejected (its bytes dropped, the upload goes on). A broken
stream (bad path, interleaved documents, a hash that does not match, a second
header) is ``UPLOAD_CORRUPTED``; too many bytes or documents in one call is
``UPLOAD_TOO_LARGE``: the call fails and nothing is started.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from kit.errors import FieldViolation, InvalidArgument, ResourceExhausted
from kit.media_types import MediaType, media_type_for, parse_media_type

MAX_PATH_CHARS = 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# RejectedDocument.reason values (protos/README.md, "Per-item reasons").
UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
DOCUMENT_TOO_LARGE = "DOCUMENT_TOO_LARGE"


@dataclass(frozen=True)
class UploadHeader:
    collection_id: str
    request_id: str
    source_id: str = ""  # "" creates a new upload source
    display_name: str = ""
    expected_documents: int = 0


@dataclass(frozen=True)
class UploadChunk:
    path: str
    data: bytes
    last: bool = False
    media_type: str = ""
    sha256: str = ""


@dataclass(frozen=True)
class UploadLimits:
    document_bytes: int
    total_bytes: int
    documents: int


@dataclass(frozen=True)
class AcceptedDocument:
    path: str
    media_type: MediaType
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class RejectedDocument:
    path: str
    reason: str
    message: str


@dataclass(frozen=True)
class ChunkOutcome:
    """What to do with one chunk: ``keep`` its bytes for the open document; the
    document ``accepted`` (store what was kept) or ``rejected`` (drop it) with it."""

    keep: bool
    accepted: AcceptedDocument | None = None
    rejected: RejectedDocument | None = None


def corrupted(why: str, path: str = "") -> InvalidArgument:
    return InvalidArgument(
        f"upload corrupted: {why}",
        reason="UPLOAD_CORRUPTED",
        metadata={"path": path},
        field_violations=[FieldViolation(field="chunk.path", description=why)] if path else [],
    )


def upload_path(raw: str) -> str:
    """A document's path inside its source: relative, normalised (``a//b`` and
    ``./a`` become ``a/b`` and ``a``), no ``..``, no NUL, at most 1024 characters."""
    if not raw:
        raise corrupted("a chunk has no path")
    if "\x00" in raw:
        raise corrupted("the path holds a NUL character", raw[:MAX_PATH_CHARS])
    if len(raw) > MAX_PATH_CHARS:
        raise corrupted(f"the path is longer than {MAX_PATH_CHARS} characters", raw[:64])
    if raw.startswith("/") or "\\" in raw:
        raise corrupted("the path must be relative, with '/' separators", raw)
    parts = [part for part in PurePosixPath(raw).parts if part != "."]
    if ".." in parts:
        raise corrupted("the path must not contain '..'", raw)
    if not parts or raw.endswith("/"):
        raise corrupted("the path names no file", raw)
    return "/".join(parts)


def declared_sha256(text: str, path: str) -> str:
    digest = text.strip().lower()
    if not _SHA256.fullmatch(digest):
        raise corrupted("sha256 must be 64 hexadecimal digits", path)
    return digest


def resolve_media_type(declared: str, path: str) -> MediaType | None:
    """The declared type when there is one, else the extension's; None when
    the indexer could not extract the document."""
    if declared.strip():
        return parse_media_type(declared)
    return media_type_for(path)


def too_large(why: str, limit_key: str, limit: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"upload too large: {why}", reason="UPLOAD_TOO_LARGE", metadata={limit_key: str(limit)}
    )


@dataclass
class _OpenDocument:
    path: str
    media_type: MediaType | None
    rejected: RejectedDocument | None = None
    size: int = 0
    declared: str = ""
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)


class UploadStream:
    """Cuts documents out of the chunks that follow the header (see the module doc)."""

    def __init__(self, limits: UploadLimits) -> None:
        self._limits = limits
        self._open: _OpenDocument | None = None
        self._seen: set[str] = set()
        self.bytes_received = 0
        self.documents_received = 0

    def feed(self, chunk: UploadChunk) -> ChunkOutcome:
        self.bytes_received += len(chunk.data)
        if self.bytes_received > self._limits.total_bytes:
            limit = self._limits.total_bytes
            raise too_large(f"one call may carry at most {limit} bytes", "limit_bytes", limit)
        document = self._document_for(chunk)
        if chunk.sha256:
            digest = declared_sha256(chunk.sha256, document.path)
            if document.declared and document.declared != digest:
                raise corrupted("two different sha256 values for one document", document.path)
            document.declared = digest
        document.size += len(chunk.data)
        keep = document.rejected is None
        if keep and document.size > self._limits.document_bytes:
            limit = self._limits.document_bytes
            why = f"{document.path} is larger than {limit} bytes"
            document.rejected = RejectedDocument(document.path, DOCUMENT_TOO_LARGE, why)
            keep = False
        if keep:
            document.digest.update(chunk.data)
        if not chunk.last:
            return ChunkOutcome(keep=keep)
        self._open = None
        self.documents_received += 1
        if document.rejected is not None:
            return ChunkOutcome(keep=False, rejected=document.rejected)
        actual = document.digest.hexdigest()
        if document.declared and document.declared != actual:
            raise corrupted("the sha256 does not match the bytes received", document.path)
        assert document.media_type is not None  # else rejected at its first chunk
        accepted = AcceptedDocument(document.path, document.media_type, document.size, actual)
        return ChunkOutcome(keep=True, accepted=accepted)

    def end(self) -> None:
        """The client closed the stream: a document left open is a broken upload."""
        if self._open is not None:
            raise corrupted("the stream ended inside a document (no last chunk)", self._open.path)

    def _document_for(self, chunk: UploadChunk) -> _OpenDocument:
        path = upload_path(chunk.path)
        if self._open is not None:
            if path != self._open.path:
                why = f"a chunk of {path} came before the last chunk of {self._open.path}"
                raise corrupted(why, path)
            return self._open
        if path in self._seen:
            raise corrupted("the path was sent twice in one upload", path)
        if len(self._seen) >= self._limits.documents:
            limit = self._limits.documents
            raise too_large(
                f"one call may carry at most {limit} documents", "limit_documents", limit
            )
        self._seen.add(path)
        media_type = resolve_media_type(chunk.media_type, path)
        document = _OpenDocument(path, media_type)
        if media_type is None:
            declared = chunk.media_type.strip() or f"the extension of {path!r}"
            why = f"{declared} is not a type the indexer can extract"
            document.rejected = RejectedDocument(path, UNSUPPORTED_MEDIA_TYPE, why)
        self._open = document
        return document
