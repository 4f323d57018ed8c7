"""The Embedder's own rules, with a stand-in backend: bad inputs and model failures
fail only their own inputs, batches respect the model's size, queries are bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from embedder.adapters.triton_client import Embeddings, TritonModelError, TritonUnavailable
from embedder.embedding import Embedder, Limits, Priority
from kit.embedding_models import HASH_BOW, ModelRegistry
from kit.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable

MODEL = replace(HASH_BOW, max_batch_size=4, max_input_chars=100, max_tokens=50)
LIMITS = Limits(
    max_texts=20,
    max_request_chars=1000,
    max_in_flight_bulk=2,
    max_in_flight_queries=1,
    query_queue_seconds=0.1,
    triton_timeout_seconds=5,
)


class StandInBackend:
    """Vectors whose first value encodes the text; a text with 'poison' breaks its batch."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.down = False

    async def embed(
        self, model: str, texts: Sequence[str], *, priority: int, timeout_s: float | None
    ) -> Embeddings:
        self.batches.append(list(texts))
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise TritonUnavailable("connection refused")
        if any("poison" in text for text in texts):
            raise TritonModelError("model failed on this batch")
        vectors = np.zeros((len(texts), MODEL.dimension), dtype=np.float32)
        vectors[:, 0] = [len(text) for text in texts]
        vectors[:, 1] = 1.0
        # One token per character: "long" texts (over max_tokens) are "truncated".
        return Embeddings(vectors, np.array([len(text) for text in texts], dtype=np.int32))


def embedder(backend: StandInBackend) -> Embedder:
    return Embedder(ModelRegistry([MODEL]), backend, LIMITS)


async def test_model_failure_is_bisected_down_to_the_failing_inputs() -> None:
    backend = StandInBackend()
    texts = ["a", "bb", "poison", "dddd", "", "ffffff", "poison too", "h"]
    outcome = await embedder(backend).embed(
        MODEL.name, texts, is_query=False, priority=Priority.BULK, path="test"
    )
    assert sorted(outcome.vectors) == [0, 1, 3, 5, 7]
    assert [float(outcome.vectors[i].vector[0]) for i in (0, 1, 3, 5, 7)] == [1, 2, 4, 6, 1]
    assert [(f.index, f.reason) for f in outcome.failures] == [
        (2, "INFERENCE_FAILED"),
        (4, "EMPTY_INPUT"),
        (6, "INFERENCE_FAILED"),
    ]
    assert max(len(batch) for batch in backend.batches) <= MODEL.max_batch_size


async def test_normalize_makes_unit_vectors() -> None:
    outcome = await embedder(StandInBackend()).embed(
        MODEL.name, ["abc"], is_query=True, normalize=True, priority=Priority.QUERY, path="test"
    )
    assert np.linalg.norm(outcome.vectors[0].vector) == pytest.approx(1.0)


async def test_truncated_inputs_are_flagged_or_failed_on_request() -> None:
    texts = ["short", "t" * 60]
    service = embedder(StandInBackend())
    lenient = await service.embed(
        MODEL.name, texts, is_query=False, priority=Priority.BULK, path="t"
    )
    assert [(e.tokens, e.truncated) for e in lenient.vectors.values()] == [(5, False), (60, True)]
    strict = await service.embed(
        MODEL.name, texts, is_query=False, fail_on_truncation=True, priority=Priority.BULK, path="t"
    )
    assert list(strict.vectors) == [0]
    assert [(f.index, f.reason) for f in strict.failures] == [(1, "INPUT_TOO_LONG")]


