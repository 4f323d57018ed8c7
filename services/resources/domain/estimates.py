"""How many vectors and bytes an operation will need, and how we got there.

documents × chunks per document × (dimension × bytes per value + payload per chunk).
Chunks per document come from the average document size and the chunk size and
overlap (tokens, at about four bytes of text per token).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kit.embedding_models import Quantization
from kit.errors import FieldViolation, InvalidArgument

BYTES_PER_TOKEN = 4
# Assumed when the caller does not know the documents' total size.
DEFAULT_DOCUMENT_BYTES = 4096
DEFAULT_CHUNK_TOKENS = 512
# Per-point payload beyond the chunk text: ids, source path, offsets, hashes.
PAYLOAD_METADATA_BYTES = 256


@dataclass(frozen=True)
class EstimateInput:
    documents: int
    dimension: int
    quantization: Quantization = Quantization.FLOAT32
    total_document_bytes: int = 0
    chunk_tokens: int = 0
    overlap_tokens: int = 0


@dataclass(frozen=True)
class Estimate:
    vectors: int
    bytes: int
    documents: int
    method: str


def _validate(given: EstimateInput) -> None:
    problems = []
    if given.documents < 0:
        problems.append(FieldViolation("document_count", "must not be negative"))
    if given.total_document_bytes < 0:
        problems.append(FieldViolation("total_document_bytes", "must not be negative"))
    if given.dimension <= 0:
        problems.append(FieldViolation("dimension", "must be positive"))
    if given.chunk_tokens < 0 or given.overlap_tokens < 0:
        problems.append(FieldViolation("chunk_size", "chunk size and overlap must not be negative"))
    elif given.overlap_tokens >= (given.chunk_tokens or DEFAULT_CHUNK_TOKENS):
        problems.append(FieldViolation("chunk_overlap", "must be smaller than the chunk size"))
    if problems:
        raise InvalidArgument(
            "the estimate request is not valid",
            reason="INVALID_ARGUMENT",
            field_violations=problems,
        )


def estimate(given: EstimateInput) -> Estimate:
    _validate(given)
    chunk_tokens = given.chunk_tokens or DEFAULT_CHUNK_TOKENS
    stride = chunk_tokens - given.overlap_tokens
    known_size = given.total_document_bytes > 0 and given.documents > 0
    average_bytes = (
        given.total_document_bytes / given.documents if known_size else DEFAULT_DOCUMENT_BYTES
    )
    average_tokens = average_bytes / BYTES_PER_TOKEN
    chunks_per_document = max(1.0, (average_tokens - given.overlap_tokens) / stride)
    vectors = math.ceil(given.documents * chunks_per_document)
    value_bytes = given.quantization.bytes_per_value
    chunk_text_bytes = min(average_bytes, chunk_tokens * BYTES_PER_TOKEN)
    payload = math.ceil(chunk_text_bytes) + PAYLOAD_METADATA_BYTES
    per_vector = given.dimension * value_bytes + payload
    size_source = "given" if known_size else "assumed"
    method = (
        f"{given.documents} documents x {chunks_per_document:.2f} chunks/doc "
        f"(avg {average_bytes / 1024:.1f} KB/doc {size_source}, {chunk_tokens} tokens/chunk, "
        f"{given.overlap_tokens} overlap, ~{BYTES_PER_TOKEN} B/token) = {vectors} vectors; "
        f"x ({given.dimension} dims x {value_bytes} B {given.quantization.value} "
        f"+ {payload} B payload) = {vectors * per_vector} B"
    )
    return Estimate(vectors, vectors * per_vector, given.documents, method)
