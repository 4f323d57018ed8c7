"""The indexer's copy of a collection config, from the ``CollectionConfig``
message that commands (their collection snapshot and target config) and the
orchestrator's answers carry: the keys the ingest, search and reindex read."""

from __future__ import annotations

from typing import Any

from vectorops.common.v1 import config_pb2

_QUANTIZATIONS = {
    config_pb2.QUANTIZATION_UNSPECIFIED: "float32",
    config_pb2.QUANTIZATION_FLOAT32: "float32",
    config_pb2.QUANTIZATION_FLOAT16: "float16",
    config_pb2.QUANTIZATION_INT8: "int8",
}


def config_of(config: config_pb2.CollectionConfig) -> dict[str, Any]:
    """The indexer's copy of a collection config (the keys the ingest reads)."""
    copy: dict[str, Any] = {
        "embedding_model": config.embedding_model,
        "dimension": config.dimension,
        "quantization": _QUANTIZATIONS.get(config.quantization, "float32"),
        "chunk_size": config.chunk_size,
        "chunk_overlap": config.chunk_overlap,
    }
    if config.HasField("instruction"):
        copy["instruction"] = config.instruction
    return copy
