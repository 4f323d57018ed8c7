"""Documents: stable ids, content hashes, media types, and the plan that says
which documents of a source to index, skip or remove.

Ids are UUIDv5, so every operation (INDEX, APPEND, REINDEX, REMOVE_SOURCE)
derives the same ``document_id`` for the same (collection, source, path) and the
same point ids for its chunks: the earlier system's ids differed between append
and reindex, and validation and source removal silently missed points.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

# The media types live in kit, so the orchestrator checks uploads against the
# same table; re-exported here, where the indexer's modules import them.
from kit.media_types import MEDIA_TYPES_BY_EXTENSION, MediaType, media_type_for

__all__ = [
    "MEDIA_TYPES_BY_EXTENSION",
    "DocumentPlan",
    "Duplicate",
    "MediaType",
    "content_hash",
    "document_id",
    "media_type_for",
    "plan_documents",
    "point_id",
]

# Fixed for ever: changing either namespace changes every id already stored.
DOCUMENT_NAMESPACE = uuid.UUID("6f0d8a52-3c1e-5b7a-9a43-2d1b6c0e7f10")


def document_id(collection_id: str, source_id: str, path: str) -> str:
    """The one id of a document, whatever the operation that writes it.

    ``path`` is the document's path relative to its source (posix), or the name a
    client streamed it under. JSON keeps the three parts unambiguous."""
    key = json.dumps([collection_id, source_id, path], ensure_ascii=False)
    return str(uuid.uuid5(DOCUMENT_NAMESPACE, key))


def point_id(document_id: str, chunk_index: int) -> str:
    """A chunk's Qdrant point id (Qdrant takes UUIDs or unsigned ints, not free strings).

    Deterministic, so re-writing a document upserts over its own points and a
    redelivered batch writes nothing twice."""
    if chunk_index < 0:
        raise ValueError(f"chunk_index must be >= 0, not {chunk_index}")
    return str(uuid.uuid5(uuid.UUID(document_id), str(chunk_index)))


def content_hash(data: bytes) -> str:
    """SHA-256 of a document's bytes, lowercase hex."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Duplicate:
    path: str  # the document of this source that repeats another's content
    content_hash: str
    duplicate_of: str  # a path of this source, or the key the caller gave for another source


@dataclass(frozen=True)
class DocumentPlan:
    """What to do with each document of one source. Paths are sorted."""

    new: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]  # skipped: same content hash as last time
    removed: tuple[str, ...]  # indexed before, gone now: their points are deleted
    # New or changed documents whose content another document already has. They are
    # still indexed (each document keeps its own points, so a source filter or a
    # later REMOVE_SOURCE stays exact) and counted.
    duplicates: tuple[Duplicate, ...]

    @property
    def to_index(self) -> tuple[str, ...]:
        return tuple(sorted((*self.new, *self.changed)))


def plan_documents(
    previous: Mapping[str, str],
    current: Mapping[str, str],
    collection_hashes: Mapping[str, str] | None = None,
) -> DocumentPlan:
    """Compare a source's documents now with what was indexed before.

    ``previous``: path -> content hash of the documents indexed successfully last
    time (a document that failed is left out, so it is retried as new).
    ``current``: path -> content hash of the documents found now.
    ``collection_hashes``: content hash -> a key (e.g. a document id) of documents
    of the *other* sources of the collection, for duplicate counting.
    """
    new: list[str] = []
    changed: list[str] = []
    unchanged: list[str] = []
    for path in sorted(current):
        before = previous.get(path)
        if before is None:
            new.append(path)
        elif before != current[path]:
            changed.append(path)
        else:
            unchanged.append(path)
    removed = sorted(path for path in previous if path not in current)

    # Whoever holds a hash first keeps it: other sources, then this source's
    # unchanged documents, then the documents to index in path order.
    owner: dict[str, str] = dict(collection_hashes or {})
    for path in unchanged:
        owner.setdefault(current[path], path)
    duplicates: list[Duplicate] = []
    for path in sorted((*new, *changed)):
        digest = current[path]
        first = owner.setdefault(digest, path)
        if first != path:
            duplicates.append(Duplicate(path=path, content_hash=digest, duplicate_of=first))
    return DocumentPlan(
        new=tuple(new),
        changed=tuple(changed),
        unchanged=tuple(unchanged),
        removed=tuple(removed),
        duplicates=tuple(duplicates),
    )
