"""The model registry: what each embedding model is, so the rest of the system can
plan with it (dimension for a new collection or a reindex, max tokens for chunking,
instructions, quantizations) without loading it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from kit.errors import NotFound


class Pooling(StrEnum):
    MEAN = "mean"
    CLS = "cls"
    LAST_TOKEN = "last_token"
    MAX = "max"


class Quantization(StrEnum):
    """How a collection stores its vectors (the embedder always returns float32)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT8 = "int8"  # scalar quantization

    @property
    def bytes_per_value(self) -> int:
        return {Quantization.FLOAT32: 4, Quantization.FLOAT16: 2, Quantization.INT8: 1}[self]


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the name clients use, e.g. in a collection's config
    triton_model: str  # the model's name in the Triton model repository
    dimension: int
    max_tokens: int  # longer inputs are truncated by the model
    pooling: Pooling
    normalized: bool
    query_instruction: str = ""  # prefixed to queries unless a collection sets its own
    document_instruction: str = ""
    max_batch_size: int = 64  # the Triton model's max_batch_size
    quantizations: tuple[Quantization, ...] = tuple(Quantization)
    # Inputs longer than this are refused, not truncated: a chunk that size is a bug upstream.
    max_input_chars: int = 50_000
    aliases: tuple[str, ...] = field(default=())
    # Positions of max_tokens the tokenizer fills itself (BERT's [CLS] and [SEP]),
    # so not available to a chunk's text.
    special_tokens: int = 0

    @property
    def max_chunk_tokens(self) -> int:
        """The largest chunk, in tokens of text, the model reads without truncating."""
        return self.max_tokens - self.special_tokens

    def instruction_for(self, is_query: bool, override: str | None) -> str:
        if override is not None:
            return override
        return self.query_instruction if is_query else self.document_instruction

    def vector_bytes(self, quantization: Quantization) -> int:
        return self.dimension * quantization.bytes_per_value


MINILM = ModelSpec(
    name="sentence-transformers/all-MiniLM-L6-v2",
    aliases=("all-MiniLM-L6-v2",),
    triton_model="all_minilm_l6_v2",
    dimension=384,
    max_tokens=256,
    special_tokens=2,
    pooling=Pooling.MEAN,
    normalized=True,
    max_batch_size=64,
)

HASH_BOW = ModelSpec(
    name="vectorops/hash-bow-384",
    aliases=("hash-bow-384",),
    triton_model="hash_bow",
    dimension=384,
    # Words, not model tokens: the hashing model has no vocabulary and no limit of its own.
    max_tokens=8192,
    pooling=Pooling.MEAN,
    normalized=True,
    max_batch_size=256,
)

# The same hashing at another dimension: what a reindex that changes the
# dimension is tested with.
HASH_BOW_256 = replace(
    HASH_BOW,
    name="vectorops/hash-bow-256",
    aliases=("hash-bow-256",),
    triton_model="hash_bow_256",
    dimension=256,
)

DEFAULT_MODELS = (MINILM, HASH_BOW, HASH_BOW_256)


class ModelRegistry:
    """Models by name or alias. Unknown names are NOT_FOUND with reason UNKNOWN_MODEL."""

    def __init__(self, models: Iterable[ModelSpec] = DEFAULT_MODELS) -> None:
        self._models: list[ModelSpec] = []
        self._by_name: dict[str, ModelSpec] = {}
        for model in models:
            self.register(model)

    def register(self, model: ModelSpec) -> None:
        for name in (model.name, *model.aliases):
            if name in self._by_name:
                raise ValueError(f"model name {name!r} is registered twice")
            self._by_name[name] = model
        self._models.append(model)

    def get(self, name: str) -> ModelSpec:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(m.name for m in self._models)
            raise NotFound(
                f"unknown model {name!r}; served: {known}",
                reason="UNKNOWN_MODEL",
                metadata={"model": name},
            ) from None

    def only(self, names: Iterable[str]) -> ModelRegistry:
        """The registry restricted to ``names`` (what one embedder deployment serves)."""
        return ModelRegistry(dict.fromkeys(self.get(name) for name in names))

    def __iter__(self):  # noqa: ANN204
        return iter(self._models)
