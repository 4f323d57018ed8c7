"""The atomic switch of a REINDEX (``complete_reindex``): one transaction that
points the collection at its staging collection.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

from kit.db import keyset
from orchestrator.adapters.operation_transitions import OperationTransitions
from orchestrator.adapters.records import (
    CollectionRecord,
    OperationRecord,
    operation_from,
)
from orchestrator.adapters.shared_rows import (
    OutboxRows,
    operation_not_found,
)
from orchestrator.audit_records import transition_rows
from orchestrator.domain.collections import switch_checkpoint
from orchestrator.domain.reindex import CleanupDelay, Switch, SwitchRequest, fence_switch, retire


class ReindexSwitch(OperationTransitions):
    async def complete_reindex(
        self,
        request: SwitchRequest,
        now: datetime,
        delay: CleanupDelay,
        outbox: Callable[[CollectionRecord, OperationRecord, Switch], OutboxRows],
    ) -> tuple[CollectionRecord, Switch, bool]:
        """The atomic switch of a REINDEX: the collection now serves from its
        staging collection. Returns the collection, what the switch did and
        ``replayed`` (True: a repeat, answered from the first call's record,
        nothing written).

        Under the collection's then the operation's row lock (so a concurrent
        repeat waits and then sees the switch done, and a cancel cannot slip
        in between): fence the call, complete the ``switch`` step through the
        domain, point the collection at the staging collection with the new
        generation, config and counts, retire the old physical collection, and
        write ``outbox``'s rows, all in one transaction.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._lock_collection(conn, request.collection_id, None)
            op_row = await conn.fetchrow(
                f"""SELECT * FROM {self._s}.operations
                    WHERE id = $1 AND collection_id = $2 FOR UPDATE""",
                keyset.uuid_or_not_found(
                    request.operation_id, "OPERATION_NOT_FOUND", "operation_id"
                ),
                row["id"],
            )
            if op_row is None:
                raise operation_not_found(request.operation_id)
            record = operation_from(op_row)
            generation = row["generation"]
            if fence_switch(record.operation, generation, request, row["staging_collection"]):
                done = Switch.from_json((record.result or {})["switch"])
                return await self._collection(conn, row["id"], None), done, True
            switch = Switch(
                from_generation=generation,
                to_generation=generation + 1,
                physical_collection=request.staging_collection,
                retired_collections=(row["physical_collection"],),
                cleanup_not_before=now + delay.for_vectors(row["vector_count"]),
            )
            checkpoint = switch_checkpoint(generation, request.staging_collection)
            new, events = record.operation.complete_step("switch", checkpoint, now)
            await self._update_operation(conn, new)
            result = {"validation": dict(request.validation), "switch": switch.to_json()}
            await self._merge_result(conn, new.id, result)
            old_physical = json.loads(row["old_physical_collections"])
            await conn.execute(
                f"""UPDATE {self._s}.collections SET physical_collection = $2,
                        staging_collection = NULL, generation = $3, config = $4::jsonb,
                        document_count = $5, vector_count = $6, stored_bytes = $7,
                        old_physical_collections = $8::jsonb, updated_at = $9
                    WHERE id = $1""",
                row["id"],
                switch.physical_collection,
                switch.to_generation,
                json.dumps(dict(record.config)),
                request.document_count,
                request.vector_count,
                request.stored_bytes,
                json.dumps(list(retire(old_physical, row["physical_collection"]))),
                now,
            )
            await self._settle_collection(conn, new, events)
            collection = await self._collection(conn, row["id"], None)
            switched = await self._operation(conn, new.id, None)
            audit = transition_rows(record, new, events)
            await self._write_outbox(
                conn, [*outbox(collection, switched, switch), *audit], trace_id=record.trace_id
            )
            await self._notify(conn, new.id)
            return collection, switch, False
