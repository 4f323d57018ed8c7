"""A collection's embedding and chunking configuration: what a client asks
for, checked against the model registry and completed with defaults.

The result is the stored config, whose keys the indexer reads as they are
(``embedding_model``, ``dimension``, ``quantization``, ``instruction``,
``chunk_size``, ``chunk_overlap``), so it is complete and canonical: the
model's own name (never an alias), its dimension, a lower-case quantization.
Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kit.embedding_models import ModelRegistry, ModelSpec, Quantization
from kit.errors import DomainError, FieldViolation, InvalidArgument

from .fields import require

# Default chunk length in model tokens when a request leaves it at 0: long
# enough to carry a paragraph, short enough to keep search results precise.
DEFAULT_CHUNK_TOKENS = 200
DEFAULT_QUANTIZATION = Quantization.FLOAT32


@dataclass(frozen=True)
class RequestedConfig:
    """A config as a request gives it: 0 and None mean "the default"."""

    embedding_model: str
    dimension: int = 0
    quantization: str | None = None  # "float32" / "float16" / "int8"
    instruction: str | None = None  # None: the model's own; "" means none at all
    chunk_size: int = 0
    chunk_overlap: int = 0


def validate_config(
    requested: RequestedConfig, registry: ModelRegistry, field: str = "collection.config"
) -> dict[str, Any]:
    """The stored config for ``requested``, or the first problem found:
    UNKNOWN_MODEL, then DIMENSION_MISMATCH, then INVALID_CONFIG listing every
    bad quantization or chunking field. ``field`` is the config's path in the
    request, used in the error details."""
    require(requested.embedding_model, f"{field}.embedding_model")
    model = _known_model(requested.embedding_model, registry)
    if requested.dimension not in (0, model.dimension):
        raise InvalidArgument(
            f"{model.name} embeds into {model.dimension} dimensions, not {requested.dimension}",
            reason="DIMENSION_MISMATCH",
            metadata={
                "model": model.name,
                "expected": str(model.dimension),
                "actual": str(requested.dimension),
            },
            field_violations=[
                FieldViolation(f"{field}.dimension", f"must be 0 or {model.dimension}")
            ],
        )
    violations: list[FieldViolation] = []
    quantization = _quantization(requested.quantization, model, f"{field}.quantization", violations)
    size = requested.chunk_size or min(DEFAULT_CHUNK_TOKENS, model.max_chunk_tokens)
    overlap = requested.chunk_overlap
    if size < 1:
        violations.append(FieldViolation(f"{field}.chunk_size", f"must be positive, not {size}"))
    elif size > model.max_chunk_tokens:
        violations.append(
            FieldViolation(
                f"{field}.chunk_size",
                f"{size} exceeds the {model.max_chunk_tokens} tokens {model.name} reads",
            )
        )
    if overlap < 0 or (size >= 1 and overlap >= size):
        violations.append(
            FieldViolation(
                f"{field}.chunk_overlap", f"must be >= 0 and < chunk_size ({size}), not {overlap}"
            )
        )
    if violations:
        raise InvalidArgument(
            "invalid config: " + "; ".join(f"{v.field} {v.description}" for v in violations),
            reason="INVALID_CONFIG",
            metadata={"field": violations[0].field},
            field_violations=violations,
        )
    return {
        "embedding_model": model.name,
        "dimension": model.dimension,
        "quantization": quantization.value,
        "instruction": requested.instruction,
        "chunk_size": size,
        "chunk_overlap": overlap,
    }


def _known_model(name: str, registry: ModelRegistry) -> ModelSpec:
    try:
        return registry.get(name)
    except DomainError as unknown:
        # The registry says NOT_FOUND (right for the embedder's own API); inside
        # a request's config an unknown model is a bad argument.
        raise InvalidArgument(
            unknown.message, reason="UNKNOWN_MODEL", metadata={"model": name}
        ) from None


def _quantization(
    raw: str | None, model: ModelSpec, field: str, violations: list[FieldViolation]
) -> Quantization:
    """The quantization to store; a problem goes to ``violations`` (the caller
    then refuses the config, so the default returned with it is never used)."""
    if not raw:
        chosen = DEFAULT_QUANTIZATION
    else:
        try:
            chosen = Quantization(raw.lower())
        except ValueError:
            violations.append(FieldViolation(field, f"unknown quantization {raw!r}"))
            return DEFAULT_QUANTIZATION
    if chosen not in model.quantizations:
        served = ", ".join(q.value for q in model.quantizations)
        violations.append(FieldViolation(field, f"{model.name} supports {served}, not {chosen}"))
    return chosen
