"""Embedding requests, from validation to vectors: the application layer between the
servicer / work-queue worker and Triton.

Inputs are checked one by one (a bad one fails alone), split into batches the
model accepts, sent concurrently within the in-flight bound of their priority,
and a batch the model rejects is bisected so only the inputs that break it fail.
Inputs that come with their token ids (work-queue chunks) reach the model as ids,
so it does not tokenize them again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Protocol, TypeVar

import numpy as np

from embedder import metrics
from embedder.adapters.triton_client import (
    Embeddings,
    TritonModelError,
    TritonTimeout,
    TritonUnavailable,
)
from embedder.domain.inputs import (
    INFERENCE_FAILED,
    INPUT_TOO_LONG,
    InputFailure,
    batch_ranges,
    prepare,
)
from kit.embedding_models import ModelRegistry, ModelSpec
from kit.errors import (
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from kit.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")


class Priority(IntEnum):
    """Triton dynamic-batcher priority levels (1 is served first)."""

    QUERY = 1
    BULK = 2


class EmbeddingBackend(Protocol):
    """``token_ids`` is passed only when some input has ids (``TritonClient.embed``)."""

    async def embed(
        self, model: str, texts: Sequence[str], *, priority: int, timeout_s: float | None
    ) -> Embeddings: ...


@dataclass(frozen=True)
class Embedded:
    vector: np.ndarray  # float32
    tokens: int  # the input's tokens before the model truncated it
    truncated: bool


@dataclass(frozen=True)
class EmbedOutcome:
    model: ModelSpec
    vectors: dict[int, Embedded]  # request position → its embedding
    failures: list[InputFailure]


@dataclass(frozen=True)
class Limits:
    max_texts: int
    max_request_chars: int
    max_in_flight_bulk: int
    max_in_flight_queries: int
    query_queue_seconds: float
    triton_timeout_seconds: float
    # A query Triton has not answered in this long is sent again; the first
    # answer wins (None: never). See ``_hedged``.
    query_hedge_seconds: float | None = None


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
        fail_on_truncation: bool = False,
        priority: Priority,
        path: str,
        deadline_s: float | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> EmbedOutcome:
        """``deadline_s``: seconds the caller still waits (its gRPC deadline); Triton
        drops work whose caller has given up instead of computing it for no one.
        ``token_ids``: per text, the model's token ids of it without special tokens
        (or an empty sequence), as the indexer's chunker produced them; the vectors
        are those of the texts, without tokenizing them again."""
        model = self.registry.get(model_name)
        self._check_size(texts)
        prepared = prepare(
            texts, model, is_query=is_query, instruction=instruction, token_ids=token_ids
        )
        vectors: dict[int, Embedded] = {}
        failures = list(prepared.failures)
        started = time.perf_counter()
        timeout_s = self._limits.triton_timeout_seconds
        if deadline_s is not None:
            timeout_s = max(0.001, min(timeout_s, deadline_s))

        async def run(batch: range) -> None:
            batch_texts = [prepared.texts[i] for i in batch]
            batch_ids = (
                None if prepared.token_ids is None else [prepared.token_ids[i] for i in batch]
            )
            results = await self._embed_isolating_failures(
                model, batch_texts, batch_ids, priority, timeout_s
            )
            for offset, result in zip(batch, results, strict=True):
                position = prepared.indexes[offset]
                if isinstance(result, str):
                    failures.append(InputFailure(position, INFERENCE_FAILED, result))
                elif result.truncated and fail_on_truncation:
                    failures.append(
                        InputFailure(
                            position,
                            INPUT_TOO_LONG,
                            f"{result.tokens} tokens; {model.name} reads at most "
                            f"{model.max_tokens} and would truncate it",
                        )
                    )
                else:
                    vectors[position] = result

        await asyncio.gather(
            *(run(batch) for batch in batch_ranges(len(prepared.texts), model.max_batch_size))
        )
        if normalize:
            for position, embedded in vectors.items():
                norm = float(np.linalg.norm(embedded.vector))
                if norm > 0:
                    vectors[position] = replace(embedded, vector=embedded.vector / norm)
        failures.sort(key=lambda failure: failure.index)
        metrics.observe_request(
            model.name,
            path,
            embedded=len(vectors),
            tokens_read=sum(min(e.tokens, model.max_tokens) for e in vectors.values()),
            truncated=sum(e.truncated for e in vectors.values()),
            failures=failures,
            started=started,
        )
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
        self,
        model: ModelSpec,
        texts: list[str],
        token_ids: list[Sequence[int]] | None,
        priority: Priority,
        timeout_s: float,
    ) -> list[Embedded | str]:
        """Vectors for ``texts``; where the model fails, bisect until the failing
        inputs stand alone, and give their error message in their place."""
        try:
            embeddings = await self._call(model, texts, token_ids, priority, timeout_s)
        except TritonModelError as error:
            if len(texts) == 1:
                return [str(error)[:500]]
            middle = len(texts) // 2
            first = second = None
            if token_ids is not None:
                first, second = token_ids[:middle], token_ids[middle:]
            halves = await asyncio.gather(
                self._embed_isolating_failures(model, texts[:middle], first, priority, timeout_s),
                self._embed_isolating_failures(model, texts[middle:], second, priority, timeout_s),
            )
            return [*halves[0], *halves[1]]
        return [
            Embedded(vector, int(tokens), int(tokens) > model.max_tokens)
            for vector, tokens in zip(embeddings.vectors, embeddings.tokens, strict=True)
        ]

    async def _call(
        self,
        model: ModelSpec,
        texts: list[str],
        token_ids: list[Sequence[int]] | None,
        priority: Priority,
        timeout_s: float,
    ) -> Embeddings:
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
        # Only when there are ids: a text-only backend keeps its narrower signature.
        with_ids = {} if token_ids is None else {"token_ids": token_ids}

        def send() -> Awaitable[Embeddings]:
            return self._backend.embed(
                model.triton_model, texts, priority=int(priority), timeout_s=timeout_s, **with_ids
            )

        hedge = self._limits.query_hedge_seconds if priority is Priority.QUERY else None
        try:
            embeddings = await (send() if hedge is None else _hedged(send, hedge, model.name))
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
        if embeddings.vectors.shape != (len(texts), model.dimension):
            raise TritonModelError(
                f"{model.triton_model} returned shape {embeddings.vectors.shape}, "
                f"expected ({len(texts)}, {model.dimension})"
            )
        return embeddings


async def _hedged(send: Callable[[], Awaitable[T]], after_seconds: float, model: str) -> T:
    """``send()``, and once more if the first has not answered ``after_seconds``
    later; the first to end wins, the other is abandoned (the backend lets its
    request run to its end: cancelling one can crash Triton). With several bulk
    batches queued, Triton's priority scheduler now and then leaves a query
    waiting half a second; a second copy of a one-row query costs next to
    nothing and is served at once."""
    first = asyncio.ensure_future(send())
    done, _ = await asyncio.wait({first}, timeout=after_seconds)
    if done:
        return first.result()
    metrics.QUERY_HEDGES.labels(model).inc()
    second = asyncio.ensure_future(send())
    try:
        done, _ = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for call in (first, second):
            if not call.done():
                call.cancel()
    return (first if first in done else second).result()
