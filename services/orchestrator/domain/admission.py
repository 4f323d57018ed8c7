"""Quota admission: what an operation asks the resources service to hold
before the orchestrator accepts it.

Pure. Every operation but DELETE is admitted (a deletion only frees room and
must never be refused for quota): each holds one of the owner's concurrent
operations while it runs, and a new collection counts against the owner's
collections. An INDEX or APPEND also asks for the vectors and bytes its
documents will take: the documents are the files its directory sources
select (surveyed by the adapter), the vectors are the resources service's
estimate for them under the collection's chunking, and the bytes are the
documents' bytes, the figure usage counts stored data in. A REINDEX asks
for its staging copy: the live collection's chunks scaled by how far each
config's chunks advance, its documents' bytes again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.domain.operations import OperationStatus, OperationType

ADMITTED = frozenset(
    {
        OperationType.INDEX,
        OperationType.APPEND,
        OperationType.REMOVE_SOURCE,
        OperationType.REINDEX,
    }
)


@dataclass(frozen=True)
class SourceSurvey:
    """What a directory source selects now; ``complete`` False: the walk was cut
    short and the figures are a lower bound."""

    files: int
    bytes: int
    complete: bool = True


@dataclass(frozen=True)
class Documents:
    """The documents an INDEX or APPEND will read, all its sources together."""

    count: int
    bytes: int
    complete: bool = True


@dataclass(frozen=True)
class Ask:
    """What one operation asks to hold; vectors from the resources' estimate."""

    documents: int = 0
    vectors: int = 0
    bytes: int = 0


def needs_admission(operation_type: OperationType) -> bool:
    return operation_type in ADMITTED


def released_when_it_ends(operation_type: OperationType, status: OperationStatus) -> bool:
    """Whether an operation's reservation goes back when it ends. A completed
    REINDEX keeps it: the old collection still takes its room until cleanup
    deletes it, and the indexer's cleanup gives it back then."""
    if not needs_admission(operation_type):
        return False
    return not (operation_type is OperationType.REINDEX and status is OperationStatus.COMPLETED)


def documents_of(surveys: Iterable[SourceSurvey]) -> Documents:
    found = list(surveys)
    return Documents(
        count=sum(s.files for s in found),
        bytes=sum(s.bytes for s in found),
        complete=all(s.complete for s in found),
    )


def _stride(config: Mapping[str, Any]) -> int:
    size = int(config.get("chunk_size") or 0)
    overlap = int(config.get("chunk_overlap") or 0)
    return max(1, size - overlap)


def reindex_ask(
    live_documents: int,
    live_vectors: int,
    live_bytes: int,
    live_config: Mapping[str, Any],
    target_config: Mapping[str, Any],
) -> Ask:
    """The staging copy a REINDEX builds beside the live collection (the
    indexer reserves the same under the same operation id, which then finds
    this reservation)."""
    if live_vectors <= 0:
        vectors = live_documents
    else:
        scaled = math.ceil(live_vectors * _stride(live_config) / _stride(target_config))
        vectors = max(scaled, live_documents)
    return Ask(documents=live_documents, vectors=vectors, bytes=live_bytes)
