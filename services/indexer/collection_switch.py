"""Applying a reindex switch to the indexer: the alias first, then the copy.

The orchestrator's Postgres is the truth: once CompleteReindex answered (or
its CollectionSwitched event arrived) the collection *is* the new physical
collection, so the alias follows at once, then the indexer's copy of the
collection (physical, generation, config) and its live document rows' figures
(``ReindexSwitches.apply``). Every applier calls this: the switch step, the
CollectionSwitched consumer, the start-up reconciler. It is idempotent, and
an older generation than the copy's changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from prometheus_client import Counter

from indexer.adapters.reindex_switches import CopyChange, ReindexSwitches, SwitchTarget
from indexer.adapters.vector_store import VectorStore
from kit.logs import get_logger

log = get_logger(__name__)

ALIAS_MOVES = Counter(
    "vectorops_alias_moves_total",
    "Aliases pointed at another physical collection, by who moved it: switch (the "
    "switch step), event (the CollectionSwitched consumer) or repair (the start-up "
    "reconciler found it wrong or missing).",
    ["why"],
)


@dataclass(frozen=True)
class Applied:
    change: CopyChange
    alias_moved: bool  # this call pointed the alias somewhere else

    @property
    def alias_at_target(self) -> bool:
        """The alias now points at the target (moved now, or already there)."""
        return self.change in (CopyChange.SWITCHED, CopyChange.REFRESHED)


class CollectionSwitcher:
    def __init__(self, switches: ReindexSwitches, store: VectorStore) -> None:
        self.switches = switches
        self._store = store

    async def apply(self, target: SwitchTarget, why: str = "switch") -> Applied:
        """Point the alias at ``target.physical_collection`` and switch the copy.
        A target without a config takes the one recorded with the switch request."""
        if target.config is None:
            record = await self.switches.get(target.operation_id)
            if record is not None:
                target = replace(target, config=record.config)
        moved = False

        async def move_alias() -> None:
            nonlocal moved
            if await self._store.get_alias(target.alias_name) != target.physical_collection:
                await self._store.set_alias(target.alias_name, target.physical_collection)
                moved = True

        change = await self.switches.apply(target, move_alias)
        if moved:
            ALIAS_MOVES.labels(why).inc()
        log.info(
            "collection.switch_applied",
            collection_id=target.collection_id,
            operation_id=target.operation_id,
            generation=target.generation,
            physical_collection=target.physical_collection,
            change=change.value,
            alias_moved=moved,
            why=why,
        )
        return Applied(change, moved)
