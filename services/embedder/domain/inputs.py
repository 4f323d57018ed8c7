"""Which inputs of a request can be embedded, and how they are prepared.

An input that cannot be embedded fails alone, with a reason; the rest go on.
Instructions are prefixed here, so the model sees exactly what was asked for.
An input may come with its token ids (the indexer's chunker has them): they
travel on only where the model sees the text unchanged, i.e. with no instruction
prefixed; otherwise the prefixed text is what must be tokenized.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kit.embedding_models import ModelSpec

EMPTY_INPUT = "EMPTY_INPUT"
INPUT_TOO_LONG = "INPUT_TOO_LONG"
INFERENCE_FAILED = "INFERENCE_FAILED"


@dataclass(frozen=True)
class InputFailure:
    index: int
    reason: str
    message: str


@dataclass(frozen=True)
class PreparedInputs:
    texts: list[str]  # what the model gets: instruction + text
    indexes: list[int]  # the request position of each prepared text
    failures: list[InputFailure]
    # Per prepared text, its token ids without special tokens, or () to tokenize the
    # text; None when no text has ids.
    token_ids: list[Sequence[int]] | None = None


def prepare(
    texts: Sequence[str],
    model: ModelSpec,
    *,
    is_query: bool,
    instruction: str | None,
    token_ids: Sequence[Sequence[int]] | None = None,
) -> PreparedInputs:
    """``token_ids``: per text, its ids or an empty sequence (same length as ``texts``)."""
    if token_ids is not None and len(token_ids) != len(texts):
        raise ValueError(f"{len(token_ids)} token id rows for {len(texts)} texts")
    prefix = model.instruction_for(is_query, instruction)
    prepared: list[str] = []
    indexes: list[int] = []
    failures: list[InputFailure] = []
    for index, text in enumerate(texts):
        if not text.strip():
            failures.append(InputFailure(index, EMPTY_INPUT, "the text is empty or blank"))
        elif len(text) > model.max_input_chars:
            failures.append(
                InputFailure(
                    index,
                    INPUT_TOO_LONG,
                    f"{len(text)} characters; {model.name} takes at most "
                    f"{model.max_input_chars} (chunk the document first)",
                )
            )
        else:
            prepared.append(prefix + text)
            indexes.append(index)
    ids: list[Sequence[int]] | None = None
    if token_ids is not None and not prefix:
        ids = [token_ids[index] for index in indexes]
        if not any(len(row) for row in ids):
            ids = None
    return PreparedInputs(prepared, indexes, failures, ids)


def batch_ranges(count: int, size: int) -> list[range]:
    """Consecutive ranges of at most ``size`` covering ``range(count)``."""
    return [range(start, min(start + size, count)) for start in range(0, count, size)]
