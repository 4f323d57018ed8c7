"""Decoding an embed batch's result into the pipeline's per-text answers: packed
little-endian float32 vectors, failure reasons, and what a malformed result gives."""

from __future__ import annotations

import numpy as np

from indexer.embed_queue import NO_RESULT, decode_result
from vectorops.events.v1 import embed_pb2


def batch_of(*chunk_ids: str) -> embed_pb2.EmbedBatch:
    return embed_pb2.EmbedBatch(
        batch_id="b", items=[embed_pb2.EmbedItem(chunk_id=c, text=c) for c in chunk_ids]
    )


def test_vectors_and_reasons_come_back_in_the_batch_order() -> None:
    first = np.array([1.0, -2.5, 0.25], dtype=np.float32)
    third = np.array([0.5, 0.0, 3.0], dtype=np.float32)
    result = embed_pb2.EmbedBatchResult(batch_id="b", dimension=3)
    # The result lists vectors and failures apart, in any order.
    result.vectors.add(chunk_id="7", vector=third.astype("<f4").tobytes(), dimension=3)
    result.vectors.add(chunk_id="5", vector=first.astype("<f4").tobytes(), dimension=3)
    result.failures.add(chunk_id="6", reason="EMPTY_INPUT", message="blank")
    decoded = decode_result(result, batch_of("5", "6", "7"))
    assert isinstance(decoded[0], np.ndarray) and decoded[0].dtype == np.float32
    assert np.array_equal(decoded[0], first)
    assert decoded[1] == "EMPTY_INPUT"
    assert np.array_equal(decoded[2], third)


def test_a_short_vector_or_a_missing_item_is_a_failure_of_that_item() -> None:
    result = embed_pb2.EmbedBatchResult(batch_id="b", dimension=3)
    result.vectors.add(chunk_id="0", vector=b"\x00" * 8, dimension=3)  # 2 floats, not 3
    result.failures.add(chunk_id="1", reason="", message="no reason given")
    decoded = decode_result(result, batch_of("0", "1", "2"))
    assert decoded == ["MALFORMED_VECTOR", "EMBEDDING_FAILED", NO_RESULT]
