"""UploadDocuments, the application side: check the header, receive the
documents into the object store, then start the APPEND that indexes them.

Everything that can refuse the upload before its bytes arrive (the request
id, the collection, another operation running, the source) is checked on the
header, so a refused client has sent nothing big. Each document is kept in a
spooled temporary file (memory up to ``spool_memory_bytes``, disk beyond, never
more than the per-document limit) until its last chunk, because its object
is named by its SHA-256, known only then; then it is streamed from that file
into the bucket. Only when the stream has ended cleanly is the APPEND started,
in one transaction (operation, source, command with the manifest): a broken or
oversized upload starts nothing. Objects it wrote before failing stay in the
bucket, content-addressed and harmless, until the bucket's max age.

A retry with the same ``request_id`` sends the same documents again: they are
the same objects (already there, so not re-put), and the transaction returns
the first call's operation. A new source's id is derived from the request id
for that reason: the retry names its objects exactly as the first call did.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from kit.auth import Principal
from kit.bus.object_store import ObjectBucket, upload_object_name
from kit.errors import AlreadyExists, InvalidArgument, NotFound
from orchestrator import commands
from orchestrator.adapters.records import (
    CollectionRecord,
    OperationRecord,
    SourceRecord,
    SourceSpec,
    request_hash,
)
from orchestrator.adapters.repository import OrchestratorRepository
from orchestrator.admission import Admission, Planned
from orchestrator.application import Clock, owner_scope, utc_now
from orchestrator.domain.admission import Documents
from orchestrator.domain.collections import can_start
from orchestrator.domain.fields import require, validate_name
from orchestrator.domain.operations import OperationType
from orchestrator.domain.uploads import (
    AcceptedDocument,
    RejectedDocument,
    UploadChunk,
    UploadHeader,
    UploadLimits,
    UploadStream,
    corrupted,
)
from vectorops.events.v1 import commands_pb2

# What the servicer hands over per message; None is a message with neither
# a header nor a chunk.
UploadMessage = UploadHeader | UploadChunk | None

# Fixed for ever: a new upload source's id is derived from the request under it.
UPLOAD_SOURCE_NAMESPACE = uuid.UUID("0b6b7a4e-8f3d-5c21-9e57-3a1f4c2d9b80")
SPOOL_MEMORY_BYTES = 1 << 20


@dataclass(frozen=True)
class UploadOutcome:
    operation: OperationRecord
    source: SourceRecord | None  # None only for a retry whose collection went since
    documents_received: int
    bytes_received: int
    rejected: tuple[RejectedDocument, ...]


@dataclass(frozen=True)
class _Target:
    """Where the documents go: an existing upload source, or a new one."""

    collection_id: str
    source_id: str
    new_source: SourceSpec | None


class UploadApp:
    def __init__(
        self,
        repository: OrchestratorRepository,
        bucket: ObjectBucket,
        limits: UploadLimits,
        admission: Admission,
        clock: Clock = utc_now,
        spool_memory_bytes: int = SPOOL_MEMORY_BYTES,
    ) -> None:
        self._repo = repository
        self._admission = admission
        self._bucket = bucket
        self._limits = limits
        self._now = clock
        self._spool_memory = spool_memory_bytes

    async def upload(
        self, principal: Principal, messages: AsyncIterator[UploadMessage]
    ) -> UploadOutcome:
        header = await _header(messages)
        target = await self._target(principal, header)
        stream = UploadStream(self._limits)
        accepted, rejected = await self._receive(messages, stream, target)
        if not accepted:
            refused = "; ".join(f"{r.path}: {r.reason}" for r in rejected[:20])
            raise InvalidArgument(
                f"no document was accepted, nothing to index ({refused or 'none sent'})",
                reason="INVALID_ARGUMENT",
                metadata={"field": "chunk"},
            )
        collection, op = await self._start_append(principal, header, target, accepted)
        sources = collection.sources if collection is not None else ()
        return UploadOutcome(
            operation=op,
            source=next((s for s in sources if s.id == op.source_id), None),
            documents_received=stream.documents_received,
            bytes_received=stream.bytes_received,
            rejected=tuple(rejected),
        )

    # --- the header ------------------------------------------------------------------

    async def _target(self, principal: Principal, header: UploadHeader) -> _Target:
        require(header.request_id, "header.request_id")
        require(header.collection_id, "header.collection_id")
        owner = owner_scope(principal)
        collection = await self._repo.get_collection(header.collection_id, owner)
        await self._check_can_start(principal, collection, header.request_id)
        if header.source_id:
            for source in collection.sources:
                if source.id == header.source_id and source.kind == "upload":
                    return _Target(collection.id, source.id, None)
            raise NotFound(
                f"no upload source {header.source_id} in collection {collection.id}",
                reason="SOURCE_NOT_FOUND",
                metadata={"source_id": header.source_id},
            )
        key = json.dumps([collection.id, owner or "", header.request_id])
        source_id = str(uuid.uuid5(UPLOAD_SOURCE_NAMESPACE, key))
        label = header.display_name.strip()
        label = validate_name(label, "header.display_name") if label else f"upload-{source_id[:8]}"
        for source in collection.sources:
            if source.kind == "upload" and source.path == label and source.id != source_id:
                raise AlreadyExists(
                    f"the collection already has an upload source labelled {label!r}; "
                    "name it by source_id to add to it",
                    reason="SOURCE_ALREADY_EXISTS",
                    metadata={"source_id": source.id},
                )
        return _Target(collection.id, source_id, SourceSpec("upload", label, id=source_id))

    async def _check_can_start(
        self, principal: Principal, collection: CollectionRecord, request_id: str
    ) -> None:
        """Refuse now, before the bytes come, what the transaction would refuse
        at the end (it checks again, under the row lock). A retry of an upload
        whose APPEND still runs is let through: it gets that APPEND back."""
        active = collection.active_operation_id
        if active:
            running = await self._repo.get_operation(active, owner_scope(principal))
            if running.request_id == request_id and running.created_by == principal.id:
                return
        can_start(collection.status, active, collection.id)

    # --- the documents ---------------------------------------------------------------

    async def _receive(
        self, messages: AsyncIterator[UploadMessage], stream: UploadStream, target: _Target
    ) -> tuple[list[AcceptedDocument], list[RejectedDocument]]:
        accepted: list[AcceptedDocument] = []
        rejected: list[RejectedDocument] = []
        spool: BinaryIO | None = None
        try:
            async for message in messages:
                if not isinstance(message, UploadChunk):
                    what = "a second header" if message is not None else "an empty message"
                    raise corrupted(f"{what} in the stream; only chunks follow the header")
                outcome = stream.feed(message)
                if outcome.keep:
                    if spool is None:
                        spool = self._spool()
                    # One message (at most gRPC's 4 MiB) to memory or the page cache.
                    spool.write(message.data)
                elif spool is not None:  # rejected on the way: drop what was kept
                    spool.close()
                    spool = None
                if outcome.rejected is not None:
                    rejected.append(outcome.rejected)
                if outcome.accepted is not None:
                    assert spool is not None  # an accepted document's bytes were all kept
                    await self._store(target, outcome.accepted, spool)
                    accepted.append(outcome.accepted)
                    spool.close()
                    spool = None
            stream.end()
        finally:
            if spool is not None:
                spool.close()
        return accepted, rejected

    def _spool(self) -> BinaryIO:
        return tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by _receive
            max_size=self._spool_memory, prefix="vo-upload-"
        )

    async def _store(self, target: _Target, document: AcceptedDocument, spool: BinaryIO) -> None:
        spool.seek(0)
        name = upload_object_name(target.collection_id, target.source_id, document.sha256)
        await self._bucket.put(name, spool, size=document.size_bytes, sha256=document.sha256)

    # --- the operation ---------------------------------------------------------------

    async def _start_append(
        self,
        principal: Principal,
        header: UploadHeader,
        target: _Target,
        accepted: Sequence[AcceptedDocument],
    ) -> tuple[CollectionRecord | None, OperationRecord]:
        manifest = commands_pb2.UploadManifest(
            bucket=self._bucket.name,
            documents=[
                commands_pb2.UploadedDocument(
                    path=document.path,
                    media_type=str(document.media_type),
                    size_bytes=document.size_bytes,
                    sha256=document.sha256,
                    object_name=upload_object_name(
                        target.collection_id, target.source_id, document.sha256
                    ),
                )
                for document in accepted
            ],
        )
        fingerprint = request_hash(
            "upload",
            target.collection_id,
            header.source_id,
            target.new_source.path if target.new_source else "",
            [(d.path, str(d.media_type), d.sha256) for d in accepted],
        )

        def start(operation_id: str | None):
            return self._repo.start_operation(
                target.collection_id,
                owner_scope(principal),
                OperationType.APPEND,
                None,
                header.request_id,
                fingerprint,
                self._now(),
                lambda current, op: [commands.append_command(current, op, principal, manifest)],
                new_source=target.new_source,
                source_id=None if target.new_source else target.source_id,
                created_by=principal.id,
                operation_id=operation_id,
            )

        scope = owner_scope(principal)
        if await self._repo.request_seen(scope or "", header.request_id):
            collection, op, _ = await start(None)  # a retry: the first result, no new admission
            return collection, op
        live = await self._repo.get_collection(target.collection_id, scope)
        uploaded = Documents(len(accepted), sum(d.size_bytes for d in accepted))
        planned = Planned(
            OperationType.APPEND, live.owner_id, live.config, live.id, uploaded=uploaded
        )
        collection, op, _ = await self._admission.start(planned, start)
        return collection, op


async def _header(messages: AsyncIterator[UploadMessage]) -> UploadHeader:
    first = await anext(aiter(messages), None)
    if isinstance(first, UploadHeader):
        return first
    if isinstance(first, UploadChunk):
        raise corrupted("a chunk came before the header", first.path[:1024])
    raise corrupted("the stream must start with a header")
