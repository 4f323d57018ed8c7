"""Merging the hits of several collections into one ranking (SearchMulti).

Collections may use different models, and a raw score means little outside its
model: cosine similarities of one model cluster around 0.3, another's around 0.8,
and a dot product is not even bounded. So each collection's candidate list is
put on the same 0..1 scale before the lists are merged:

- **min–max within each list**: the list's best hit scores 1, its worst 0, the
  rest in proportion to their raw score. This keeps the shape of each list
  (a clear winner stays well ahead of its runner-up) while ignoring the scale.
  A list whose hits all score the same (one hit, or ties) scores 1 throughout:
  there is nothing to tell them apart.
- **merge** by normalised score, best first. Equal normalised scores (each
  list's best is 1) are ordered by raw score, then by the order the lists were
  given and the rank within the list, so the result is deterministic.

Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


def normalise(scores: Sequence[float]) -> list[float]:
    """Min–max scaling of one list's raw scores to 0..1 (best 1, worst 0); all 1
    when the scores do not differ."""
    if not scores:
        return []
    if any(not math.isfinite(score) for score in scores):
        raise ValueError("scores must be finite numbers")
    low, high = min(scores), max(scores)
    if high == low:
        return [1.0] * len(scores)
    span = high - low
    return [(score - low) / span for score in scores]


@dataclass(frozen=True, slots=True)
class Ranked(Generic[T]):
    """One merged item, where it came from and its normalised score."""

    item: T
    list_index: int
    rank: int
    raw_score: float
    normalised_score: float


def merge(lists: Sequence[Sequence[T]], score: Callable[[T], float], top_k: int) -> list[Ranked[T]]:
    """The ``top_k`` best items of all ``lists``, after normalising each list's
    scores on its own (see the module docstring)."""
    if top_k < 0:
        raise ValueError("top_k must not be negative")
    ranked: list[Ranked[T]] = []
    for list_index, items in enumerate(lists):
        raw = [float(score(item)) for item in items]
        for rank, (item, raw_score, scaled) in enumerate(
            zip(items, raw, normalise(raw), strict=True)
        ):
            ranked.append(Ranked(item, list_index, rank, raw_score, scaled))
    ranked.sort(key=lambda r: (-r.normalised_score, -r.raw_score, r.list_index, r.rank))
    return ranked[:top_k]
