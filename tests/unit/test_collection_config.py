"""A collection's config as a request gives it, checked against the model
registry and completed: the stored config is what the indexer reads, so it
is complete and canonical; every refusal names its reason and field."""

from __future__ import annotations

import pytest

from kit.embedding_models import HASH_BOW, MINILM, ModelRegistry, ModelSpec, Pooling, Quantization
from kit.errors import InvalidArgument
from orchestrator.domain.config import DEFAULT_CHUNK_TOKENS, RequestedConfig, validate_config
from orchestrator.domain.fields import validate_name

REGISTRY = ModelRegistry()
FLOAT_ONLY = ModelSpec(
    name="test/float-only",
    triton_model="float_only",
    dimension=8,
    max_tokens=100,
    pooling=Pooling.MEAN,
    normalized=True,
    quantizations=(Quantization.FLOAT32,),
)


def refused(requested: RequestedConfig, registry: ModelRegistry = REGISTRY) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        validate_config(requested, registry)
    return caught.value


def test_defaults_fill_a_minimal_config_with_canonical_values() -> None:
    stored = validate_config(RequestedConfig("hash-bow-384"), REGISTRY)  # an alias
    assert stored == {
        "embedding_model": HASH_BOW.name,
        "dimension": 384,
        "quantization": "float32",
        "instruction": None,
        "chunk_size": DEFAULT_CHUNK_TOKENS,
        "chunk_overlap": 0,
    }


def test_given_values_are_kept() -> None:
    stored = validate_config(
        RequestedConfig(MINILM.name, 384, "int8", "passage: ", chunk_size=128, chunk_overlap=16),
        REGISTRY,
    )
    assert stored["quantization"] == "int8"
    assert stored["instruction"] == "passage: "
    assert (stored["chunk_size"], stored["chunk_overlap"]) == (128, 16)


def test_an_empty_instruction_is_kept_apart_from_none() -> None:
    stored = validate_config(RequestedConfig(MINILM.name, instruction=""), REGISTRY)
    assert stored["instruction"] == ""


def test_minilm_chunks_leave_room_for_the_two_special_tokens() -> None:
    assert MINILM.max_chunk_tokens == MINILM.max_tokens - 2 == 254
    assert validate_config(RequestedConfig(MINILM.name, chunk_size=254), REGISTRY)["chunk_size"]
    error = refused(RequestedConfig(MINILM.name, chunk_size=255))
    assert error.reason == "INVALID_CONFIG"
    assert error.metadata == {"field": "collection.config.chunk_size"}
    assert [v.field for v in error.field_violations] == ["collection.config.chunk_size"]


def test_the_default_chunk_size_is_capped_at_the_models_limit() -> None:
    registry = ModelRegistry([FLOAT_ONLY])
    assert validate_config(RequestedConfig(FLOAT_ONLY.name), registry)["chunk_size"] == 100


def test_unknown_model_is_an_invalid_argument_naming_the_model() -> None:
    error = refused(RequestedConfig("no/such-model"))
    assert error.reason == "UNKNOWN_MODEL"
    assert error.metadata == {"model": "no/such-model"}


def test_missing_model_is_a_required_field() -> None:
    error = refused(RequestedConfig("  "))
    assert error.reason == "INVALID_ARGUMENT"
    assert error.metadata == {"field": "collection.config.embedding_model"}


def test_dimension_must_be_zero_or_the_models() -> None:
    error = refused(RequestedConfig(MINILM.name, dimension=768))
    assert error.reason == "DIMENSION_MISMATCH"
    assert error.metadata == {"model": MINILM.name, "expected": "384", "actual": "768"}


def test_quantization_the_model_does_not_support_is_invalid_config() -> None:
    error = refused(
        RequestedConfig(FLOAT_ONLY.name, quantization="int8"), ModelRegistry([FLOAT_ONLY])
    )
    assert error.reason == "INVALID_CONFIG"
    assert error.metadata == {"field": "collection.config.quantization"}


def test_unknown_quantization_is_invalid_config() -> None:
    error = refused(RequestedConfig(MINILM.name, quantization="7"))
    assert error.reason == "INVALID_CONFIG"
    assert error.metadata == {"field": "collection.config.quantization"}


@pytest.mark.parametrize(
    ("size", "overlap", "fields"),
    [
        (100, 100, ["chunk_overlap"]),
        (100, 150, ["chunk_overlap"]),
        (100, -1, ["chunk_overlap"]),
        (-5, 0, ["chunk_size"]),
        (0, DEFAULT_CHUNK_TOKENS, ["chunk_overlap"]),  # against the default size
        (9000, 9000, ["chunk_size", "chunk_overlap"]),  # every problem at once
    ],
)
def test_chunking_must_satisfy_zero_le_overlap_lt_size_le_limit(
    size: int, overlap: int, fields: list[str]
) -> None:
    error = refused(RequestedConfig(HASH_BOW.name, chunk_size=size, chunk_overlap=overlap))
    assert error.reason == "INVALID_CONFIG"
    assert [v.field for v in error.field_violations] == [
        f"collection.config.{name}" for name in fields
    ]


def test_the_field_path_follows_the_caller() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_config(RequestedConfig(HASH_BOW.name, chunk_size=-1), REGISTRY, field="config")
    assert caught.value.metadata == {"field": "config.chunk_size"}


@pytest.mark.parametrize("name", ["docs", "Team docs (2024) — ünïcode", "x" * 128])
def test_names_of_one_to_128_printable_characters_are_accepted(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "   ", "x" * 129, "tab\there", "line\nbreak"])
def test_other_names_are_refused_with_the_field(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_name(name)
    assert caught.value.reason == "INVALID_ARGUMENT"
    assert caught.value.metadata == {"field": "collection.name"}
    assert caught.value.field_violations[0].field == "collection.name"
