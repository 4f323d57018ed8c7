"""Token ids through the Embedder's own rules, with a stand-in backend: ids reach the
backend aligned with their texts (through input failures and bisection), only
when some input has them, and never where an instruction changes what the model
must read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from embedder.adapters.triton_client import Embeddings, TritonModelError
from embedder.domain.inputs import EMPTY_INPUT, prepare
from embedder.embedding import Embedder, Limits, Priority
from kit.embedding_models import HASH_BOW, ModelRegistry

MODEL = replace(HASH_BOW, max_batch_size=4, max_input_chars=100, max_tokens=50)
LIMITS = Limits(
    max_texts=20,
    max_request_chars=1000,
    max_in_flight_bulk=2,
    max_in_flight_queries=1,
    query_queue_seconds=0.1,
    triton_timeout_seconds=5,
)


class IdsBackend:
    """Records each call's texts and ids; a row is embedded from its ids when it has
    them (first value: their sum), else from its text (first value: its length);
    the id 666 breaks its batch."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[list[int]] | None]] = []

    async def embed(
        self,
        model: str,
        texts: Sequence[str],
        *,
        priority: int,
        timeout_s: float | None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> Embeddings:
        rows = None if token_ids is None else [list(row) for row in token_ids]
        self.calls.append((list(texts), rows))
        if rows is not None and any(666 in row for row in rows):
            raise TritonModelError("id 666 broke the batch")
        vectors = np.zeros((len(texts), MODEL.dimension), dtype=np.float32)
        tokens = []
        for i, text in enumerate(texts):
            ids = rows[i] if rows is not None else []
            vectors[i, 0] = sum(ids) if ids else len(text)
            tokens.append(len(ids) if ids else len(text))
        return Embeddings(vectors, np.array(tokens, dtype=np.int32))


def embedder(backend: IdsBackend) -> Embedder:
    return Embedder(ModelRegistry([MODEL]), backend, LIMITS)


def test_prepare_keeps_ids_of_the_prepared_texts_only() -> None:
    prepared = prepare(
        ["alpha", "", "beta", "gamma"],
        MODEL,
        is_query=False,
        instruction=None,
        token_ids=[[1, 2], [3], [], [4]],
    )
    assert prepared.texts == ["alpha", "beta", "gamma"]
    assert prepared.token_ids == [[1, 2], [], [4]]
    assert [(f.index, f.reason) for f in prepared.failures] == [(1, EMPTY_INPUT)]


@pytest.mark.parametrize(
    ("instruction", "token_ids"),
    [("passage: ", [[1], [2]]), (None, [[], []]), (None, None)],
    ids=["instruction prefixed", "all empty", "none given"],
)
def test_prepare_drops_ids_the_model_cannot_use(
    instruction: str | None, token_ids: list[list[int]] | None
) -> None:
    prepared = prepare(
        ["alpha", "beta"], MODEL, is_query=False, instruction=instruction, token_ids=token_ids
    )
    assert prepared.token_ids is None


def test_prepare_refuses_ids_not_aligned_with_the_texts() -> None:
    with pytest.raises(ValueError, match="1 token id rows for 2 texts"):
        prepare(["a", "b"], MODEL, is_query=False, instruction=None, token_ids=[[1]])


async def test_ids_stay_with_their_texts_through_failures_and_bisection() -> None:
    backend = IdsBackend()
    texts = ["a", "", "ccc", "dddd", "eeeee", "ffffff"]
    ids = [[1], [2], [10, 20], [666], [], [5, 5, 5]]
    outcome = await embedder(backend).embed(
        MODEL.name, texts, is_query=False, priority=Priority.BULK, path="test", token_ids=ids
    )
    assert {i: float(e.vector[0]) for i, e in outcome.vectors.items()} == {
        0: 1.0,
        2: 30.0,
        4: 5.0,  # no ids: its text
        5: 15.0,
    }
    assert outcome.vectors[5].tokens == 3
    assert [(f.index, f.reason) for f in outcome.failures] == [
        (1, EMPTY_INPUT),
        (3, "INFERENCE_FAILED"),
    ]
    ids_of = dict(zip(texts, ids, strict=True))
    assert len(backend.calls) > 2  # the batch with 666 was bisected
    for call_texts, call_ids in backend.calls:
        assert call_ids == [ids_of[text] for text in call_texts]


async def test_without_ids_the_backend_is_called_as_before() -> None:
    """A request without ids passes none: a text-only backend keeps working."""
    backend = IdsBackend()
    await embedder(backend).embed(
        MODEL.name, ["abc", "de"], is_query=False, priority=Priority.BULK, path="test"
    )
    await embedder(backend).embed(
        MODEL.name,
        ["abc", "de"],
        is_query=True,
        instruction="query: ",
        priority=Priority.QUERY,
        path="test",
        token_ids=[[1], [2]],
    )
    assert backend.calls == [(["abc", "de"], None), (["query: abc", "query: de"], None)]
