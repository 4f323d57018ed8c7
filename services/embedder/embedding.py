"""Embedding requests, from validation to vectors: the application layer between the
servicer / work-queue worker and Triton.

Inputs are checked one by one (a bad one fails alone), split into batches the
model accepts, sent concurrently within the in-flight bound of their priority,
and a batch the model rejects is bisected so only the inputs that break it fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

import numpy as np

from embedder import metrics
from embedder.adapters.triton_client import TritonModelError, TritonTimeout, TritonUnavailable
from embedder.domain.inputs import INFERENCE_FAILED, InputFailure, batch_ranges, prepare
from embedder.domain.models import ModelRegistry, ModelSpec
from kit.errors import (
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from kit.logs import get_logger

log = get_logger(__name__)


class Priority(IntEnum):
    """Triton dynamic-batcher priority levels (1 is served first)."""

    QUERY = 1
    BULK = 2


class EmbeddingBackend(Protocol):
    async def embed(
        self, model: str, texts: Sequence[str], *, priority: int, timeout_s: float | None
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class EmbedOutcome:
    model: ModelSpec
    vectors: dict[int, np.ndarray]  # request position → float32 vector
    failures: list[InputFailure]


@dataclass(frozen=True)
class Limits:
    max_texts: int
    max_request_chars: int
    max_in_flight_bulk: int
    max_in_flight_queries: int
    query_queue_seconds: float
    triton_timeout_seconds: float


class Embedder:
    def __init__(self, registry: ModelRegistry, backend: EmbeddingBackend, limits: Limits) -> None:
        self.registry = registry
        self._backend = backend
        self._limits = limits
        self._slots = {
            Priority.QUERY: asyncio.Semaphore(limits.max_in_flight_queries),
            Priority.BULK: asyncio.Semaphore(limits.max_in_flight_bulk),
        }

    async def embed(
        self,
        model_name: str,
        texts: Sequence[str],
        *,
        is_query: bool,
        instruction: str | None = None,
        normalize: bool | None = None,
        priority: Priority,
        path: str,
    ) -> EmbedOutcome:
        model = self.registry.get(model_name)
        self._check_size(texts)
        prepared = prepare(texts, model, is_query=is_query, instruction=instruction)
        vectors: dict[int, np.ndarray] = {}
        failures = list(prepared.failures)
        started = time.perf_counter()

        async def run(batch: range) -> None:
            batch_texts = [prepared.texts[i] for i in batch]
            results = await self._embed_isolating_failures(model, batch_texts, priority)
            for offset, result in zip(batch, results, strict=True):
                position = prepared.indexes[offset]
                if isinstance(result, str):
                    failures.append(InputFailure(position, INFERENCE_FAILED, result))
                else:
                    vectors[position] = result

        await asyncio.gather(
            *(run(batch) for batch in batch_ranges(len(prepared.texts), model.max_batch_size))
        )
        if normalize:
            for position, vector in vectors.items():
                norm = float(np.linalg.norm(vector))
                vectors[position] = vector / norm if norm > 0 else vector
        failures.sort(key=lambda failure: failure.index)
        metrics.observe_request(model.name, path, len(vectors), failures, started)
        return EmbedOutcome(model, vectors, failures)

    def _check_size(self, texts: Sequence[str]) -> None:
        limits = self._limits
        if not texts:
            raise InvalidArgument(
                "texts is empty",
                reason="INVALID_ARGUMENT",
                metadata={"field": "texts"},
                field_violations=[FieldViolation("texts", "at least one text is required")],
            )
        if len(texts) > limits.max_texts:
            raise InvalidArgument(
                f"{len(texts)} texts in one request; at most {limits.max_texts}",
                reason="REQUEST_TOO_LARGE",
                metadata={"field": "texts", "limit": str(limits.max_texts)},
                field_violations=[
                    FieldViolation("texts", f"at most {limits.max_texts} texts per request")
                ],
            )
        characters = sum(len(text) for text in texts)
        if characters > limits.max_request_chars:
            raise InvalidArgument(
                f"{characters} characters in one request; at most {limits.max_request_chars}",
                reason="REQUEST_TOO_LARGE",
                metadata={"field": "texts", "limit": str(limits.max_request_chars)},
                field_violations=[
                    FieldViolation(
                        "texts", f"at most {limits.max_request_chars} characters per request"
                    )
                ],
            )

    async def _embed_isolating_failures(
        self, model: ModelSpec, texts: list[str], priority: Priority
    ) -> list[np.ndarray | str]:
        """Vectors for ``texts``; where the model fails, bisect until the failing
        inputs stand alone, and give their error message in their place."""
        try:
            vectors = await self._call(model, texts, priority)
        except TritonModelError as error:
            if len(texts) == 1:
                return [str(error)[:500]]
            middle = len(texts) // 2
            halves = await asyncio.gather(
                self._embed_isolating_failures(model, texts[:middle], priority),
                self._embed_isolating_failures(model, texts[middle:], priority),
            )
            return [*halves[0], *halves[1]]
        return list(vectors)

    async def _call(self, model: ModelSpec, texts: list[str], priority: Priority) -> np.ndarray:
        slots = self._slots[priority]
        if priority is Priority.QUERY:
            try:
                await asyncio.wait_for(slots.acquire(), self._limits.query_queue_seconds)
            except TimeoutError:
                raise ResourceExhausted(
                    "the embedder is at its limit of queries in flight; retry shortly",
                    reason="EMBEDDER_OVERLOADED",
                    metadata={"limit": str(self._limits.max_in_flight_queries)},
                ) from None
        else:
            await slots.acquire()
        metrics.IN_FLIGHT.labels(priority.name.lower()).inc()
        started = time.perf_counter()
        try:
            vectors = await self._backend.embed(
                model.triton_model,
                texts,
                priority=int(priority),
                timeout_s=self._limits.triton_timeout_seconds,
            )
        except TritonUnavailable as error:
            raise Unavailable(
                f"the embedding backend is unavailable: {error}",
                reason="EMBEDDER_UNAVAILABLE",
            ) from error
        except TritonTimeout as error:
            raise DeadlineExceeded(
                f"the embedding backend did not answer in time: {error}",
                reason="EMBEDDER_TIMEOUT",
            ) from error
        finally:
            slots.release()
            metrics.IN_FLIGHT.labels(priority.name.lower()).dec()
        metrics.BATCH_SECONDS.labels(model.name, priority.name.lower()).observe(
            time.perf_counter() - started
        )
        if vectors.shape != (len(texts), model.dimension):
            raise TritonModelError(
                f"{model.triton_model} returned shape {vectors.shape}, "
                f"expected ({len(texts)}, {model.dimension})"
            )
        return vectors.astype(np.float32, copy=False)
