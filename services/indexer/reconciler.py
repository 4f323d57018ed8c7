"""At start-up, before serving: every live collection's alias must point at
the physical collection the recorded truth names.

The truth is the orchestrator's Postgres; here it is what the indexer recorded
of it: a switch answered by the orchestrator but not yet applied to the copy
(this process died in between) is applied now, like the switch step would;
otherwise the copy's physical collection is the target. An alias that is
missing or points elsewhere is set, if that physical collection exists; each
repair is logged and counted. A correct alias is left alone. Other indexer
replicas may run meanwhile: a repair is made under the copy's row lock and
only while the copy is still what was read (``ReindexSwitches.while_current``).
"""

from __future__ import annotations

from dataclasses import dataclass

from indexer.adapters.reindex_switches import LiveCopy, ReindexSwitches, SwitchTarget
from indexer.adapters.vector_store import VectorStore
from indexer.collection_switch import ALIAS_MOVES, CollectionSwitcher
from kit.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Repair:
    collection_id: str
    alias_name: str
    was: str | None  # where the alias pointed (None: missing)
    now: str


class AliasReconciler:
    def __init__(
        self, switches: ReindexSwitches, switcher: CollectionSwitcher, store: VectorStore
    ) -> None:
        self._switches = switches
        self._switcher = switcher
        self._store = store

    async def reconcile(self) -> list[Repair]:
        """Repair every live collection's alias; returns the repairs made."""
        repairs = []
        for copy in await self._switches.live_copies():
            try:
                repair = await self._reconcile(copy)
            except Exception:  # noqa: BLE001 - one broken collection must not keep the rest down
                log.exception("alias.reconcile_failed", collection_id=copy.collection_id)
                continue
            if repair is not None:
                repairs.append(repair)
        log.info("alias.reconciled", repairs=len(repairs))
        return repairs

    async def _reconcile(self, copy: LiveCopy) -> Repair | None:
        was = await self._store.get_alias(copy.alias_name)
        pending = await self._switches.answered_after(copy.collection_id, copy.generation)
        if pending is not None and pending.generation is not None:
            # Switched in Postgres, not yet here: finish what the switch step began.
            await self._switcher.apply(
                SwitchTarget(
                    collection_id=copy.collection_id,
                    operation_id=pending.operation_id,
                    generation=pending.generation,
                    alias_name=copy.alias_name,
                    physical_collection=pending.staging_collection,
                    config=pending.config,
                ),
                why="repair",
            )
            target = pending.staging_collection
        else:
            target = copy.physical_collection
            if was == target:
                return None
            if not await self._store.collection_exists(target):
                log.warning(
                    "alias.target_missing",
                    collection_id=copy.collection_id,
                    alias=copy.alias_name,
                    physical_collection=target,
                )
                return None

            async def repair() -> bool:
                await self._store.set_alias(copy.alias_name, target)
                return True

            # Under the copy's row lock, and only while the copy is still what was
            # read: another indexer replica may have switched it or begun deleting
            # it meanwhile, and its alias must not be moved back.
            if not await self._switches.while_current(copy, repair):
                log.info("alias.repair_overtaken", collection_id=copy.collection_id)
                return None
            ALIAS_MOVES.labels("repair").inc()
        if was == target:
            return None
        log.warning(
            "alias.repaired",
            collection_id=copy.collection_id,
            alias=copy.alias_name,
            was=was,
            now=target,
        )
        return Repair(copy.collection_id, copy.alias_name, was, target)
