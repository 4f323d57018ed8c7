"""The feature-hashed bag-of-words embedder: deterministic, normalised, Unicode-aware."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kit.hash_embedding import hash_embed, tokenize

TEXTS = ["The quick brown fox", "jumps over the lazy dog", "Ünïcödé — 東京 и Москва", "a"]


def test_shape_dtype_and_order() -> None:
    vectors = hash_embed(TEXTS, 64)
    assert vectors.shape == (4, 64)
    assert vectors.dtype == np.float32
    for i, text in enumerate(TEXTS):
        np.testing.assert_array_equal(vectors[i], hash_embed([text], 64)[0])


@pytest.mark.parametrize("dimension", [1, 7, 384, 1000])
def test_dimension_respected(dimension: int) -> None:
    assert hash_embed(TEXTS, dimension).shape == (len(TEXTS), dimension)


def test_dimension_must_be_positive() -> None:
    with pytest.raises(ValueError):
        hash_embed(["x"], 0)


def test_no_texts_gives_an_empty_matrix() -> None:
    assert hash_embed([], 16).shape == (0, 16)


def test_rows_are_unit_length_and_tokenless_text_is_zero() -> None:
    vectors = hash_embed([*TEXTS, "", "  ...!?  ", "___"], 384)
    np.testing.assert_allclose(np.linalg.norm(vectors[: len(TEXTS)], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(vectors[len(TEXTS) :], 0.0)


def test_counts_add_up_before_normalising() -> None:
    # "a a b" weighs a twice: not the same direction as "a b".
    twice, once = hash_embed(["a a b", "a b"], 4096)
    assert float(twice @ once) < 0.99
    np.testing.assert_allclose(hash_embed(["b a a"], 4096)[0], twice)  # order-free


def test_case_punctuation_and_unicode_forms_do_not_matter() -> None:
    # NFC "é" and NFD "e" + combining accent are one token; case and separators are not.
    same = hash_embed(["Café crème!", "café, CRÈME", "cafe\u0301 cre\u0300me"], 384)
    np.testing.assert_allclose(same[1], same[0], atol=1e-7)
    np.testing.assert_allclose(same[2], same[0], atol=1e-7)


def test_tokens_are_unicode_alphanumeric_runs() -> None:
    assert tokenize("Straße_42 東京! Москва-2024 naïve") == [
        "straße",
        "42",
        "東京",
        "москва",
        "2024",
        "naïve",
    ]
    assert tokenize("  --  ") == []


def test_texts_sharing_words_are_nearer() -> None:
    query, related, unrelated = hash_embed(
        [
            "postgres connection pool exhausted",
            "the connection pool of postgres is exhausted again",
            "a recipe for lemon cake with fresh berries",
        ],
        384,
    )
    assert float(query @ related) > 0.5
    assert float(query @ related) > float(query @ unrelated) + 0.3


def test_pinned_vector() -> None:
    """Stored vectors depend on these exact numbers: a change here breaks every index."""
    vector = hash_embed(["hello world"], 16)[0]
    assert vector.nonzero()[0].tolist() == [7, 8]
    np.testing.assert_allclose(vector[[7, 8]], [2**-0.5, 2**-0.5], rtol=1e-6)
    vector = hash_embed(["café crème"], 16)[0]
    assert vector.nonzero()[0].tolist() == [7, 10]
    np.testing.assert_allclose(vector[[7, 10]], [-(2**-0.5), -(2**-0.5)], rtol=1e-6)


def test_deterministic_across_processes() -> None:
    """Python's hash() is salted per process; ours must not be (embedders must agree)."""
    code = (
        "import json, sys; from kit.hash_embedding import hash_embed; "
        "print(json.dumps(hash_embed(json.loads(sys.argv[1]), 97).tolist()))"
    )
    here = hash_embed(TEXTS, 97)
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(TEXTS)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        np.testing.assert_array_equal(np.array(json.loads(out), dtype=np.float32), here)
