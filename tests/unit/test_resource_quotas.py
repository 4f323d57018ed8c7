"""The resources domain: the admission check against quota, usage and live
reservations, update masks, and the estimate figures and method."""

from __future__ import annotations

import pytest

from kit.embedding_models import Quantization
from kit.errors import InvalidArgument
from resources.domain.estimates import (
    BYTES_PER_TOKEN,
    PAYLOAD_METADATA_BYTES,
    EstimateInput,
    estimate,
)
from resources.domain.quotas import (
    LIMITS,
    Demand,
    Held,
    Quota,
    Usage,
    Violation,
    admission_violations,
    check_limit_values,
    parse_update_mask,
)

QUOTA = Quota(
    owner_id="alice",
    max_collections=3,
    max_vectors=1000,
    max_stored_bytes=10_000,
    max_documents_per_operation=50,
    max_concurrent_operations=2,
)


def test_a_demand_that_fits_has_no_violations() -> None:
    usage = Usage("alice", collections=2, vectors=500, stored_bytes=4000)
    held = Held(operations=1, vectors=200, bytes=1000)
    demand = Demand(vectors=300, bytes=5000, documents=50, collections=1)
    assert admission_violations(QUOTA, usage, held, demand) == []


def test_usage_and_other_reservations_both_count_against_the_quota() -> None:
    usage = Usage("alice", vectors=500, stored_bytes=4000)
    held = Held(operations=1, vectors=400, bytes=5000)
    demand = Demand(vectors=101, bytes=1001)
    assert admission_violations(QUOTA, usage, held, demand) == [
        Violation("max_vectors", 1000, 900, 101),
        Violation("max_stored_bytes", 10_000, 9000, 1001),
    ]


def test_documents_per_operation_concurrency_and_collections_are_checked() -> None:
    usage = Usage("alice", collections=3)
    held = Held(operations=2)
    violations = admission_violations(QUOTA, usage, held, Demand(documents=51, collections=1))
    assert [v.limit for v in violations] == [
        "max_collections",
        "max_documents_per_operation",
        "max_concurrent_operations",
    ]
    assert violations[1] == Violation("max_documents_per_operation", 50, 0, 51)
    assert violations[2] == Violation("max_concurrent_operations", 2, 2, 1)


def test_collections_being_created_count_until_their_index_is_accounted() -> None:
    # Two creates at once: the first's INDEX holds a collection before any usage
    # event has counted it, so the second finds the limit reached.
    usage = Usage("alice", collections=2)
    held = Held(operations=1, collections=1)
    assert admission_violations(QUOTA, usage, held, Demand(collections=1)) == [
        Violation("max_collections", 3, 3, 1)
    ]
    assert admission_violations(QUOTA, usage, Held(operations=1), Demand(collections=1)) == []


def test_an_unlimited_quota_admits_anything() -> None:
    unlimited = Quota(owner_id="bob")
    huge = Demand(vectors=10**12, bytes=10**15, documents=10**9, collections=1)
    assert admission_violations(unlimited, Usage("bob", vectors=10**12), Held(9, 9, 9), huge) == []


def test_a_violation_describes_limit_usage_and_request() -> None:
    text = Violation("max_vectors", 1000, 900, 101).describe()
    assert "max_vectors" in text and "1000" in text and "900" in text and "101" in text


def test_update_mask_names_limits_or_star() -> None:
    assert parse_update_mask(["max_vectors", "max_collections"]) == [
        "max_vectors",
        "max_collections",
    ]
    assert parse_update_mask(["*"]) == list(LIMITS)
    with pytest.raises(InvalidArgument) as caught:
        parse_update_mask(["max_vectors", "owner_id"])
    assert caught.value.field_violations[0].field == "update_mask"
    with pytest.raises(InvalidArgument):
        parse_update_mask([])


def test_negative_limits_are_refused_and_unlimited_is_allowed() -> None:
    check_limit_values({"max_vectors": None, "max_collections": 0})
    with pytest.raises(InvalidArgument) as caught:
        check_limit_values({"max_vectors": -1})
    assert caught.value.field_violations[0].field == "quota.max_vectors"


def test_estimate_from_known_document_sizes() -> None:
    # 10 documents of 8 KiB: 2048 tokens each; chunks of 512 with 64 overlap
    # → (2048 - 64) / 448 ≈ 4.43 chunks per document → 45 vectors.
    figures = estimate(
        EstimateInput(
            documents=10,
            dimension=384,
            total_document_bytes=10 * 8192,
            chunk_tokens=512,
            overlap_tokens=64,
        )
    )
    assert figures.vectors == 45
    per_vector = 384 * 4 + 512 * BYTES_PER_TOKEN + PAYLOAD_METADATA_BYTES
    assert figures.bytes == 45 * per_vector
    assert figures.documents == 10
    assert "4.43 chunks/doc" in figures.method
    assert "384 dims x 4 B float32" in figures.method
    assert "given" in figures.method


def test_estimate_assumes_a_document_size_and_follows_the_quantization() -> None:
    figures = estimate(EstimateInput(documents=100, dimension=384, quantization=Quantization.INT8))
    # 4 KiB → 1024 tokens at the default 512-token chunks → 2 chunks per document.
    assert figures.vectors == 200
    assert figures.bytes == 200 * (384 * 1 + 512 * BYTES_PER_TOKEN + PAYLOAD_METADATA_BYTES)
    assert "assumed" in figures.method and "int8" in figures.method


def test_a_short_document_is_still_one_chunk() -> None:
    figures = estimate(EstimateInput(documents=3, dimension=8, total_document_bytes=30))
    assert figures.vectors == 3


@pytest.mark.parametrize(
    ("given", "field"),
    [
        (EstimateInput(documents=-1, dimension=384), "document_count"),
        (EstimateInput(documents=1, dimension=0), "dimension"),
        (
            EstimateInput(documents=1, dimension=8, chunk_tokens=64, overlap_tokens=64),
            "chunk_overlap",
        ),
    ],
)
def test_bad_estimate_inputs_are_refused(given: EstimateInput, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        estimate(given)
    assert [v.field for v in caught.value.field_violations] == [field]
