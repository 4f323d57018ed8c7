"""Validation, the fourth checkpoint of a REINDEX: measure the staging
collection against the live one; ``indexer.domain.validation`` judges.

- the staging collection is optimised (its index built, as it will serve) and
  must then be green;
- its exact point count is compared with the points the reprocessing recorded;
- probe queries: texts sampled from the live collection's points (through its
  alias, so what serves now), the same sample for the same operation; each
  embedded fresh with each side's own model and instruction (the live config's
  for the live collection, the target's for staging) and searched on its side;
  the top-k documents and the top scores are compared.

Also the conversions between the verdict, its checkpoint and the
``ValidationResult`` message: the message is built from the checkpoint, so the
switch can rebuild exactly what validation announced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from indexer.adapters.embedder_client import QueryEmbeddings
from indexer.adapters.vector_store import VectorStore
from indexer.domain.validation import (
    Comparison,
    ProbeResult,
    ProbeSampler,
    Thresholds,
    Verdict,
    evaluate,
    probe_text,
    top_documents,
)
from indexer.operations.base import StepCancelled
from indexer.search import QueryEmbedder
from kit.errors import Unavailable
from kit.logs import get_logger
from vectorops.common.v1 import operation_pb2

log = get_logger(__name__)

_SCROLL_PAGE = 256
_EMBED_BATCH = 16  # probe texts per Embed call, well under the embedder's limit
# Waits before an Embed that found the embedder away is tried again: half a minute
# in all, what a restarting embedder needs.
_EMBEDDER_RETRY_DELAYS_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
_EMBEDDER_UNAVAILABLE = "EMBEDDER_UNAVAILABLE"
# Hits fetched per probe to find k distinct documents: a document's chunks may
# crowd the top points, more so with smaller chunks.
_HITS_PER_DOCUMENT = 8
_MAX_HITS = 256


@dataclass(frozen=True)
class Side:
    """One collection to probe: its name (or alias) and the model and
    instruction its points were embedded with."""

    name: str
    model: str
    instruction: str | None

    @classmethod
    def of(cls, name: str, config: Mapping[str, Any]) -> Side:
        instruction = config.get("instruction")
        return cls(
            name=name,
            model=str(config.get("embedding_model") or ""),
            instruction=instruction if isinstance(instruction, str) else None,
        )


class Validator:
    def __init__(
        self,
        store: VectorStore,
        queries: QueryEmbedder,
        *,
        probe_words: int,
        scan_points: int,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        self._store = store
        self._queries = queries
        self._probe_words = probe_words
        self._scan_points = scan_points
        self._cancelled = cancelled

    async def validate(
        self,
        live: Side,
        staging: Side,
        thresholds: Thresholds,
        expected_points: int,
        seed: str,
    ) -> Verdict:
        await self._store.optimize(staging.name)  # returns once built: green, or red
        self._check_cancelled()
        status = (await self._store.collection_info(staging.name)).status
        actual = await self._store.count(staging.name, exact=True)
        texts = await self.sample(live.name, thresholds.probe_query_count, seed)
        self._check_cancelled()
        probes = await self.probe(texts, live, staging, thresholds.top_k)
        return evaluate(thresholds, expected_points, actual, probes, str(status))

    async def sample(self, live: str, count: int, seed: str) -> list[str]:
        """``count`` probe texts from the live points' ``text`` payloads, drawn
        from at most ``scan_points`` of them (in point id order, so the draw
        repeats for the same seed)."""
        sampler = ProbeSampler(count, seed)
        offset: str | None = None
        scanned = 0
        while scanned < self._scan_points:
            limit = min(_SCROLL_PAGE, self._scan_points - scanned)
            page = await self._store.scroll(live, limit=limit, offset=offset)
            for point in page.points:
                text = str((point.payload or {}).get("text") or "")
                sampler.offer(probe_text(text, self._probe_words))
            scanned += len(page.points)
            if page.next_offset is None:
                break
            offset = page.next_offset
        return sampler.texts

    async def probe(
        self, texts: Sequence[str], live: Side, staging: Side, top_k: int
    ) -> list[ProbeResult]:
        live_hits = await self._search_all(live, texts, top_k)
        staging_hits = await self._search_all(staging, texts, top_k)
        return [
            ProbeResult(
                live_documents=old[0],
                staging_documents=new[0],
                live_top_score=old[1],
                staging_top_score=new[1],
            )
            for old, new in zip(live_hits, staging_hits, strict=True)
        ]

    async def _search_all(
        self, side: Side, texts: Sequence[str], top_k: int
    ) -> list[tuple[tuple[str, ...], float | None]]:
        """Per text: the first ``top_k`` distinct documents found on ``side`` and
        the top score."""
        found: list[tuple[tuple[str, ...], float | None]] = []
        limit = min(top_k * _HITS_PER_DOCUMENT, _MAX_HITS)
        for start in range(0, len(texts), _EMBED_BATCH):
            self._check_cancelled()
            batch = list(texts[start : start + _EMBED_BATCH])
            embedded = await self._embed(side, batch)
            for vector in embedded.vectors:
                hits = await self._store.search(side.name, np.asarray(vector), limit)
                documents = top_documents(
                    (str((hit.payload or {}).get("document_id", "")) for hit in hits), top_k
                )
                found.append((documents, hits[0].score if hits else None))
        return found

    async def _embed(self, side: Side, batch: list[str]) -> QueryEmbeddings:
        """The probes' vectors, waiting out an embedder that is briefly away (a
        restart): the probes are a few texts, and failing the whole reindex for
        a blip would throw its reprocessing away. Past the retries it fails."""
        delays = iter(_EMBEDDER_RETRY_DELAYS_SECONDS)
        while True:
            try:
                return await self._queries.embed_queries(
                    side.model, batch, instruction=side.instruction, field="probe"
                )
            except Unavailable as error:
                delay = next(delays, None)
                if error.reason != _EMBEDDER_UNAVAILABLE or delay is None:
                    raise
                log.info("validation.embedder_retry", delay=delay, error=error.message)
            await asyncio.sleep(delay)
            self._check_cancelled()

    def _check_cancelled(self) -> None:
        if self._cancelled():
            raise StepCancelled("the operation was cancelled during validation")


# --- messages ------------------------------------------------------------------------------


def thresholds_of(message: operation_pb2.ValidationThresholds) -> Thresholds:
    return Thresholds(
        point_count_tolerance=message.point_count_tolerance,
        min_topk_overlap=message.min_topk_overlap,
        max_score_drift=message.max_score_drift,
        probe_query_count=message.probe_query_count,
        top_k=message.top_k,
    )


def checkpoint_of(verdict: Verdict, validated_at: datetime) -> dict[str, Any]:
    """The validation checkpoint: the verdict's figures and when it was reached."""
    return {**verdict.checkpoint(), "validated_at": validated_at.astimezone(UTC).isoformat()}


