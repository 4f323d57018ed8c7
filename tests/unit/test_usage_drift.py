"""Reconciling usage: which collections drifted between what usage events
recorded and what the indexer measures, and the owner's usage from the
measured figures."""

from __future__ import annotations

from resources.domain.quotas import CollectionUsage, Usage
from resources.domain.usage_drift import CollectionDrift, drifted_collections, measured_usage


def test_collections_whose_figures_differ_drifted_on_either_side() -> None:
    same = CollectionUsage("c-same", vectors=10, stored_bytes=400, documents=2)
    wrong = CollectionUsage("c-wrong", vectors=999, stored_bytes=5, documents=1)
    truth = CollectionUsage("c-wrong", vectors=12, stored_bytes=480, documents=3)
    unknown = CollectionUsage("c-gone", vectors=7, stored_bytes=70, documents=1)
    unrecorded = CollectionUsage("c-new", vectors=4, stored_bytes=40, documents=1)
    drifts = drifted_collections([same, wrong, unknown], [same, truth, unrecorded])
    assert drifts == [
        CollectionDrift("c-gone", unknown, None),
        CollectionDrift("c-new", None, unrecorded),
        CollectionDrift("c-wrong", wrong, truth),
    ]


def test_zeros_are_no_drift_whichever_side_lacks_the_collection() -> None:
    deleted = CollectionUsage("c-deleted")  # the row a completed DELETE leaves at zero
    failed_index = CollectionUsage("c-error")  # an ERROR collection with no documents
    assert drifted_collections([deleted], []) == []
    assert drifted_collections([], [failed_index]) == []


def test_the_measured_usage_counts_every_collection_the_indexer_knows() -> None:
    measured = [
        CollectionUsage("a", vectors=10, stored_bytes=400, documents=2),
        CollectionUsage("b"),
        CollectionUsage("c", vectors=5, stored_bytes=100, documents=1),
    ]
    assert measured_usage("alice", measured) == Usage(
        owner_id="alice", collections=3, vectors=15, stored_bytes=500, documents=3
    )
    assert measured_usage("bob", []) == Usage(owner_id="bob")
