"""The indexer's REINDEX validation, as plain values: thresholds and their
defaults, probe sampling, top-k document overlap, score drift, point count,
the verdict with every figure, and the checkpoint ↔ ValidationResult round
trip the switch relies on."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from indexer.domain.validation import (
    DEFAULT_THRESHOLDS,
    Comparison,
    ProbeResult,
    ProbeSampler,
    Thresholds,
    check,
    drift,
    evaluate,
    overlap,
    point_count_deviation,
    probe_text,
    top_documents,
)
from indexer.operations.reindex import verdict
from indexer.validation import checkpoint_of, thresholds_of, validation_message
from vectorops.common.v1 import operation_pb2

THRESHOLDS = Thresholds(
    point_count_tolerance=0.0,
    min_topk_overlap=0.6,
    max_score_drift=0.25,
    probe_query_count=3,
    top_k=3,
)


def probe(live: tuple[str, ...], staging: tuple[str, ...], old: float, new: float) -> ProbeResult:
    return ProbeResult(live, staging, old, new)


def test_zero_thresholds_take_the_defaults_and_set_ones_stay() -> None:
    given = Thresholds(min_topk_overlap=1.01, top_k=3)
    merged = given.or_defaults(DEFAULT_THRESHOLDS)
    assert merged == Thresholds(
        point_count_tolerance=0.0,
        min_topk_overlap=1.01,
        max_score_drift=0.25,
        probe_query_count=20,
        top_k=3,
    )
    assert Thresholds().or_defaults(DEFAULT_THRESHOLDS) == DEFAULT_THRESHOLDS


def test_thresholds_come_from_the_command_message() -> None:
    message = operation_pb2.ValidationThresholds(min_topk_overlap=0.7, probe_query_count=5)
    assert thresholds_of(message) == Thresholds(min_topk_overlap=0.7, probe_query_count=5)


def test_overlap_compares_distinct_documents_of_the_top_k() -> None:
    assert top_documents(["a", "a", "b", "c", "b", "d"], 3) == ("a", "b", "c")
    assert overlap(("a", "b", "c"), ("c", "b", "x")) == pytest.approx(2 / 3)
    # A collection of fewer than k documents is not punished for it.
    assert overlap(("a", "b"), ("b", "a")) == 1.0
    assert overlap((), ()) == 1.0
    assert overlap(("a",), ()) == 0.0


def test_drift_is_the_absolute_top_score_difference_and_a_miss_scores_zero() -> None:
    assert drift(probe(("a",), ("a",), 0.9, 0.7)) == pytest.approx(0.2)
    assert drift(probe(("a",), ("a",), 0.6, 0.8)) == pytest.approx(0.2)
    assert drift(probe(("a",), (), 0.9, None)) == pytest.approx(0.9)


def test_point_count_deviation_is_relative_to_the_expected_count() -> None:
    assert point_count_deviation(100, 99) == pytest.approx(0.01)
    assert point_count_deviation(100, 100) == 0.0
    assert point_count_deviation(0, 0) == 0.0
    assert point_count_deviation(0, 3) == 3.0


def test_comparisons() -> None:
    assert check("x", 0.5, 0.6, Comparison.LESS_OR_EQUAL).passed
    assert not check("x", 0.7, 0.6, Comparison.LESS_OR_EQUAL).passed
    assert check("x", 0.6, 0.6, Comparison.GREATER_OR_EQUAL).passed
    assert not check("x", 0.0, 1.0, Comparison.EQUAL).passed


def test_a_sound_staging_collection_passes_with_every_figure_kept() -> None:
    probes = [
        probe(("a", "b", "c"), ("a", "b", "c"), 0.9, 0.85),
        probe(("b", "c", "d"), ("b", "c", "x"), 0.8, 0.9),
    ]
    result = evaluate(THRESHOLDS, 40, 40, probes, "green")
    assert result.passed and result.failed_checks() == []
    assert [c.name for c in result.checks] == [
        "point_count",
        "topk_overlap",
        "score_drift",
        "collection_status",
    ]
    assert result.topk_overlap == pytest.approx((1 + 2 / 3) / 2)
    assert result.score_drift == pytest.approx(0.075)
    assert (result.expected_point_count, result.actual_point_count) == (40, 40)
    assert result.probe_query_count == 2


@pytest.mark.parametrize(
    ("actual", "probes", "status", "failed"),
    [
        (39, [probe(("a",), ("a",), 0.9, 0.9)], "green", ["point_count"]),
        (40, [probe(("a", "b"), ("c", "d"), 0.9, 0.9)], "green", ["topk_overlap"]),
        (40, [probe(("a",), ("a",), 0.9, 0.5)], "green", ["score_drift"]),
        (40, [probe(("a",), ("a",), 0.9, 0.9)], "yellow", ["collection_status"]),
    ],
)
def test_each_check_fails_on_its_own(
    actual: int, probes: list[ProbeResult], status: str, failed: list[str]
) -> None:
    result = evaluate(THRESHOLDS, 40, actual, probes, status)
    assert not result.passed
    assert result.failed_checks() == failed


def test_an_empty_live_collection_has_nothing_to_probe() -> None:
    result = evaluate(THRESHOLDS, 0, 0, [], "green")
    assert result.passed
    assert result.probe_query_count == 0
    assert "no probe queries" in result.checks[1].detail


def test_probe_sampling_is_uniform_bounded_and_repeats_for_the_same_seed() -> None:
    texts = [f"text {i}" for i in range(500)]

    def draw(seed: str) -> list[str]:
        sampler = ProbeSampler(20, seed)
        for text in texts:
            sampler.offer(text)
        sampler.offer("   ")  # blank texts are never probes
        return sampler.texts

    first = draw("op-1")
    assert len(first) == 20 and len(set(first)) == 20
    assert first == draw("op-1")
    assert first != draw("op-2")
    assert any(int(t.split()[1]) >= 20 for t in first)  # not just the first ones seen
    few = ProbeSampler(20, "op-1")
    for text in texts[:5]:
        few.offer(text)
    assert few.texts == texts[:5]


def test_a_probe_is_the_first_words_of_a_chunk() -> None:
    assert probe_text("  one two\nthree four five ", 3) == "one two three"
    assert probe_text("short", 16) == "short"


def test_the_result_message_is_rebuilt_from_the_checkpoint() -> None:
    result = evaluate(THRESHOLDS, 40, 38, [probe(("a",), ("a",), 0.9, 0.8)], "green")
    when = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    checkpoint = checkpoint_of(result, when)
    assert checkpoint["passed"] is False
    assert checkpoint["validated_at"] == "2026-03-01T12:00:00+00:00"
    message = validation_message(checkpoint)
    assert not message.passed
    assert (message.expected_point_count, message.actual_point_count) == (40, 38)
    assert message.probe_query_count == 1
    assert message.thresholds.min_topk_overlap == pytest.approx(0.6)
    assert message.thresholds.top_k == 3
    assert message.validate_time.ToDatetime(tzinfo=UTC) == when
    [count, *_] = message.checks
    assert count.name == "point_count" and not count.passed
    assert count.measured == pytest.approx(0.05)
    assert count.comparison == operation_pb2.COMPARISON_LESS_OR_EQUAL
    assert count.detail == "38 points in staging, 40 expected"


def test_a_failed_validation_ends_the_operation_naming_what_failed() -> None:
    failed = checkpoint_of(
        evaluate(THRESHOLDS, 40, 40, [probe(("a",), ("b",), 0.9, 0.9)], "green"),
        datetime.now(UTC),
    )
    error = verdict("validation", failed)
    assert error is not None
    assert getattr(error, "reason", "") == "VALIDATION_FAILED"
    assert "topk_overlap 0 (threshold 0.6)" in str(error)
    passed = {**failed, "passed": True}
    assert verdict("validation", passed) is None
    assert verdict("staging", {"staging_collection": "x"}) is None