def validation_message(checkpoint: Mapping[str, Any]) -> operation_pb2.ValidationResult:
    """The ``ValidationResult`` a validation checkpoint records (for the step's
    result, and for CompleteReindex)."""
    thresholds = checkpoint.get("thresholds") or {}
    when = Timestamp()
    if checkpoint.get("validated_at"):
        when.FromDatetime(datetime.fromisoformat(str(checkpoint["validated_at"])))
    return operation_pb2.ValidationResult(
        passed=bool(checkpoint.get("passed")),
        checks=[_check_message(c) for c in checkpoint.get("checks") or ()],
        thresholds=operation_pb2.ValidationThresholds(
            point_count_tolerance=float(thresholds.get("point_count_tolerance", 0.0)),
            min_topk_overlap=float(thresholds.get("min_topk_overlap", 0.0)),
            max_score_drift=float(thresholds.get("max_score_drift", 0.0)),
            probe_query_count=int(thresholds.get("probe_query_count", 0)),
            top_k=int(thresholds.get("top_k", 0)),
        ),
        expected_point_count=int(checkpoint.get("expected_point_count", 0)),
        actual_point_count=int(checkpoint.get("actual_point_count", 0)),
        probe_query_count=int(checkpoint.get("probe_query_count", 0)),
        validate_time=when,
    )


def _check_message(check: Mapping[str, Any]) -> operation_pb2.ValidationCheck:
    comparison = Comparison(str(check["comparison"]))
    return operation_pb2.ValidationCheck(
        name=str(check["name"]),
        passed=bool(check["passed"]),
        measured=float(check["measured"]),
        threshold=float(check["threshold"]),
        comparison=operation_pb2.Comparison.Value(f"COMPARISON_{comparison}"),
        detail=str(check.get("detail", "")),
    )
