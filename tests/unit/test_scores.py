"""Merging the hits of several collections: per-list min–max normalisation, then
one ranking by normalised score with deterministic tie-breaks."""

from __future__ import annotations

import math

import pytest

from indexer.domain.scores import merge, normalise


def test_normalise_maps_best_to_one_and_worst_to_zero_in_proportion() -> None:
    assert normalise([0.9, 0.7, 0.5]) == pytest.approx([1.0, 0.5, 0.0])
    # Scale and offset do not matter: a dot-product list normalises the same.
    assert normalise([90.0, 70.0, 50.0]) == pytest.approx(normalise([0.9, 0.7, 0.5]))
    # Negative scores (cosine can be below 0) are fine.
    assert normalise([-0.1, -0.3]) == pytest.approx([1.0, 0.0])


def test_normalise_of_indistinguishable_scores_is_all_ones() -> None:
    assert normalise([]) == []
    assert normalise([0.42]) == [1.0]
    assert normalise([0.3, 0.3, 0.3]) == [1.0, 1.0, 1.0]


def test_normalise_refuses_non_finite_scores() -> None:
    with pytest.raises(ValueError):
        normalise([0.5, math.nan])
    with pytest.raises(ValueError):
        normalise([math.inf, 0.1])


def test_merge_lets_a_low_scale_model_compete_with_a_high_scale_one() -> None:
    # Model A scores around 0.8, model B around 0.3: by raw score B would never
    # appear; after normalisation B's clear winner ranks beside A's.
    a = [("a1", 0.82), ("a2", 0.80), ("a3", 0.79), ("a4", 0.70)]
    b = [("b1", 0.35), ("b2", 0.20), ("b3", 0.19)]
    merged = merge([a, b], lambda hit: hit[1], top_k=4)
    names = [r.item[0] for r in merged]
    assert names == ["a1", "b1", "a2", "a3"]
    by_raw = sorted(a + b, key=lambda hit: -hit[1])[:4]
    assert "b1" not in [hit[0] for hit in by_raw]  # what merging by raw score would lose
    assert merged[1].list_index == 1 and merged[1].rank == 0
    assert merged[1].raw_score == pytest.approx(0.35)
    assert merged[1].normalised_score == pytest.approx(1.0)


def test_merge_keeps_each_lists_order_and_cuts_at_top_k() -> None:
    a = [("a1", 0.9), ("a2", 0.6), ("a3", 0.3)]
    b = [("b1", 5.0), ("b2", 4.0), ("b3", 1.0)]
    merged = merge([a, b], lambda hit: hit[1], top_k=5)
    assert len(merged) == 5
    for prefix in ("a", "b"):
        ranks = [r.rank for r in merged if r.item[0].startswith(prefix)]
        assert ranks == sorted(ranks)
    assert [r.item[0] for r in merge([a, b], lambda hit: hit[1], top_k=0)] == []


def test_merge_ties_break_by_raw_score_then_list_order_then_rank() -> None:
    # Both lists' best normalise to 1: the higher raw score goes first.
    first = merge([[("x", 0.4)], [("y", 0.7)]], lambda hit: hit[1], top_k=2)
    assert [r.item[0] for r in first] == ["y", "x"]
    # Same raw score as well: the list given first wins, deterministically.
    tied = merge([[("p", 0.5)], [("q", 0.5)]], lambda hit: hit[1], top_k=2)
    assert [r.item[0] for r in tied] == ["p", "q"]
    equal_in_one_list = merge([[("r0", 0.5), ("r1", 0.5)]], lambda hit: hit[1], top_k=2)
    assert [r.item[0] for r in equal_in_one_list] == ["r0", "r1"]


def test_merge_of_nothing_is_empty_and_negative_top_k_is_a_bug() -> None:
    assert merge([], lambda hit: hit, top_k=10) == []
    assert merge([[], []], lambda hit: hit, top_k=10) == []
    with pytest.raises(ValueError):
        merge([[1.0]], lambda hit: hit, top_k=-1)
