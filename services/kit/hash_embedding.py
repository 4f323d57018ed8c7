"""Feature-hashed bag-of-words embeddings: fast, deterministic, no model weights.

The algorithm behind the ``hash_bow`` Triton model, kept here so tests and the
benchmark can compute the same vectors in-process. Texts are NFKC-normalised and
lowercased, split on anything that is not a letter or digit (Unicode-aware; ``_``
separates too), and each token adds +1 or -1 at one coordinate chosen by a
BLAKE2b hash of its UTF-8 bytes. Python's ``hash()`` would not do: it is salted
per process, so two embedders would disagree. Rows are L2-normalised; a text
with no tokens gives the zero vector (callers refuse such input before).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

# A run of letters or digits in any script: \w without the underscore.
_TOKEN = re.compile(r"[^\W_]+")

DEFAULT_DIMENSION = 384


def tokenize(text: str) -> list[str]:
    """Lowercased alphanumeric tokens of ``text``, in order."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


@lru_cache(maxsize=1 << 16)
def _token_hash(token: str) -> int:
    # Cached: corpora repeat a small vocabulary, and BLAKE2b per token dominates the cost.
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")


def hash_embed(texts: Sequence[str], dimension: int = DEFAULT_DIMENSION) -> np.ndarray:
    """Embed ``texts`` as a float32 array of shape ``(len(texts), dimension)``."""
    if dimension < 1:
        raise ValueError(f"dimension must be positive, not {dimension}")
    counts = np.zeros((len(texts), dimension), dtype=np.float64)
    for row, text in enumerate(texts):
        hashes = np.fromiter((_token_hash(t) for t in tokenize(text)), dtype=np.uint64, count=-1)
        if hashes.size == 0:
            continue
        # Low bits pick the coordinate, the top bit the sign: independent enough
        # that colliding tokens cancel as often as they add up.
        index = (hashes % np.uint64(dimension)).astype(np.intp)
        sign = np.where(hashes >> np.uint64(63), -1.0, 1.0)
        np.add.at(counts[row], index, sign)
    norms = np.linalg.norm(counts, axis=1, keepdims=True)
    np.divide(counts, norms, out=counts, where=norms > 0)
    return counts.astype(np.float32)
