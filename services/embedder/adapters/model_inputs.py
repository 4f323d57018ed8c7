"""Token-id inputs of the Triton models: the wire format of ``INPUT_IDS`` and how a
row of ids becomes what the transformer reads.

``INPUT_IDS`` (INT64, ``[rows, length]``) carries each row's token ids without
special tokens, padded on the right with ``ID_PADDING`` to the longest row of
its request. The model adds its own special tokens ([CLS] ... [SEP] for BERT)
and truncates as its tokenizer would, so a text's ids give the vector the text
gives. Used on both sides: the embedder's Triton client packs, the model
unpacks. Numpy only: it is loaded inside Triton's python-backend stub too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

INPUT_IDS = "INPUT_IDS"
ID_PADDING = -1  # never a token id


def pack_id_rows(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """``rows`` as one INT64 tensor, each row padded with ``ID_PADDING``."""
    width = max((len(row) for row in rows), default=0)
    packed = np.full((len(rows), width), ID_PADDING, dtype=np.int64)
    for number, row in enumerate(rows):
        packed[number, : len(row)] = row
    return packed


def unpack_id_rows(packed: np.ndarray) -> list[np.ndarray]:
    """The rows of an ``INPUT_IDS`` tensor without their padding. Raises ValueError
    on a tensor that is not 2-D, a row without ids, or padding inside a row."""
    if packed.ndim != 2:
        raise ValueError(f"{INPUT_IDS} must be [rows, length], not {list(packed.shape)}")
    rows: list[np.ndarray] = []
    for number, row in enumerate(packed.astype(np.int64, copy=False)):
        padding = np.flatnonzero(row < 0)
        length = int(padding[0]) if padding.size else row.shape[0]
        if length == 0:
            raise ValueError(f"{INPUT_IDS} row {number} holds no token ids")
        if (row[length:] != ID_PADDING).any():
            raise ValueError(
                f"{INPUT_IDS} row {number}: negative values other than trailing "
                f"padding ({ID_PADDING})"
            )
        rows.append(row[:length])
    return rows


@dataclass(frozen=True)
class SpecialTokens:
    """What the tokenizer wraps a single sequence in, and where it truncates."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    truncate_left: bool = False

    @property
    def count(self) -> int:
        return len(self.prefix) + len(self.suffix)

    @classmethod
    def of(cls, tokenizer: Any) -> SpecialTokens:  # noqa: ANN401 - any Hugging Face tokenizer
        """Learnt from the tokenizer itself, by encoding a probe with and without its
        special tokens: no per-model table to keep in step."""
        plain = list(tokenizer("probe", add_special_tokens=False)["input_ids"])
        wrapped = list(tokenizer("probe", add_special_tokens=True)["input_ids"])
        for start in range(len(wrapped) - len(plain) + 1):
            if wrapped[start : start + len(plain)] == plain:
                return cls(
                    prefix=tuple(wrapped[:start]),
                    suffix=tuple(wrapped[start + len(plain) :]),
                    truncate_left=getattr(tokenizer, "truncation_side", "right") == "left",
                )
        raise ValueError(f"cannot locate the text's ids {plain} within {wrapped}")

    def wrap(self, ids: Sequence[int], max_length: int) -> list[int]:
        """``ids`` truncated to fit ``max_length`` with the special tokens, then
        wrapped in them: what the tokenizer gives for the text with truncation on."""
        room = max(0, max_length - self.count)
        if len(ids) > room:
            ids = ids[len(ids) - room :] if self.truncate_left else ids[:room]
        return [*self.prefix, *(int(i) for i in ids), *self.suffix]


def padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)``, INT64 ``[rows, longest]``, padded on the right."""
    width = max((len(row) for row in rows), default=0)
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for number, row in enumerate(rows):
        input_ids[number, : len(row)] = row
        mask[number, : len(row)] = 1
    return input_ids, mask


def length_sorted_batches(lengths: Sequence[int], size: int) -> list[list[int]]:
    """Row indexes, longest first, cut into batches of at most ``size``: rows of like
    length share a batch, so padding is small (what sentence-transformers does)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + size] for start in range(0, len(order), max(1, size))]
