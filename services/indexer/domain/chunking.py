"""Chunking by model tokens: fixed-size windows of ``size`` tokens, consecutive
windows sharing exactly ``overlap`` tokens, never crossing a section (page).

A chunk's text is the exact source substring from its first token's start to
its last token's end, so offsets map back to the extracted text and the page.
The tokenizer is a protocol: the domain does no I/O and loads no model.

Where the tokenizer is the model's own, a chunk keeps its token ids, so the
embedder feeds them to the model instead of tokenizing the text again. That
must give the text's vector, so only a chunk whose text tokenizes back to its
ids keeps them: not one that starts inside a word, whose first id is a
continuation piece ("##bel") that the bare text ("bel...") cannot give.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from kit.errors import FieldViolation, InvalidArgument


@dataclass(frozen=True)
class Section:
    """A piece of a document's text that chunks must not cross (a page, or the whole text)."""

    text: str
    page: int | None = None  # 1-based, where the format has pages


@dataclass(frozen=True)
class Encoding:
    """One text's tokens: character offsets ``[start, end)`` in order, and the token
    ids when the model has a vocabulary (so the embedder need not tokenize again),
    with the index of the word each token belongs to (a chunk that starts inside a
    word keeps no ids; without word ids every token counts as a word's start)."""

    offsets: Sequence[tuple[int, int]]
    ids: Sequence[int] | None = None
    word_ids: Sequence[int | None] | None = None

    def starts_word(self, position: int) -> bool:
        words = self.word_ids
        return position == 0 or words is None or words[position] != words[position - 1]


class Tokenizer(Protocol):
    # The most tokens a chunk may hold: the model's max_tokens less what the model
    # adds itself (special tokens).
    max_chunk_tokens: int

    def encode(self, text: str) -> Encoding: ...


@dataclass(frozen=True)
class Chunk:
    index: int  # 0-based over the whole document
    text: str
    token_count: int
    page: int | None
    section: int  # index of the section the chunk comes from
    start_char: int  # offsets of ``text`` within that section's text
    end_char: int
    # The model's ids of ``text`` (no special tokens), where they are exactly what
    # tokenizing ``text`` gives; None: the embedder tokenizes the text.
    token_ids: tuple[int, ...] | None = None


def validate_chunking(size: int, overlap: int, max_chunk_tokens: int | None = None) -> None:
    """Refuse a chunk config (INVALID_ARGUMENT, reason INVALID_CONFIG) unless
    ``0 <= overlap < size <= max_chunk_tokens``."""
    violations: list[FieldViolation] = []
    if size < 1:
        violations.append(FieldViolation("chunk_size", f"must be positive, not {size}"))
    elif max_chunk_tokens is not None and size > max_chunk_tokens:
        violations.append(
            FieldViolation("chunk_size", f"{size} exceeds the model's {max_chunk_tokens} tokens")
        )
    if overlap < 0 or (size >= 1 and overlap >= size):
        violations.append(
            FieldViolation("chunk_overlap", f"must be >= 0 and < chunk_size, not {overlap}")
        )
    if violations:
        raise InvalidArgument(
            "invalid chunking: " + "; ".join(f"{v.field} {v.description}" for v in violations),
            reason="INVALID_CONFIG",
            field_violations=violations,
        )


def chunk(
    sections: Iterable[Section], tokenizer: Tokenizer, size: int, overlap: int
) -> list[Chunk]:
    """Chunks of ``sections`` in order. Every token is in at least one chunk; a
    section shorter than ``size`` tokens is one chunk; sections without tokens
    give none."""
    validate_chunking(size, overlap, tokenizer.max_chunk_tokens)
    step = size - overlap
    chunks: list[Chunk] = []
    for number, section in enumerate(sections):
        encoding = tokenizer.encode(section.text)
        offsets = encoding.offsets
        total = len(offsets)
        start = 0
        while start < total:
            end = min(start + size, total)
            window = offsets[start:end]
            # min/max, not first/last: robust to a tokenizer whose spans overlap.
            first = min(s for s, _ in window)
            last = max(e for _, e in window)
            ids = None
            if encoding.ids is not None and encoding.starts_word(start):
                ids = tuple(encoding.ids[start:end])
            chunks.append(
                Chunk(
                    index=len(chunks),
                    text=section.text[first:last],
                    token_count=end - start,
                    page=section.page,
                    section=number,
                    start_char=first,
                    end_char=last,
                    token_ids=ids,
                )
            )
            if end == total:
                break
            start += step
    return chunks
