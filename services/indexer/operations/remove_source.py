"""The steps of REMOVE_SOURCE: ``remove_points``, ``remove_documents``, ``finalize``.

Points go first, then the rows that count them: a crash in between leaves rows
whose points are gone, which the redelivered command deletes again (a filtered
delete of nothing is harmless), never points that no row accounts for. The
figures of ``remove_points`` come from the rows, which are still there on a
redelivery, so a second run reports what the first removed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from indexer.adapters.document_repository import DocumentStatus, SourceStatus
from indexer.operations.base import StepContext, StepOutput, collection_figures
from kit.errors import NotFound
from vectorops.events.v1 import operation_events_pb2


async def remove_points(ctx: StepContext) -> StepOutput:
    services, order = ctx.services, ctx.order
    source_id, collection_id = order.source_id, order.collection_id
    documents = await services.repository.documents_of_source(collection_id, source_id)
    indexed = [d for d in documents if d.status is not DocumentStatus.FAILED]
    vectors = sum(d.vector_count for d in indexed)
    freed = sum(d.bytes for d in indexed)
    # A source this indexer never saw (e.g. its APPEND failed before the scan)
    # has no rows; its points, if any, are still deleted below.
    with contextlib.suppress(NotFound):
        await services.repository.set_source_status(source_id, SourceStatus.REMOVING)
    collection = order.collection
    for name in dict.fromkeys(
        n for n in (collection.physical_collection, collection.staging_collection) if n
    ):
        if await services.store.collection_exists(name):
            await services.store.delete_points(name, {"source_id": source_id})
    ctx.figures.vectors, ctx.figures.bytes = vectors, freed
    ctx.figures.documents_total = len(documents)
    return StepOutput(
        {"vectors_removed": vectors},
        operation_events_pb2.RemoveSourceResult(
            source_id=source_id,
            documents_removed=len(documents),
            vectors_removed=vectors,
            bytes_freed=freed,
        ),
    )


async def remove_documents(ctx: StepContext) -> StepOutput:
    repository, order = ctx.services.repository, ctx.order
    removed = await repository.delete_documents_of_source(order.collection_id, order.source_id)
    with contextlib.suppress(NotFound):
        await repository.set_source_status(order.source_id, SourceStatus.REMOVED)
    ctx.figures.documents_done = removed
    return StepOutput({"documents_removed": removed})


async def finalize(ctx: StepContext) -> StepOutput:
    return StepOutput(await collection_figures(ctx))


REMOVE_SOURCE_STEPS: Sequence = (
    ("remove_points", remove_points),
    ("remove_documents", remove_documents),
    ("finalize", finalize),
)
