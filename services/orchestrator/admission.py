"""Quota admission, the application side: before an operation is accepted the
resources service must hold room for it, under the id the operation will
have; once the operation has ended, the room is given back.

The order is what keeps a refusal clean: the reservation is made first (a
refusal then raises before anything is written), the repository's transaction
second; if that transaction fails, or turns out to be a retry of an earlier
request that returns the earlier operation, the fresh reservation is
released at once. A retry the repository already knows skips admission
altogether, so it is never refused for the quota its own first attempt holds
and never counted twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kit.logs import get_logger
from kit.source_paths import resolve_source
from orchestrator.adapters.records import CollectionRecord, OperationRecord, SourceSpec
from orchestrator.adapters.resources_client import Hold, ResourcesClient
from orchestrator.adapters.source_survey import DEFAULT_MAX_ENTRIES, survey_directory
from orchestrator.domain.admission import (
    Ask,
    Documents,
    documents_of,
    needs_admission,
    reindex_ask,
    released_when_it_ends,
)
from orchestrator.domain.operations import OperationType
from vectorops.common.v1 import operation_pb2

log = get_logger(__name__)

Started = TypeVar("Started", bound=tuple[Any, ...])

# Backoff of a release the resources service could not take: about two minutes
# in all, long enough for a restart; past it the reservation's own expiry remains.
_RELEASE_RETRY_DELAYS_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)

_TYPES = {
    OperationType.INDEX: operation_pb2.OPERATION_TYPE_INDEX,
    OperationType.APPEND: operation_pb2.OPERATION_TYPE_APPEND,
    OperationType.REMOVE_SOURCE: operation_pb2.OPERATION_TYPE_REMOVE_SOURCE,
    OperationType.REINDEX: operation_pb2.OPERATION_TYPE_REINDEX,
    OperationType.DELETE: operation_pb2.OPERATION_TYPE_DELETE,
}


@dataclass(frozen=True)
class Planned:
    """An operation about to be started: who pays, on what, under which config."""

    type: OperationType
    owner_id: str
    config: Mapping[str, Any]
    collection_id: str = ""
    sources: Sequence[SourceSpec] = ()  # INDEX: its first sources; APPEND: the new one
    live: CollectionRecord | None = None  # REINDEX: the collection as it serves now
    uploaded: Documents | None = None  # an upload's APPEND: the documents it received


def new_operation_id() -> str:
    return str(uuid.uuid4())


class Admission:
    def __init__(
        self,
        resources: ResourcesClient,
        source_roots: Sequence[Path],
        max_walk_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self._resources = resources
        self._roots = tuple(source_roots)
        self._max_entries = max_walk_entries
        self._retries: set[asyncio.Task[None]] = set()

    async def start(
        self,
        planned: Planned,
        start: Callable[[str], Awaitable[Started]],
    ) -> Started:
        """Hold room for ``planned`` under a fresh operation id, then run
        ``start(operation_id)`` (the repository's transaction, answering
        ``(..., created)``); release the room unless it created the operation."""
        operation_id = new_operation_id()
        if not needs_admission(planned.type):
            return await start(operation_id)
        await self._hold(operation_id, planned)
        try:
            started = await start(operation_id)
        except BaseException:
            await self.release(operation_id)
            raise
        if not started[-1]:
            await self.release(operation_id)
        return started

    async def release(self, operation_id: str) -> None:
        """Best effort: a reservation that is not released expires."""
        await self._resources.release(operation_id)

    async def release_finished(self, record: OperationRecord) -> None:
        """The repository's hook: called once an operation reached its end. A
        completed REINDEX only stops counting as running: the collection it
        retired holds its room until the indexer's cleanup releases it.

        A release the resources service could not take (it is restarting, say)
        is retried in the background rather than left to expire a day later:
        the hook must not hold up the event consumer that ended the operation."""
        operation = record.operation
        if released_when_it_ends(operation.type, operation.status):
            keep_room = False
        elif needs_admission(operation.type):
            keep_room = True
        else:
            return
        if not await self._resources.release(record.id, keep_room=keep_room):
            task = asyncio.create_task(self._release_later(record.id, keep_room))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

    async def _release_later(self, operation_id: str, keep_room: bool) -> None:
        # The request id makes a release idempotent, so a retry that follows a
        # lost answer changes nothing twice.
        for delay in _RELEASE_RETRY_DELAYS_SECONDS:
            await asyncio.sleep(delay)
            if await self._resources.release(operation_id, keep_room=keep_room):
                return
        log.warning("orchestrator.release_abandoned", operation_id=operation_id)

    # --- what to ask for --------------------------------------------------------------

    async def _hold(self, operation_id: str, planned: Planned) -> None:
        ask = await self._ask(planned)
        await self._resources.reserve(
            Hold(
                operation_id=operation_id,
                owner_id=planned.owner_id,
                collection_id=planned.collection_id,
                operation_type=_TYPES[planned.type],
                vectors=ask.vectors,
                bytes=ask.bytes,
                documents=ask.documents,
            )
        )

    async def _ask(self, planned: Planned) -> Ask:
        if planned.type is OperationType.REINDEX and planned.live is not None:
            live = planned.live
            return reindex_ask(
                live.document_count,
                live.vector_count,
                live.stored_bytes,
                live.config,
                planned.config,
            )
        if planned.type not in (OperationType.INDEX, OperationType.APPEND):
            return Ask()  # counts only: one concurrent operation
        documents = planned.uploaded or await asyncio.to_thread(self._survey, planned.sources)
        if not documents.complete:
            log.info("admission.survey_partial", files=documents.count, bytes=documents.bytes)
        if documents.count == 0:
            return Ask()
        config = planned.config
        vectors = await self._resources.estimate_vectors(
            owner_id=planned.owner_id,
            operation_type=_TYPES[planned.type],
            documents=documents.count,
            document_bytes=documents.bytes,
            dimension=int(config.get("dimension") or 0),
            quantization=str(config.get("quantization") or ""),
            chunk_size=int(config.get("chunk_size") or 0),
            chunk_overlap=int(config.get("chunk_overlap") or 0),
        )
        return Ask(documents=documents.count, vectors=vectors, bytes=documents.bytes)

    def _survey(self, sources: Sequence[SourceSpec]) -> Documents:
        surveys = [
            survey_directory(
                resolve_source(source.path, self._roots),
                source.include,
                source.exclude,
                self._max_entries,
            )
            for source in sources
            if source.kind == "directory"  # an upload's documents come as ``uploaded``
        ]
        return documents_of(surveys)
