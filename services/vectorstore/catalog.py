"""The collections this server keeps: Qdrant's engine through ``EdgeVectorStore``,
plus what a Qdrant server keeps beside each collection and the engine does not.

Layout under ``data_dir`` (the engine's own, so an indexer's embedded data dir
can be served as it is)::

    collections/<name>/…   the engine's (``EdgeVectorStore``)
    aliases.json           the engine's
    qdrant/<name>.json     ours: the collection's Qdrant metadata and indexing threshold

Our record is written before the collection is made and removed after it is
deleted, so a crash leaves at worst a record without a collection, which is
ignored and replaced by the next create of that name. A collection without a
record (made by an indexer's embedded store) has no metadata and the default
threshold.

Optimisation: the engine has no background optimiser. A collection whose
unindexed vectors pass its indexing threshold after a write reports grey (due,
waiting for an update, as a server does after a restart); the update
``QdrantServerStore.optimize`` sends then starts the build (yellow) in the
background, and the collection turns green, or red if the build failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from indexer.adapters.edge_store import EdgeVectorStore
from indexer.adapters.vector_store import (
    PayloadFilter,
    ScoredPoint,
    ScrollPage,
    VectorCollectionConflict,
    VectorCollectionNotFound,
    VectorPoint,
    validate_name,
)
from kit.logs import get_logger
from vectorstore.errors import CollectionExists
from vectorstore.messages import (
    AliasChange,
    CollectionSpec,
    CollectionState,
    Health,
    optimisation_due,
)

log = get_logger(__name__)

_RECORDS_DIR = "qdrant"


class Catalog:
    """One engine, shared by every client of this server; see the module docstring."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.engine = EdgeVectorStore(self.data_dir)
        self._records_dir = self.data_dir / _RECORDS_DIR
        self._records_dir.mkdir(parents=True, exist_ok=True)
        # Creates, deletes and alias changes one at a time: each checks, then writes.
        self._structure = asyncio.Lock()
        self._optimising: dict[str, asyncio.Task[None]] = {}
        # What a collection looked like when its build started: the engine holds it
        # until the build ends, and a server answers "yellow" at once meanwhile.
        self._before_build: dict[str, CollectionState] = {}
        self._failures: dict[str, str] = {}
        # Optimised and not written since (none after a restart: not known).
        self._optimised: set[str] = set()
        self._operations = 0

    async def open(self) -> None:
        """Drop the records of collections a crash deleted, or never made."""
        names = set(await self.engine.list_collections())
        for record in self._records_dir.glob("*.json"):
            if record.stem not in names:
                record.unlink(missing_ok=True)

    # -- collections ------------------------------------------------------------

    async def names(self) -> list[str]:
        return await self.engine.list_collections()

    async def create(self, spec: CollectionSpec) -> None:
        validate_name(spec.name, allow_system=True)
        async with self._structure:
            if await self.engine.collection_exists(spec.name):
                raise CollectionExists(f"Collection `{spec.name}` already exists!")
            if await self.engine.get_alias(spec.name) is not None:
                raise CollectionExists(f"Alias `{spec.name}` already exists!")
            record = {
                "metadata": spec.metadata,
                "indexing_threshold_kb": spec.indexing_threshold_kb,
            }
            await asyncio.to_thread(self._write_record, spec.name, record)
            await self.engine.create_collection(
                spec.name,
                spec.dimension,
                spec.distance,
                spec.quantization,
                system=True,  # the client keeps the system-name rule
                indexing_threshold_kb=spec.indexing_threshold_kb,
            )
        log.info("vectorstore.collection_created", collection=spec.name)

    async def delete(self, name: str) -> bool:
        async with self._structure:
            deleted = await self.engine.delete_collection(name, system=True)
            (self._records_dir / f"{name}.json").unlink(missing_ok=True)
            self._failures.pop(name, None)
            self._optimised.discard(name)
        if deleted:
            log.info("vectorstore.collection_deleted", collection=name)
        return deleted

    async def state(self, name_or_alias: str) -> CollectionState:
        name = await self.engine.resolve(name_or_alias)
        task = self._optimising.get(name)
        if task is not None and not task.done() and name in self._before_build:
            return replace(self._before_build[name], health=Health.YELLOW)
        if not await self.engine.collection_exists(name):
            raise VectorCollectionNotFound(
                f"Collection `{name}` doesn't exist!", metadata={"collection": name}
            )
        record = await asyncio.to_thread(self._read_record, name)
        threshold = record.get("indexing_threshold_kb")
        info = await self.engine.collection_info(name)
        failure = self._failures.get(name)
        if failure is not None:
            health = Health.RED
        elif name not in self._optimised and optimisation_due(info, threshold):
            health = Health.GREY
        else:
            health = Health.GREEN
        return CollectionState(
            info=info,
            payload_schema=await self.engine.payload_schema(name),
            indexing_threshold_kb=threshold,
            metadata=record.get("metadata") or {},
            health=health,
            optimizer_error=failure,
        )

    async def start_optimisation(self, name_or_alias: str) -> None:
        """Start the build if one is due (grey) or failed last time (red), and none
        runs: what a server's collection update does."""
        state = await self.state(name_or_alias)
        if state.health not in (Health.GREY, Health.RED):
            return
        name = state.info.name
        self._failures.pop(name, None)
        self._before_build[name] = state
        self._optimising[name] = asyncio.create_task(self._optimise(name), name=f"optimise {name}")

    async def _optimise(self, name: str) -> None:
        log.info("vectorstore.optimisation_started", collection=name)
        try:
            info = await self.engine.optimize(name)
        except VectorCollectionNotFound:
            return  # deleted meanwhile
        except Exception as error:  # noqa: BLE001 - the collection turns red with it
            self._failures[name] = str(error)
            log.error("vectorstore.optimisation_failed", collection=name, exc_info=error)
            return
        finally:
            self._before_build.pop(name, None)
        self._optimised.add(name)
        log.info(
            "vectorstore.optimisation_done",
            collection=name,
            points=info.points_count,
            indexed=info.indexed_vectors_count,
        )

    async def create_payload_index(self, name: str, field_name: str, kind: str) -> int:
        await self.engine.create_payload_index(name, field_name, kind)
        return self._next_operation()

    # -- points -----------------------------------------------------------------

    async def upsert(self, name: str, points: Sequence[VectorPoint]) -> int:
        physical = await self.engine.resolve(name)
        await self.engine.upsert(physical, points)
        self._optimised.discard(physical)
        return self._next_operation()

    async def delete_points(self, name: str, filter: PayloadFilter) -> int:
        physical = await self.engine.resolve(name)
        await self.engine.delete_points(physical, filter)
        self._optimised.discard(physical)
        return self._next_operation()

    async def count(self, name: str, filter: PayloadFilter | None, exact: bool) -> int:
        return await self.engine.count(name, filter, exact)

    async def search(
        self,
        name: str,
        vector: Sequence[float],
        limit: int,
        filter: PayloadFilter | None,
        score_threshold: float | None,
        with_payload: bool,
    ) -> list[ScoredPoint]:
        return await self.engine.search(
            name, np.asarray(vector, dtype=np.float32), limit, filter, score_threshold, with_payload
        )

    async def scroll(
        self,
        name: str,
        filter: PayloadFilter | None,
        limit: int,
        offset: str | None,
        with_vectors: bool,
    ) -> ScrollPage:
        return await self.engine.scroll(name, filter, limit, offset, with_vectors)

    # -- aliases ----------------------------------------------------------------

    async def aliases(self) -> dict[str, str]:
        return await self.engine.list_aliases()

    async def change_aliases(self, changes: Sequence[AliasChange]) -> None:
        """Check every action against the aliases as the earlier ones leave them,
        then write only the end state of each alias touched: a delete-and-create
        of one alias is one atomic move in the engine."""
        async with self._structure:
            current = await self.engine.list_aliases()
            planned = dict(current)
            for change in changes:
                await self._plan(planned, change)
            for alias in sorted(set(current) | set(planned)):
                target = planned.get(alias)
                if target == current.get(alias):
                    continue
                if target is None:
                    await self.engine.delete_alias(alias)
                else:
                    await self.engine.set_alias(alias, target)
        log.info("vectorstore.aliases_changed", actions=len(changes))

    async def _plan(self, planned: dict[str, str], change: AliasChange) -> None:
        if change.kind == "create":
            assert change.collection is not None
            if change.alias in planned:
                raise CollectionExists(f"Alias `{change.alias}` already exists!")
            if await self.engine.collection_exists(change.alias):
                raise VectorCollectionConflict(
                    f"Collection `{change.alias}` already exists!",
                    metadata={"collection": change.alias},
                )
            if not await self.engine.collection_exists(change.collection):
                raise VectorCollectionNotFound(
                    f"Collection `{change.collection}` doesn't exist!",
                    metadata={"collection": change.collection},
                )
            validate_name(change.alias, what="alias")
            planned[change.alias] = change.collection
            return
        if change.alias not in planned:
            raise VectorCollectionNotFound(
                f"Alias `{change.alias}` doesn't exist!", metadata={"collection": change.alias}
            )
        target = planned.pop(change.alias)
        if change.kind == "rename":
            assert change.new_alias is not None
            if change.new_alias in planned:
                raise CollectionExists(f"Alias `{change.new_alias}` already exists!")
            validate_name(change.new_alias, what="alias")
            planned[change.new_alias] = target

    # -- lifecycle --------------------------------------------------------------

    async def close(self, timeout_seconds: float = 60.0) -> None:
        """Let running builds end (a shard closed mid-build would be reloaded at the
        next start anyway), then close every shard."""
        running = [task for task in self._optimising.values() if not task.done()]
        if running:
            log.info("vectorstore.waiting_for_optimisations", count=len(running))
            await asyncio.wait(running, timeout=timeout_seconds)
        await self.engine.close()

    # -- internals --------------------------------------------------------------

    def _next_operation(self) -> int:
        self._operations += 1
        return self._operations

    def _read_record(self, name: str) -> dict[str, Any]:
        try:
            return json.loads((self._records_dir / f"{name}.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def _write_record(self, name: str, record: dict[str, Any]) -> None:
        path = self._records_dir / f"{name}.json"
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(record, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