@pytest.mark.parametrize(
    ("texts", "reason"),
    [
        ([], "INVALID_ARGUMENT"),
        (["x"] * 21, "REQUEST_TOO_LARGE"),
        (["y" * 90] * 12, "REQUEST_TOO_LARGE"),
    ],
)
async def test_request_limits(texts: list[str], reason: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await embedder(StandInBackend()).embed(
            MODEL.name, texts, is_query=True, priority=Priority.QUERY, path="test"
        )
    assert caught.value.reason == reason
    assert caught.value.field_violations[0].field == "texts"


async def test_unknown_model_and_unavailable_backend() -> None:
    backend = StandInBackend()
    with pytest.raises(NotFound):
        await embedder(backend).embed(
            "nope", ["x"], is_query=True, priority=Priority.QUERY, path="t"
        )
    backend.down = True
    with pytest.raises(Unavailable) as caught:
        await embedder(backend).embed(
            MODEL.name, ["x"], is_query=True, priority=Priority.QUERY, path="t"
        )
    assert caught.value.reason == "EMBEDDER_UNAVAILABLE"


async def test_queries_beyond_their_slots_are_refused_not_queued_forever() -> None:
    backend = StandInBackend()
    backend.gate = asyncio.Event()
    service = embedder(backend)
    first = asyncio.ensure_future(
        service.embed(MODEL.name, ["q1"], is_query=True, priority=Priority.QUERY, path="t")
    )
    await asyncio.sleep(0.01)
    with pytest.raises(ResourceExhausted) as caught:
        await service.embed(MODEL.name, ["q2"], is_query=True, priority=Priority.QUERY, path="t")
    assert caught.value.reason == "EMBEDDER_OVERLOADED"
    backend.gate.set()
    assert 0 in (await first).vectors


async def test_bulk_work_does_not_take_the_query_slots() -> None:
    backend = StandInBackend()
    backend.gate = asyncio.Event()
    service = embedder(backend)
    bulk = asyncio.ensure_future(
        service.embed(MODEL.name, ["d"] * 8, is_query=False, priority=Priority.BULK, path="t")
    )
    await asyncio.sleep(0.01)  # both bulk slots are now taken and waiting on the model
    query = asyncio.ensure_future(
        service.embed(MODEL.name, ["q"], is_query=True, priority=Priority.QUERY, path="t")
    )
    await asyncio.sleep(0.01)
    assert ["q"] in backend.batches  # the query reached the model while bulk work waited
    backend.gate.set()
    await asyncio.gather(bulk, query)


class FirstCopyStuckBackend(StandInBackend):
    """The first call never answers (as Triton now and then leaves a query queued);
    later calls answer at once."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled = 0

    async def embed(
        self, model: str, texts: Sequence[str], *, priority: int, timeout_s: float | None
    ) -> Embeddings:
        if not self.batches:
            self.batches.append(list(texts))
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return await super().embed(model, texts, priority=priority, timeout_s=timeout_s)


async def test_a_slow_query_is_sent_again_and_the_first_answer_wins() -> None:
    backend = FirstCopyStuckBackend()
    service = Embedder(ModelRegistry([MODEL]), backend, replace(LIMITS, query_hedge_seconds=0.01))
    outcome = await service.embed(
        MODEL.name, ["q1"], is_query=True, priority=Priority.QUERY, path="t"
    )
    assert outcome.vectors[0].vector[0] == 2  # answered by the second copy
    assert backend.batches == [["q1"], ["q1"]]
    assert backend.cancelled == 1  # the stuck copy is not left running


async def test_bulk_work_and_prompt_queries_are_never_sent_twice() -> None:
    backend = FirstCopyStuckBackend()
    service = Embedder(ModelRegistry([MODEL]), backend, replace(LIMITS, query_hedge_seconds=0.01))
    bulk = asyncio.ensure_future(
        service.embed(MODEL.name, ["d"], is_query=False, priority=Priority.BULK, path="t")
    )
    await asyncio.sleep(0.05)
    assert backend.batches == [["d"]] and not bulk.done()  # bulk waits; no second copy
    bulk.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bulk
    prompt = StandInBackend()
    service = Embedder(ModelRegistry([MODEL]), prompt, replace(LIMITS, query_hedge_seconds=0.01))
    await service.embed(MODEL.name, ["q"], is_query=True, priority=Priority.QUERY, path="t")
    assert prompt.batches == [["q"]]
