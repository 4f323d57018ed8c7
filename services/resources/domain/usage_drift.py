"""Reconciling usage: what usage events recorded for an owner against what the
indexer measures, and the usage that replaces it.

Pure: figures in, figures out. The indexer's figures are the truth: the owner
has exactly the collections it knows (from their INDEX on, until a DELETE
completes), with the documents, vectors and bytes its records count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from resources.domain.quotas import CollectionUsage, Usage


@dataclass(frozen=True)
class CollectionDrift:
    """A collection whose recorded figures differ from the measured ones; None
    on a side that has no figures for it."""

    collection_id: str
    recorded: CollectionUsage | None
    measured: CollectionUsage | None


@dataclass(frozen=True)
class Reconciliation:
    """One reconciliation of an owner's usage: before, after, and what drifted."""

    before: Usage
    recorded: list[CollectionUsage]
    after: Usage
    measured: list[CollectionUsage]
    drifted: list[CollectionDrift]


def _figures(usage: CollectionUsage | None) -> tuple[int, int, int]:
    if usage is None:
        return 0, 0, 0
    return usage.vectors, usage.stored_bytes, usage.documents


def drifted_collections(
    recorded: Sequence[CollectionUsage], measured: Sequence[CollectionUsage]
) -> list[CollectionDrift]:
    """The collections, by id, whose figures differ. A recorded row of zeros the
    indexer does not know is no drift: it is what a completed DELETE leaves."""
    recorded_by_id = {usage.collection_id: usage for usage in recorded}
    measured_by_id = {usage.collection_id: usage for usage in measured}
    drifts = []
    for collection_id in sorted(recorded_by_id.keys() | measured_by_id.keys()):
        was, truth = recorded_by_id.get(collection_id), measured_by_id.get(collection_id)
        if _figures(was) != _figures(truth):
            drifts.append(CollectionDrift(collection_id, was, truth))
    return drifts


def measured_usage(owner_id: str, measured: Sequence[CollectionUsage]) -> Usage:
    """The owner's usage as the indexer's figures make it up."""
    return Usage(
        owner_id=owner_id,
        collections=len(measured),
        vectors=sum(usage.vectors for usage in measured),
        stored_bytes=sum(usage.stored_bytes for usage in measured),
        documents=sum(usage.documents for usage in measured),
    )
