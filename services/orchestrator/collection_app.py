"""Collections, the application side: check a request, scope it to the caller,
and hand it to the repository with the command its operation sends.

Every check that can refuse a request runs before anything is written, and
what is written (the collection, its operation, the command's outbox row)
is one transaction, so a refused or failed request leaves nothing behind.
The quota is one of those checks: ``Admission`` has the resources service
hold room for the operation before its transaction (see ``admission``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from kit.auth import Principal
from kit.embedding_models import ModelRegistry
from kit.errors import FieldViolation, InvalidArgument
from kit.source_paths import resolve_source
from orchestrator import commands
from orchestrator.adapters.records import (
    CollectionRecord,
    OperationRecord,
    SourceRecord,
    SourceSpec,
    request_hash,
)
from orchestrator.adapters.repository import OrchestratorRepository
from orchestrator.admission import Admission, Planned, Started
from orchestrator.application import Clock, owner_for_create, owner_scope, utc_now
from orchestrator.commands import OutboxRow
from orchestrator.domain.collections import can_start
from orchestrator.domain.config import RequestedConfig, validate_config
from orchestrator.domain.fields import invalid_field, require, validate_name
from orchestrator.domain.operations import CollectionStatus, DomainEvent, OperationType

UPDATABLE = ("name", "description")


@dataclass(frozen=True)
class NewCollection:
    """A CreateCollection request, as plain values."""

    name: str
    config: RequestedConfig | None
    request_id: str
    description: str = ""
    sources: Sequence[SourceSpec] = ()
    owner_id: str = ""  # "" is the caller


class CollectionApp:
    def __init__(
        self,
        repository: OrchestratorRepository,
        source_roots: Sequence[Path],
        admission: Admission,
        registry: ModelRegistry | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._repo = repository
        self._roots = tuple(source_roots)
        self._admission = admission
        self._registry = registry or ModelRegistry()
        self._now = clock

    # --- reading -----------------------------------------------------------------

    async def get(self, principal: Principal, collection_id: str) -> CollectionRecord:
        require(collection_id, "collection_id")
        return await self._repo.get_collection(collection_id, owner_scope(principal))

    async def list(
        self,
        principal: Principal,
        page_size: int,
        page_token: str,
        *,
        owner_id: str = "",
        statuses: Collection[CollectionStatus] = (),
        name_prefix: str = "",
    ) -> tuple[list[CollectionRecord], str]:
        """A user always lists their own (an ``owner_id`` filter is an admin's);
        an admin lists everyone's, or one owner's."""
        owner = owner_scope(principal)
        if owner is None:
            owner = owner_id.strip() or None
        return await self._repo.list_collections(
            owner, page_size, page_token, statuses=statuses, name_prefix=name_prefix
        )

    # --- changing ----------------------------------------------------------------

    async def create(
        self, principal: Principal, request: NewCollection
    ) -> tuple[CollectionRecord, OperationRecord]:
        """A PENDING collection and its INDEX operation, whose command carries
        the first sources. A retry of the same request returns the first result."""
        require(request.request_id, "request_id")
        name = validate_name(request.name)
        if request.config is None:
            raise invalid_field("collection.config", "is required")
        config = validate_config(request.config, self._registry)
        first_of: dict[str, int] = {}
        for index, source in enumerate(request.sources):
            self._check_directory(source, f"sources[{index}]")
            earlier = first_of.setdefault(source.path, index)
            if earlier != index:
                raise invalid_field(
                    f"sources[{index}].directory.path", f"repeats sources[{earlier}]"
                )
        owner = owner_for_create(principal, request.owner_id)
        fingerprint = request_hash(
            "create",
            owner,
            name,
            request.description,
            config,
            [asdict(source) for source in request.sources],
        )

        def start(operation_id: str | None):
            return self._repo.create_collection_with_operation(
                owner,
                name,
                config,
                request.request_id,
                fingerprint,
                list(request.sources),
                self._now(),
                lambda new, op: [commands.index_command(new, op, principal)],
                description=request.description,
                created_by=principal.id,
                operation_id=operation_id,
            )

        if await self._repo.request_seen(owner, request.request_id):
            collection, op, _ = await start(None)  # a retry: the first result, no new admission
        else:
            planned = Planned(OperationType.INDEX, owner, config, sources=request.sources)
            collection, op, _ = await self._admission.start(planned, start)
        return collection, op

    async def update(
        self,
        principal: Principal,
        collection_id: str,
        fields: Sequence[str],
        values: Mapping[str, str],
        request_id: str,
    ) -> CollectionRecord:
        """Change the fields named in ``fields`` (an update mask) to ``values``."""
        require(request_id, "request_id")
        require(collection_id, "collection.id")
        if not fields:
            raise invalid_field("update_mask", "must name the fields to update")
        for path in fields:
            if path not in UPDATABLE:
                raise InvalidArgument(
                    f"update_mask names {path!r}; only {', '.join(UPDATABLE)} can be updated"
                    " (embedding or chunking changes go through ReindexCollection)",
                    reason="FIELD_NOT_UPDATABLE",
                    metadata={"field": path},
                    field_violations=[FieldViolation("update_mask", f"{path!r} is not updatable")],
                )
        changes = {path: values.get(path, "") for path in dict.fromkeys(fields)}
        if "name" in changes:
            changes["name"] = validate_name(changes["name"])
        fingerprint = request_hash("update", collection_id, changes)
        collection, _ = await self._repo.update_collection(
            collection_id, owner_scope(principal), changes, request_id, fingerprint, self._now()
        )
        return collection

    async def add_source(
        self, principal: Principal, collection_id: str, source: SourceSpec, request_id: str
    ) -> tuple[OperationRecord, SourceRecord | None]:
        """An APPEND operation that ingests the new source, and the source as
        stored (None only for a retry after the source or its collection went)."""
        require(request_id, "request_id")
        require(collection_id, "collection_id")
        self._check_directory(source, "source")
        fingerprint = request_hash("add_source", collection_id, asdict(source))

        def start(operation_id: str | None):
            return self._repo.start_operation(
                collection_id,
                owner_scope(principal),
                OperationType.APPEND,
                None,
                request_id,
                fingerprint,
                self._now(),
                lambda current, op: [commands.append_command(current, op, principal)],
                new_source=source,
                created_by=principal.id,
                operation_id=operation_id,
            )

        collection, op, _ = await self._start_admitted(
            principal, collection_id, OperationType.APPEND, request_id, start, (source,)
        )
        sources = collection.sources if collection is not None else ()
        added = next((s for s in sources if s.id == op.source_id), None)
        return op, added

    async def remove_source(
        self, principal: Principal, collection_id: str, source_id: str, request_id: str
    ) -> OperationRecord:
        require(request_id, "request_id")
        require(collection_id, "collection_id")
        require(source_id, "source_id")
        fingerprint = request_hash("remove_source", collection_id, source_id)

        def start(operation_id: str | None):
            return self._repo.start_operation(
                collection_id,
                owner_scope(principal),
                OperationType.REMOVE_SOURCE,
                None,
                request_id,
                fingerprint,
                self._now(),
                lambda current, op: [commands.remove_source_command(current, op, principal)],
                source_id=source_id,
                created_by=principal.id,
                operation_id=operation_id,
            )

        _, op, _ = await self._start_admitted(
            principal, collection_id, OperationType.REMOVE_SOURCE, request_id, start
        )
        return op

    async def delete(
        self, principal: Principal, collection_id: str, request_id: str, force: bool
    ) -> OperationRecord:
        """A DELETE operation. ``force`` first cancels the running operation (in
        the same transaction, telling the indexer to stop it) instead of
        refusing with OPERATION_IN_PROGRESS."""
        require(request_id, "request_id")
        require(collection_id, "collection_id")
        now = self._now()
        cancelled: list[str] = []  # the operation a forced delete ended, once committed

        def cancel_rows(active: OperationRecord, events: list[DomainEvent]) -> list[OutboxRow]:
            why = "the collection is being deleted"
            if events:
                cancelled.append(active.id)
            return commands.cancel_rows(active.owner_id, why, principal)(events)

        _, op, _ = await self._repo.start_operation(
            collection_id,
            owner_scope(principal),
            OperationType.DELETE,
            None,
            request_id,
            request_hash("delete", collection_id, force),
            now,
            lambda current, op: [commands.delete_command(current, op, principal)],
            created_by=principal.id,
            preempt=(lambda active: active.cancel(now)) if force else None,
            preempt_outbox=cancel_rows,
        )
        for operation_id in cancelled:  # ended inside the delete's transaction, not by ``apply``
            await self._admission.release(operation_id)
        return op

    async def _start_admitted(
        self,
        principal: Principal,
        collection_id: str,
        type: OperationType,
        request_id: str,
        start: Callable[[str | None], Awaitable[Started]],
        sources: Sequence[SourceSpec] = (),
    ) -> Started:
        """Start an operation on an existing collection once the quota admits it.
        A retry skips admission (its first attempt holds the room); so does a
        collection that could not start one anyway, so the answer stays the
        precondition (checked again under the row lock) and not the quota."""
        scope = owner_scope(principal)
        if await self._repo.request_seen(scope or "", request_id):
            return await start(None)
        live = await self._repo.get_collection(collection_id, scope)
        can_start(live.status, live.active_operation_id, live.id)
        planned = Planned(type, live.owner_id, live.config, live.id, sources)
        return await self._admission.start(planned, start)

    # --- checks --------------------------------------------------------------------

    def _check_directory(self, source: SourceSpec, field: str) -> None:
        """Only directory sources come this way, and only inside the allowed
        roots (the indexer checks again when it scans)."""
        if source.kind == "upload":
            raise invalid_field(f"{field}.upload", "upload sources are created by UploadDocuments")
        if source.kind != "directory":
            raise invalid_field(f"{field}.directory", "is required")
        resolve_source(source.path, self._roots, field=f"{field}.directory.path")
