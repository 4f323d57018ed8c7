"""The Embedder over the session's real Triton with the indexer's MiniLM token ids:
counts, truncation flags and ``fail_on_truncation`` are those of the texts, and an
instruction sends the prefixed text instead of the ids."""

from __future__ import annotations

import numpy as np
import pytest
from embed_worker_process import embedder_on

from embedder.adapters.triton_client import TritonClient
from embedder.embedding import Embedder, EmbedOutcome, Priority
from indexer.adapters.tokenizers import tokenizer_for
from kit.embedding_models import MINILM

pytestmark = pytest.mark.integration

SHORT = "Blue-green reindexing switches an alias atomically after validation."
LONG = "Glaciers carve U-shaped valleys and leave moraines behind them. " * 40


@pytest.fixture
def embedder(triton_client: TritonClient) -> Embedder:
    return embedder_on(triton_client)


def ids_of(text: str) -> list[int]:
    return list(tokenizer_for(MINILM.name).encode(text).ids)


async def embed(embedder: Embedder, texts: list[str], **options) -> EmbedOutcome:
    return await embedder.embed(
        MINILM.name, texts, is_query=False, priority=Priority.BULK, path="test", **options
    )


async def test_counts_and_truncation_are_the_texts(embedder: Embedder) -> None:
    texts = [SHORT, LONG]
    by_ids = await embed(embedder, texts, token_ids=[ids_of(t) for t in texts])
    by_text = await embed(embedder, texts)
    for position in (0, 1):
        got, want = by_ids.vectors[position], by_text.vectors[position]
        assert (got.tokens, got.truncated) == (want.tokens, want.truncated)
        np.testing.assert_allclose(got.vector, want.vector, atol=1e-5)
    assert by_ids.vectors[0].tokens == len(ids_of(SHORT)) + 2
    assert by_ids.vectors[1].truncated and by_ids.vectors[1].tokens > MINILM.max_tokens


async def test_fail_on_truncation_fails_long_ids_alone(embedder: Embedder) -> None:
    outcome = await embed(
        embedder, [SHORT, LONG], token_ids=[ids_of(SHORT), ids_of(LONG)], fail_on_truncation=True
    )
    assert list(outcome.vectors) == [0]
    [failure] = outcome.failures
    assert (failure.index, failure.reason) == (1, "INPUT_TOO_LONG")
    assert f"{len(ids_of(LONG)) + 2} tokens" in failure.message


async def test_an_instruction_sends_the_prefixed_text_not_the_ids(embedder: Embedder) -> None:
    """The ids are of the bare text; with an instruction the model must read the
    prefixed text, so the (here deliberately wrong) ids are not used."""
    wrong_ids = ids_of("lemon cake with fresh berries")
    with_ids = await embed(embedder, [SHORT], instruction="passage: ", token_ids=[wrong_ids])
    by_text = await embed(embedder, ["passage: " + SHORT])
    np.testing.assert_allclose(with_ids.vectors[0].vector, by_text.vectors[0].vector, atol=1e-5)
