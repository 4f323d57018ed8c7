"""The model registry: names and aliases, unknown models, what each model implies."""

import pytest

from kit.embedding_models import HASH_BOW, MINILM, ModelRegistry, Quantization
from kit.errors import Code, NotFound


def test_lookup_by_name_or_alias() -> None:
    registry = ModelRegistry()
    assert registry.get("sentence-transformers/all-MiniLM-L6-v2") is MINILM
    assert registry.get("all-MiniLM-L6-v2") is MINILM
    assert registry.get("hash-bow-384") is HASH_BOW
    assert MINILM.dimension == 384 and MINILM.max_tokens == 256


def test_unknown_model_is_not_found_with_reason() -> None:
    with pytest.raises(NotFound) as caught:
        ModelRegistry().get("gpt-embedding-9000")
    assert caught.value.code is Code.NOT_FOUND
    assert caught.value.reason == "UNKNOWN_MODEL"
    assert caught.value.metadata == {"model": "gpt-embedding-9000"}


def test_restricting_to_served_models() -> None:
    served = ModelRegistry().only(["hash-bow-384"])
    assert list(served) == [HASH_BOW]
    with pytest.raises(NotFound):
        served.get(MINILM.name)
    with pytest.raises(NotFound):
        ModelRegistry().only(["nope"])


def test_a_name_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        ModelRegistry([MINILM, MINILM])


@pytest.mark.parametrize(
    ("quantization", "expected"),
    [(Quantization.FLOAT32, 1536), (Quantization.FLOAT16, 768), (Quantization.INT8, 384)],
)
def test_vector_size_per_quantization(quantization: Quantization, expected: int) -> None:
    assert MINILM.vector_bytes(quantization) == expected


def test_instruction_override_and_defaults() -> None:
    assert MINILM.instruction_for(is_query=True, override=None) == ""
    assert MINILM.instruction_for(is_query=True, override="query: ") == "query: "
