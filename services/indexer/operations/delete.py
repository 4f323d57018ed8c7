"""The steps of DELETE: ``remove_alias``, ``drop_collections``, ``finalize``.

The alias goes first, so searches stop reaching the collection before its data
goes. Only the physical collections the command names are dropped, and never a
system (``_``-prefixed) one whatever the command says. ``finalize`` forgets the
indexer's copy of the collection, its sources and documents.
"""

from __future__ import annotations

from collections.abc import Sequence

from indexer.adapters.vector_store import SYSTEM_PREFIX
from indexer.operations.base import StepContext, StepOutput
from kit.logs import get_logger
from vectorops.events.v1 import operation_events_pb2

log = get_logger(__name__)


async def remove_alias(ctx: StepContext) -> StepOutput:
    deleted = await ctx.services.store.delete_alias(ctx.order.collection.alias_name)
    return StepOutput({"alias_deleted": deleted})


async def drop_collections(ctx: StepContext) -> StepOutput:
    store = ctx.services.store
    names = list(dict.fromkeys(ctx.order.physical_collections))
    kept = [name for name in names if name.startswith(SYSTEM_PREFIX)]
    if kept:
        log.warning("delete.system_collections_kept", collections=kept)
    dropped = [name for name in names if name not in kept]
    for name in dropped:
        ctx.check_cancelled()
        # False when already gone (e.g. dropped by an interrupted delivery): the
        # collection is reported dropped all the same, so a rerun says the same.
        await store.delete_collection(name)
    ctx.figures.vectors, ctx.figures.bytes = ctx.before.vectors, ctx.before.bytes
    alias_deleted = bool(ctx.checkpoints.get("remove_alias", {}).get("alias_deleted"))
    return StepOutput(
        {"deleted_collections": dropped},
        operation_events_pb2.DeleteResult(deleted_collections=dropped, alias_deleted=alias_deleted),
    )


async def finalize(ctx: StepContext) -> StepOutput:
    await ctx.services.repository.delete_collection(ctx.order.collection_id)
    return StepOutput({})


DELETE_STEPS: Sequence = (
    ("remove_alias", remove_alias),
    ("drop_collections", drop_collections),
    ("finalize", finalize),
)
