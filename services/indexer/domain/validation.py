"""The checks a REINDEX staging collection must pass before the switch, as plain
values: thresholds, probe sampling, top-k overlap, score drift, point count, and
the verdict with every measured figure. No I/O: ``indexer.validation`` measures,
this decides.

Probes compare *documents*, not points: each side's top-k is its first k
distinct ``document_id`` values in rank order, since a reindex that changes the
chunking changes how many chunks of one document crowd the top points. The
overlap of one probe is ``|A ∩ B| / max(|A|, |B|)``, which is ``|A ∩ B| / k``
whenever both sides found k documents, and does not punish a collection that
holds fewer than k.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from typing import Any

POINT_COUNT = "point_count"
TOPK_OVERLAP = "topk_overlap"
SCORE_DRIFT = "score_drift"
COLLECTION_STATUS = "collection_status"
GREEN = "green"


class Comparison(StrEnum):
    LESS_OR_EQUAL = "LESS_OR_EQUAL"
    GREATER_OR_EQUAL = "GREATER_OR_EQUAL"
    EQUAL = "EQUAL"

    def passes(self, measured: float, threshold: float) -> bool:
        if self is Comparison.LESS_OR_EQUAL:
            return measured <= threshold
        if self is Comparison.GREATER_OR_EQUAL:
            return measured >= threshold
        return measured == threshold


@dataclass(frozen=True)
class Thresholds:
    """What the staging collection must meet (``ValidationThresholds``)."""

    point_count_tolerance: float = 0.0
    min_topk_overlap: float = 0.0
    max_score_drift: float = 0.0
    probe_query_count: int = 0
    top_k: int = 0

    def or_defaults(self, defaults: Thresholds) -> Thresholds:
        """Each value left at zero takes the default's (a command's zeros mean
        "the indexer's defaults")."""
        return replace(
            self,
            **{
                f.name: getattr(defaults, f.name) for f in fields(self) if not getattr(self, f.name)
            },
        )

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


# The same figures as the orchestrator's defaults.
DEFAULT_THRESHOLDS = Thresholds(
    point_count_tolerance=0.0,
    min_topk_overlap=0.6,
    max_score_drift=0.25,
    probe_query_count=20,
    top_k=10,
)


@dataclass(frozen=True)
class Check:
    """One check with its measured value and threshold (``ValidationCheck``)."""

    name: str
    passed: bool
    measured: float
    threshold: float
    comparison: Comparison
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "comparison": str(self.comparison)}


def check(
    name: str, measured: float, threshold: float, comparison: Comparison, detail: str = ""
) -> Check:
    return Check(
        name, comparison.passes(measured, threshold), measured, threshold, comparison, detail
    )


# --- probes ------------------------------------------------------------------------------


def probe_text(text: str, max_words: int) -> str:
    """A query made of a live chunk: its first ``max_words`` words. Shorter than
    any chunk, so neither side is favoured by holding the probe as one point."""
    return " ".join(text.split()[:max_words])


class ProbeSampler:
    """A uniform sample of ``count`` texts from a stream of any length (reservoir
    sampling), the same for the same ``seed`` and stream: a resumed validation
    probes with the texts the first run chose."""

    def __init__(self, count: int, seed: str) -> None:
        self._count = max(count, 0)
        self._random = random.Random(seed)
        self._seen = 0
        self._sample: list[str] = []

    def offer(self, text: str) -> None:
        if not text.strip() or self._count == 0:
            return
        self._seen += 1
        if len(self._sample) < self._count:
            self._sample.append(text)
            return
        slot = self._random.randrange(self._seen)
        if slot < self._count:
            self._sample[slot] = text

    @property
    def texts(self) -> list[str]:
        return list(self._sample)


@dataclass(frozen=True)
class ProbeResult:
    """What one probe found on each side: distinct document ids best first (at
    most k), and the score of the top hit (None when nothing was found)."""

    live_documents: tuple[str, ...]
    staging_documents: tuple[str, ...]
    live_top_score: float | None
    staging_top_score: float | None


def top_documents(document_ids: Iterable[str], k: int) -> tuple[str, ...]:
    """The first ``k`` distinct document ids of ranked hits."""
    return tuple(dict.fromkeys(document_ids))[:k]


def overlap(live: Sequence[str], staging: Sequence[str]) -> float:
    """Share of documents both sides rank in their top k (1.0 when both found none)."""
    larger = max(len(live), len(staging))
    if larger == 0:
        return 1.0
    return len(set(live) & set(staging)) / larger


def drift(probe: ProbeResult) -> float:
    """Absolute difference of the top scores; a side with no hit scores 0."""
    return abs((probe.live_top_score or 0.0) - (probe.staging_top_score or 0.0))


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def point_count_deviation(expected: int, actual: int) -> float:
    """|actual − expected| relative to expected (to 1 when none are expected)."""
    return abs(actual - expected) / max(expected, 1)


# --- the verdict -------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Every check, the thresholds in force and the figures measured."""

    passed: bool
    checks: tuple[Check, ...]
    thresholds: Thresholds
    expected_point_count: int
    actual_point_count: int
    probe_query_count: int
    topk_overlap: float
    score_drift: float
    point_count_deviation: float
    staging_status: str

    def failed_checks(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    def checkpoint(self) -> dict[str, Any]:
        """The validation step's checkpoint: ``passed`` (what the switch reads)
        and every measured value, JSON-ready."""
        return {
            "passed": self.passed,
            "expected_point_count": self.expected_point_count,
            "actual_point_count": self.actual_point_count,
            "probe_query_count": self.probe_query_count,
            "topk_overlap": self.topk_overlap,
            "score_drift": self.score_drift,
            "point_count_deviation": self.point_count_deviation,
            "staging_status": self.staging_status,
            "thresholds": self.thresholds.to_dict(),
            "checks": [c.to_dict() for c in self.checks],
        }


def evaluate(
    thresholds: Thresholds,
    expected_points: int,
    actual_points: int,
    probes: Sequence[ProbeResult],
    staging_status: str,
) -> Verdict:
    """Judge the staging collection. With no probe (a live collection without
    points) the probe checks pass: there is nothing to compare."""
    deviation = point_count_deviation(expected_points, actual_points)
    mean_overlap = mean([overlap(p.live_documents, p.staging_documents) for p in probes])
    mean_drift = mean([drift(p) for p in probes])
    if not probes:
        mean_overlap, mean_drift = 1.0, 0.0
    probe_note = f"{len(probes)} probe queries, top {thresholds.top_k} documents"
    checks = (
        check(
            POINT_COUNT,
            deviation,
            thresholds.point_count_tolerance,
            Comparison.LESS_OR_EQUAL,
            f"{actual_points} points in staging, {expected_points} expected",
        ),
        check(
            TOPK_OVERLAP,
            mean_overlap,
            thresholds.min_topk_overlap,
            Comparison.GREATER_OR_EQUAL,
            probe_note if probes else "no probe queries: the live collection has no points",
        ),
        check(
            SCORE_DRIFT,
            mean_drift,
            thresholds.max_score_drift,
            Comparison.LESS_OR_EQUAL,
            f"mean absolute top-1 score difference over {len(probes)} probe queries",
        ),
        check(
            COLLECTION_STATUS,
            1.0 if staging_status == GREEN else 0.0,
            1.0,
            Comparison.EQUAL,
            f"staging status {staging_status}",
        ),
    )
    return Verdict(
        passed=all(c.passed for c in checks),
        checks=checks,
        thresholds=thresholds,
        expected_point_count=expected_points,
        actual_point_count=actual_points,
        probe_query_count=len(probes),
        topk_overlap=mean_overlap,
        score_drift=mean_drift,
        point_count_deviation=deviation,
        staging_status=staging_status,
    )
