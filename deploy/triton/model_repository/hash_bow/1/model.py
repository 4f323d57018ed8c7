"""Triton python backend model: feature-hashed bag of words.

The algorithm is ``kit.hash_embedding.hash_embed``: the ``services/`` folder
of vectorops must be on the stub's PYTHONPATH (the embedder's TritonHost sets
it; a container image must copy ``services/embedder`` in and set it too). The
dimension is the ``dimension`` parameter and must equal the output's dims.
Batching and errors: see ``embedder.adapters.triton_model``. ``TOKENS`` counts
words, this model's tokens.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from embedder.adapters import triton_model
from kit.hash_embedding import hash_embed, tokenize


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.dimension = int(params.get("dimension") or 384)
        declared = int(pb_utils.get_output_config_by_name(config, "EMBEDDING")["dims"][-1])
        if declared != self.dimension:
            raise ValueError(
                f"parameter dimension={self.dimension} but EMBEDDING dims are [{declared}]"
            )
        pb_utils.Logger.log_info(f"hash_bow loaded, dimension {self.dimension}")

    def _embed(self, texts: list) -> tuple:
        tokens = np.array([len(tokenize(text)) for text in texts], dtype=np.int32)
        return hash_embed(texts, self.dimension), tokens

    def execute(self, requests: list) -> list:
        return triton_model.execute(requests, self._embed)
